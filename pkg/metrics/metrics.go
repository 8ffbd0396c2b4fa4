// Package metrics is hostvol's optional HTTP endpoint (--http-endpoint):
// Prometheus metrics on /metrics and the driver's readiness on /healthz.
//
// Every metric lives on a registry that one Metrics value owns; nothing is
// registered on client_golang's default registry, so two drivers in one
// process (tests) never share or collide on counters. Pool and volume
// figures are read when Prometheus scrapes (a custom Collector), not kept
// up to date on every change: one statfs per pool and an O(1) count per
// scrape, and no figure can go stale between scrapes.
package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// operationBuckets are the bounds, in seconds, of the operation duration
// histogram: from 0.5 ms (a Probe, a cached lookup) to 60 s (mkfs.xfs of a
// large image on a slow disk).
var operationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Storage is what the pool and volume metrics are read from at scrape
// time; *volume.Controller implements it.
type Storage interface {
	PoolFigures() []volume.PoolFigures
	VolumeCounts() map[volume.Kind]int
}

// Config is what Metrics are built from.
type Config struct {
	// Version is reported as hostvol_build_info{version}.
	Version string
}

// Metrics owns hostvol's registry and the collectors on it.
type Metrics struct {
	reg        *prometheus.Registry
	operations *prometheus.CounterVec
	durations  *prometheus.HistogramVec
}

// New builds a registry with the operation and build metrics and the Go
// runtime and process collectors. RegisterStorage adds the pool and volume
// metrics: the interceptor is needed to build the driver, and the storage
// may come later.
func New(cfg Config) (*Metrics, error) {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hostvol_operations_total",
			Help: "CSI calls served, by gRPC method and final gRPC status code.",
		}, []string{"method", "code"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hostvol_operation_duration_seconds",
			Help:    "Time spent serving CSI calls, by gRPC method, failed calls included.",
			Buckets: operationBuckets,
		}, []string{"method"}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "hostvol_build_info",
		Help:        "Always 1; the version label is the hostvol build.",
		ConstLabels: prometheus.Labels{"version": cfg.Version},
	})
	buildInfo.Set(1)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.operations,
		m.durations,
		buildInfo,
	} {
		if err := m.reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// RegisterStorage adds the per-pool and per-kind metrics, read from s at
// every scrape.
func (m *Metrics) RegisterStorage(s Storage) error {
	if s == nil {
		return errors.New("metrics: nil storage")
	}
	return m.reg.Register(newStorageCollector(s))
}

// Registry is the registry /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// UnaryServerInterceptor counts and times every call. Chain it outside the
// driver's own interceptor, so it records the final gRPC code: after the
// driver mapped backend errors and turned a panic into INTERNAL. A panic
// that still reaches it is recorded as INTERNAL and passed on.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		panicked := true
		defer func() {
			code := status.Code(err)
			if panicked {
				code = codes.Internal
			}
			m.observe(info.FullMethod, code, time.Since(start))
		}()
		resp, err = handler(ctx, req)
		panicked = false
		return resp, err
	}
}

func (m *Metrics) observe(method string, code codes.Code, d time.Duration) {
	m.operations.WithLabelValues(method, code.String()).Inc()
	m.durations.WithLabelValues(method).Observe(d.Seconds())
}
