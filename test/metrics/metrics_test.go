package metrics_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/driver"
	"github.com/seed3e7d50b2/hostvol/pkg/metrics"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const mib = int64(1) << 20

// serveHTTP serves m's endpoint for drv on 127.0.0.1:0, as
// --http-endpoint does, and returns its base URL.
func serveHTTP(t *testing.T, m *metrics.Metrics, drv *driver.Driver) string {
	t.Helper()
	srv, err := metrics.Listen("127.0.0.1:0", m.Handler(drv))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		// Not t.Context(): it is canceled before cleanups run, and
		// Shutdown with a canceled context fails whenever a connection
		// is not idle yet.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, srv.Shutdown(ctx))
		require.NoError(t, <-done)
	})
	return "http://" + srv.Addr()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// sample returns the value of the series written exactly as series (name
// and labels) in a text-format scrape.
func sample(t *testing.T, scrape, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(scrape))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, series)
			return f
		}
	}
	t.Fatalf("no series %s in the scrape", series)
	return 0
}

func createReq(name string, params map[string]string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 32 * mib},
		Parameters:         params,
		VolumeCapabilities: []*csi.VolumeCapability{testutil.DirKind.Capability()},
	}
}

func TestScrapeAfterCalls(t *testing.T) {
	m, err := metrics.New(metrics.Config{Version: "v9.9.9-e2e"})
	require.NoError(t, err)
	env := testutil.StartDriver(t, testutil.Options{Interceptors: []grpc.UnaryServerInterceptor{m.UnaryServerInterceptor()}})
	require.NoError(t, m.RegisterStorage(env.Manager.Controller))
	base := serveHTTP(t, m, env.Driver)
	ctrl := env.Client
	ctx := t.Context()

	keep, err := ctrl.CreateVolume(ctx, createReq("keep", nil))
	require.NoError(t, err)
	_, err = ctrl.CreateVolume(ctx, createReq("loop", map[string]string{"type": "loop"}))
	require.NoError(t, err)
	gone, err := ctrl.CreateVolume(ctx, createReq("gone", nil))
	require.NoError(t, err)
	_, err = ctrl.CreateVolume(ctx, createReq("", nil))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	_, err = ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: gone.GetVolume().GetVolumeId()})
	require.NoError(t, err)

	// The exact counters of the calls above, and no others.
	require.NoError(t, promtest.ScrapeAndCompare(base+"/metrics", strings.NewReader(`
# HELP hostvol_operations_total CSI calls served, by gRPC method and final gRPC status code.
# TYPE hostvol_operations_total counter
hostvol_operations_total{code="InvalidArgument",method="/csi.v1.Controller/CreateVolume"} 1
hostvol_operations_total{code="OK",method="/csi.v1.Controller/CreateVolume"} 3
hostvol_operations_total{code="OK",method="/csi.v1.Controller/DeleteVolume"} 1
# HELP hostvol_volumes Ready volumes in this node's node-local pools, by kind (dir, loop, block).
# TYPE hostvol_volumes gauge
hostvol_volumes{kind="block"} 0
hostvol_volumes{kind="dir"} 1
hostvol_volumes{kind="loop"} 1
# HELP hostvol_build_info Always 1; the version label is the hostvol build.
# TYPE hostvol_build_info gauge
hostvol_build_info{version="v9.9.9-e2e"} 1
`), "hostvol_operations_total", "hostvol_volumes", "hostvol_build_info"))

	code, scrape := get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 4.0, sample(t, scrape, `hostvol_operation_duration_seconds_count{method="/csi.v1.Controller/CreateVolume"}`))
	require.Equal(t, 1.0, sample(t, scrape, `hostvol_operation_duration_seconds_count{method="/csi.v1.Controller/DeleteVolume"}`))
	require.Equal(t, 4.0, sample(t, scrape, `hostvol_operation_duration_seconds_bucket{method="/csi.v1.Controller/CreateVolume",le="+Inf"}`))
	require.Positive(t, sample(t, scrape, `hostvol_operation_duration_seconds_sum{method="/csi.v1.Controller/CreateVolume"}`))

	capacity := sample(t, scrape, `hostvol_pool_capacity_bytes{pool="default"}`)
	free := sample(t, scrape, `hostvol_pool_free_bytes{pool="default"}`)
	require.Positive(t, capacity)
	require.Positive(t, free)
	require.LessOrEqual(t, free, capacity)
	// "keep" (a directory) is promised whole, the loop image by what it
	// has not yet allocated; "gone" no longer.
	promised := sample(t, scrape, `hostvol_pool_promised_bytes{pool="default"}`)
	require.GreaterOrEqual(t, promised, float64(keep.GetVolume().GetCapacityBytes()))
	require.LessOrEqual(t, promised, float64(2*32*mib))
	require.Contains(t, scrape, "\ngo_goroutines ")
	require.Contains(t, scrape, "\nprocess_resident_memory_bytes ")

	code, body := get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", body)
}

// Before Load, /healthz answers 503 from the driver's Probe and the calls
// the driver refuses are counted with their code; after Load, 200.
func TestHealthzFollowsProbe(t *testing.T) {
	m, err := metrics.New(metrics.Config{Version: "e2e"})
	require.NoError(t, err)
	env := testutil.StartDriver(t, testutil.Options{Unloaded: true, Interceptors: []grpc.UnaryServerInterceptor{m.UnaryServerInterceptor()}})
	require.NoError(t, m.RegisterStorage(env.Manager.Controller))
	base := serveHTTP(t, m, env.Driver)

	code, body := get(t, base+"/healthz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "not ready")
	_, err = env.Client.CreateVolume(t.Context(), createReq("early", nil))
	require.Equal(t, codes.Unavailable, status.Code(err))
	_, scrape := get(t, base+"/metrics")
	require.Equal(t, 1.0, sample(t, scrape, `hostvol_operations_total{code="Unavailable",method="/csi.v1.Controller/CreateVolume"}`))

	env.Load(t)
	code, body = get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", body)
}
