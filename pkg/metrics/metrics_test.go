package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// fakeStorage is a Storage whose figures a test sets.
type fakeStorage struct {
	pools  []volume.PoolFigures
	counts map[volume.Kind]int
}

func (f *fakeStorage) PoolFigures() []volume.PoolFigures { return f.pools }
func (f *fakeStorage) VolumeCounts() map[volume.Kind]int { return f.counts }

// fakeProber answers Probe as a test says.
type fakeProber struct {
	ready *wrapperspb.BoolValue
	err   error
}

func (p *fakeProber) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	if p.err != nil {
		return nil, p.err
	}
	return &csi.ProbeResponse{Ready: p.ready}, nil
}

func newMetrics(t *testing.T, s Storage) *Metrics {
	t.Helper()
	m, err := New(Config{Version: "v1.2.3"})
	require.NoError(t, err)
	if s != nil {
		require.NoError(t, m.RegisterStorage(s))
	}
	return m
}

func TestInterceptorRecordsFinalCodes(t *testing.T) {
	m := newMetrics(t, nil)
	call := m.UnaryServerInterceptor()
	info := func(method string) *grpc.UnaryServerInfo { return &grpc.UnaryServerInfo{FullMethod: method} }
	ok := func(context.Context, any) (any, error) { return "resp", nil }
	invalid := func(context.Context, any) (any, error) {
		return nil, status.Error(codes.InvalidArgument, "name missing")
	}
	plain := func(context.Context, any) (any, error) { return nil, errors.New("not a status") }
	boom := func(context.Context, any) (any, error) { panic("bug") }

	resp, err := call(t.Context(), nil, info("/csi.v1.Controller/CreateVolume"), ok)
	require.NoError(t, err)
	require.Equal(t, "resp", resp, "the handler's answer passes through")
	_, err = call(t.Context(), nil, info("/csi.v1.Controller/CreateVolume"), ok)
	require.NoError(t, err)
	_, err = call(t.Context(), nil, info("/csi.v1.Controller/CreateVolume"), invalid)
	require.Equal(t, codes.InvalidArgument, status.Code(err), "the handler's error passes through")
	_, _ = call(t.Context(), nil, info("/csi.v1.Node/NodeGetInfo"), plain)
	require.PanicsWithValue(t, "bug", func() {
		_, _ = call(t.Context(), nil, info("/csi.v1.Node/NodePublishVolume"), boom)
	}, "a panic is recorded and passed on to whoever recovers it")

	want := `
# HELP hostvol_operations_total CSI calls served, by gRPC method and final gRPC status code.
# TYPE hostvol_operations_total counter
hostvol_operations_total{code="InvalidArgument",method="/csi.v1.Controller/CreateVolume"} 1
hostvol_operations_total{code="Internal",method="/csi.v1.Node/NodePublishVolume"} 1
hostvol_operations_total{code="OK",method="/csi.v1.Controller/CreateVolume"} 2
hostvol_operations_total{code="Unknown",method="/csi.v1.Node/NodeGetInfo"} 1
`
	require.NoError(t, promtest.GatherAndCompare(m.Registry(), strings.NewReader(want), "hostvol_operations_total"))
	n, err := promtest.GatherAndCount(m.Registry(), "hostvol_operation_duration_seconds")
	require.NoError(t, err)
	require.Equal(t, 3, n, "one histogram per method")
	require.Equal(t, uint64(3), histogramCount(t, m, "/csi.v1.Controller/CreateVolume"), "failed calls are timed too")
	require.Equal(t, uint64(1), histogramCount(t, m, "/csi.v1.Node/NodePublishVolume"), "panicking calls are timed too")
}

// histogramCount is the number of calls of method the duration histogram holds.
func histogramCount(t *testing.T, m *Metrics, method string) uint64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "hostvol_operation_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			if mt.GetLabel()[0].GetValue() == method {
				return mt.GetHistogram().GetSampleCount()
			}
		}
	}
	t.Fatalf("no histogram for %s", method)
	return 0
}

func TestBucketsSpanHalfMillisecondToOneMinute(t *testing.T) {
	require.Equal(t, 0.0005, operationBuckets[0])
	require.Equal(t, 60.0, operationBuckets[len(operationBuckets)-1])
	require.IsIncreasing(t, operationBuckets)
}

func TestStorageCollector(t *testing.T) {
	s := &fakeStorage{
		pools: []volume.PoolFigures{
			{Name: "default", CapacityBytes: 100 << 30, FreeBytes: 60 << 30, PromisedBytes: 10 << 30},
			{Name: "fast", CapacityBytes: 1 << 30, FreeBytes: 1 << 29},
		},
		counts: map[volume.Kind]int{volume.KindDir: 3, volume.KindLoop: 1},
	}
	m := newMetrics(t, s)
	want := `
# HELP hostvol_pool_capacity_bytes Size of the pool's filesystem.
# TYPE hostvol_pool_capacity_bytes gauge
hostvol_pool_capacity_bytes{pool="default"} 1.073741824e+11
hostvol_pool_capacity_bytes{pool="fast"} 1.073741824e+09
# HELP hostvol_pool_free_bytes Bytes of the pool's filesystem available to hostvol (statfs f_bavail), promised or not.
# TYPE hostvol_pool_free_bytes gauge
hostvol_pool_free_bytes{pool="default"} 6.442450944e+10
hostvol_pool_free_bytes{pool="fast"} 5.36870912e+08
# HELP hostvol_pool_promised_bytes Bytes the pool's volumes may still grow into: what hostvol keeps free for them (shared pools: the volumes this node knows of).
# TYPE hostvol_pool_promised_bytes gauge
hostvol_pool_promised_bytes{pool="default"} 1.073741824e+10
hostvol_pool_promised_bytes{pool="fast"} 0
# HELP hostvol_volumes Ready volumes in this node's node-local pools, by kind (dir, loop, block).
# TYPE hostvol_volumes gauge
hostvol_volumes{kind="block"} 0
hostvol_volumes{kind="dir"} 3
hostvol_volumes{kind="loop"} 1
`
	require.NoError(t, promtest.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"hostvol_pool_capacity_bytes", "hostvol_pool_free_bytes", "hostvol_pool_promised_bytes", "hostvol_volumes"))

	// Read at scrape time: a change shows in the next scrape.
	s.counts = map[volume.Kind]int{volume.KindBlock: 2}
	require.NoError(t, promtest.GatherAndCompare(m.Registry(), strings.NewReader(`
# HELP hostvol_volumes Ready volumes in this node's node-local pools, by kind (dir, loop, block).
# TYPE hostvol_volumes gauge
hostvol_volumes{kind="block"} 2
hostvol_volumes{kind="dir"} 0
hostvol_volumes{kind="loop"} 0
`), "hostvol_volumes"))
}

func TestLint(t *testing.T) {
	m := newMetrics(t, &fakeStorage{pools: []volume.PoolFigures{{Name: "default", CapacityBytes: 1, FreeBytes: 1}}})
	m.observe("/csi.v1.Identity/Probe", codes.OK, 0)
	problems, err := promtest.GatherAndLint(m.Registry(), "hostvol_operations_total", "hostvol_operation_duration_seconds",
		"hostvol_pool_capacity_bytes", "hostvol_pool_free_bytes", "hostvol_pool_promised_bytes", "hostvol_volumes", "hostvol_build_info")
	require.NoError(t, err)
	require.Empty(t, problems)
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// probedOnce returns metrics over these pools and one directory volume,
// after one Probe through the interceptor, and their handler (ready).
func probedOnce(t *testing.T, pools ...volume.PoolFigures) (*Metrics, http.Handler) {
	t.Helper()
	m := newMetrics(t, &fakeStorage{pools: pools, counts: map[volume.Kind]int{volume.KindDir: 1}})
	m.observe("/csi.v1.Identity/Probe", codes.OK, 0)
	return m, m.Handler(&fakeProber{ready: wrapperspb.Bool(true)})
}

func TestMetricsHandler(t *testing.T) {
	_, h := probedOnce(t, volume.PoolFigures{Name: "default", CapacityBytes: 1 << 30, FreeBytes: 1 << 29}, volume.PoolFigures{Name: "gone", PromisedBytes: 5, Err: syscall.ENOENT})

	code, body := get(t, h, "/metrics")
	require.Equal(t, http.StatusOK, code)
	for _, line := range []string{
		`hostvol_build_info{version="v1.2.3"} 1`,
		`hostvol_operations_total{code="OK",method="/csi.v1.Identity/Probe"} 1`,
		`hostvol_operation_duration_seconds_bucket{method="/csi.v1.Identity/Probe",le="0.0005"} 1`,
		`hostvol_pool_capacity_bytes{pool="default"} 1.073741824e+09`,
		`hostvol_volumes{kind="dir"} 1`,
		// A pool whose statfs fails hides its own filesystem figures only.
		`hostvol_pool_promised_bytes{pool="gone"} 5`,
	} {
		require.Contains(t, body, "\n"+line+"\n")
	}
	// Runtime and process collectors are on the driver's registry.
	require.Contains(t, body, "\ngo_goroutines ")
	require.Contains(t, body, "\nprocess_start_time_seconds ")
	require.NotContains(t, body, `hostvol_pool_capacity_bytes{pool="gone"}`)
	require.NotContains(t, body, `hostvol_pool_free_bytes{pool="gone"}`)

	_, body = get(t, h, "/metrics")
	require.Contains(t, body, "\n"+`promhttp_metric_handler_errors_total{cause="gathering"} 1`+"\n", "the failed pool is counted")

	code, _ = get(t, h, "/nothing")
	require.Equal(t, http.StatusNotFound, code)
}

func TestHealthz(t *testing.T) {
	cases := []struct {
		name     string
		prober   *fakeProber
		wantCode int
		wantBody string
	}{
		{name: "ready", prober: &fakeProber{ready: wrapperspb.Bool(true)}, wantCode: http.StatusOK, wantBody: "ok"},
		{name: "ready_unset_means_ready", prober: &fakeProber{}, wantCode: http.StatusOK, wantBody: "ok"},
		{name: "not_ready", prober: &fakeProber{ready: wrapperspb.Bool(false)}, wantCode: http.StatusServiceUnavailable, wantBody: "not ready: Probe answered ready=false"},
		{name: "probe_error", prober: &fakeProber{err: status.Error(codes.FailedPrecondition, "pool default is gone")}, wantCode: http.StatusServiceUnavailable, wantBody: "pool default is gone"},
		{name: "state_dir_read_only", prober: &fakeProber{err: status.Error(codes.FailedPrecondition, "state directory /s/volumes is on a read-only filesystem")},
			wantCode: http.StatusServiceUnavailable, wantBody: "not ready: Probe answered FailedPrecondition: state directory /s/volumes is on a read-only filesystem\n"},
		{name: "plain_error", prober: &fakeProber{err: errors.New("boom")}, wantCode: http.StatusServiceUnavailable, wantBody: "not ready: Probe answered Unknown: boom\n"},
	}
	m := newMetrics(t, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, m.Handler(tc.prober), "/healthz")
			require.Equal(t, tc.wantCode, code)
			require.Contains(t, body, tc.wantBody)
		})
	}
}

func TestServer(t *testing.T) {
	m := newMetrics(t, nil)
	srv, err := Listen("127.0.0.1:0", m.Handler(&fakeProber{}))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()

	resp, err := http.Get("http://" + srv.Addr() + "/healthz")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "ok", string(body))

	// The address is taken now: a second server must fail to start.
	_, err = Listen(srv.Addr(), http.NotFoundHandler())
	require.ErrorIs(t, err, syscall.EADDRINUSE)

	require.NoError(t, srv.Shutdown(t.Context()))
	require.NoError(t, <-done, "Serve returns nil after Shutdown")
}

func TestShutdownWithoutServe(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", http.NotFoundHandler())
	require.NoError(t, err)
	addr := srv.Addr()
	require.NoError(t, srv.Shutdown(t.Context()))
	again, err := Listen(addr, http.NotFoundHandler())
	require.NoError(t, err, "the address is free again")
	require.NoError(t, again.Shutdown(t.Context()))
}

// The server closes connections that stay idle: kept alive after a request
// (IdleTimeout) or silent from the start (ReadHeaderTimeout). Short
// timeouts here; the deadline on the client only bounds the test, far
// beyond them, so a slow machine cannot make it flake.
func TestServerClosesIdleConnections(t *testing.T) {
	short := timeouts{ReadHeader: 200 * time.Millisecond, Read: 200 * time.Millisecond, Write: 5 * time.Second, Idle: 200 * time.Millisecond}
	cases := []struct {
		name    string
		request bool
	}{
		{name: "idle_after_a_request", request: true},
		{name: "silent_from_the_start"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMetrics(t, nil)
			srv, err := listen("127.0.0.1:0", m.Handler(&fakeProber{}), short)
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() { done <- srv.Serve() }()
			t.Cleanup(func() {
				require.NoError(t, srv.Shutdown(context.Background()))
				require.NoError(t, <-done)
			})

			conn, err := net.Dial("tcp", srv.Addr())
			require.NoError(t, err)
			defer conn.Close()
			br := bufio.NewReader(conn)
			if tc.request {
				_, err := fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: hostvol\r\n\r\n")
				require.NoError(t, err)
				resp, err := http.ReadResponse(br, nil)
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				require.Equal(t, "ok", string(body))
				require.False(t, resp.Close, "HTTP/1.1 keeps the connection alive")
			}
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(time.Minute)))
			_, err = io.Copy(io.Discard, br)
			require.NoError(t, err, "the server closes the connection (EOF), the client's deadline does not fire")
		})
	}
}

// The defaults let a slow scrape finish and keep a connection across
// scrapes at Prometheus' default interval, and none is unbounded.
func TestDefaultTimeouts(t *testing.T) {
	d := defaultTimeouts
	for _, v := range []time.Duration{d.ReadHeader, d.Read, d.Write, d.Idle} {
		require.Positive(t, v)
	}
	require.GreaterOrEqual(t, d.Write, 10*time.Second, "Prometheus' default scrape timeout")
	require.Greater(t, d.Write, probeTimeout, "/healthz may take probeTimeout")
	require.Greater(t, d.Idle, time.Minute, "Prometheus' default scrape interval")
}
