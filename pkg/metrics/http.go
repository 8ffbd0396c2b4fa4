package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// Prober answers CSI's Probe; the driver implements it.
type Prober interface {
	Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error)
}

// probeTimeout bounds one /healthz answer: the kubelet's probe times out
// on its own, and a Probe stuck longer is as good as a failed one.
const probeTimeout = 5 * time.Second

// Handler serves /metrics from the registry and /healthz from p.
func (m *Metrics) Handler(p Prober) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// Registry: count scrape errors in promhttp_metric_handler_errors_total.
		Registry: m.reg,
		// A pool whose statfs fails must not hide every other metric.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      klog.NewStandardLogger("ERROR"),
	})))
	mux.Handle("GET /healthz", healthz(p))
	return mux
}

// healthz answers 200 "ok" when the driver's own Probe says ready, 503 with
// the reason otherwise. The CSI spec reads an unset ready field as ready.
func healthz(p Prober) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		resp, err := p.Probe(ctx, &csi.ProbeRequest{})
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		switch {
		case err != nil:
			// The driver says why in the status (FAILED_PRECONDITION:
			// its state directory cannot be written).
			st := status.Convert(err)
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: Probe answered %s: %s\n", st.Code(), st.Message())
		case resp.GetReady() != nil && !resp.GetReady().GetValue():
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: Probe answered ready=false (the driver is still loading its volume records)")
		default:
			fmt.Fprint(w, "ok")
		}
	}
}

// Server is the HTTP server behind --http-endpoint.
type Server struct {
	srv *http.Server
	l   net.Listener
}

// timeouts bound how long the server gives a client (see net/http.Server).
type timeouts struct {
	// ReadHeader is for a request's headers, Read for the whole request
	// (GETs: no body), Write from the end of the headers to the end of the
	// answer, Idle between requests on a kept-alive connection.
	ReadHeader, Read, Write, Idle time.Duration
}

// defaultTimeouts are --http-endpoint's. Write leaves a slow /metrics
// scrape (a slow client, a statfs of a hung shared pool) three times
// Prometheus' default 10 s scrape timeout, and /healthz its 5 s probe
// bound; Idle keeps a connection across scrapes at the default 1 min
// interval and closes it after that, so idle clients cannot hold
// connections (and file descriptors) forever.
var defaultTimeouts = timeouts{
	ReadHeader: 10 * time.Second,
	Read:       10 * time.Second,
	Write:      30 * time.Second,
	Idle:       90 * time.Second,
}

// Listen opens addr (host:port) for h with defaultTimeouts. Call it before
// serving CSI, so an address that cannot be listened on stops start-up.
func Listen(addr string, h http.Handler) (*Server, error) {
	return listen(addr, h, defaultTimeouts)
}

// listen is Listen with other timeouts (tests use short ones).
func listen(addr string, h http.Handler, t timeouts) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Server{l: l, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		ErrorLog:          klog.NewStandardLogger("ERROR"),
	}}, nil
}

// Addr is the address the server listens on (with the port chosen, if
// addr asked for port 0).
func (s *Server) Addr() string { return s.l.Addr().String() }

// Serve serves until Shutdown; it then returns nil.
func (s *Server) Serve() error {
	klog.InfoS("Serving metrics and health", "address", s.Addr())
	if err := s.srv.Serve(s.l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http endpoint %s: %w", s.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting connections and waits, until ctx ends, for
// answers in progress. It also closes the listener if Serve never ran.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if cerr := s.l.Close(); err == nil && cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	return err
}
