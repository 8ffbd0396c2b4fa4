package health

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/metrics"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestStateDirReadOnly makes the state directory read-only for real, as a
// read-only bind mount and as its own filesystem (a small tmpfs) remounted
// read-only: Probe answers FAILED_PRECONDITION with the reason, /healthz
// 503 with it, NodeGetStorageHealth STORAGE_DEGRADED StateDirReadOnly; and
// all is well again once it is writable.
func TestStateDirReadOnly(t *testing.T) {
	cases := []struct {
		name string
		// prepare runs before the driver starts; readOnly and writable
		// switch the state directory.
		prepare            func(t *testing.T, state string)
		readOnly, writable func(t *testing.T, state string)
	}{
		{
			name: "read_only_bind_mount",
			readOnly: func(t *testing.T, state string) {
				run(t, "mount", "--bind", state, state)
				run(t, "mount", "-o", "remount,ro,bind", state)
			},
			writable: func(t *testing.T, state string) { run(t, "umount", state) },
		},
		{
			name: "tmpfs_remounted_read_only",
			prepare: func(t *testing.T, state string) {
				require.NoError(t, os.MkdirAll(state, 0o700))
				require.NoError(t, unix.Mount("tmpfs", state, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4m,mode=0700"))
			},
			readOnly: func(t *testing.T, state string) {
				require.NoError(t, unix.Mount("", state, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""))
			},
			writable: func(t *testing.T, state string) {
				require.NoError(t, unix.Mount("", state, "", unix.MS_REMOUNT, "size=4m"))
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := setup(t) // its clean-up unmounts what is left under dir
			state := filepath.Join(dir, "state")
			if tc.prepare != nil {
				tc.prepare(t, state)
			}
			n := testutil.NewNode(t, dir, "")
			require.Equal(t, state, n.StateDir)
			m, err := metrics.New(metrics.Config{Version: "test"})
			require.NoError(t, err)
			healthz := func() (int, string) {
				rec := httptest.NewRecorder()
				m.Handler(n.Env.Driver).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
				return rec.Code, rec.Body.String()
			}
			requireReady := func() {
				t.Helper()
				resp, err := n.Client.Probe(testutil.Ctx(t), &csi.ProbeRequest{})
				require.NoError(t, err)
				require.True(t, resp.GetReady().GetValue())
				code, body := healthz()
				require.Equal(t, http.StatusOK, code, body)
				require.Empty(t, storage(t, n.Client))
			}
			requireReady()

			tc.readOnly(t, state)
			_, err = n.Client.Probe(testutil.Ctx(t), &csi.ProbeRequest{})
			require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
			require.Contains(t, status.Convert(err).Message(), state)
			require.Contains(t, status.Convert(err).Message(), "read-only")
			code, body := healthz()
			require.Equal(t, http.StatusServiceUnavailable, code)
			require.Contains(t, body, "read-only")
			require.Contains(t, body, state)
			require.Equal(t, []string{"STORAGE_DEGRADED/" + volume.ReasonStateDirReadOnly}, storage(t, n.Client))
			// And it is true: nothing can be recorded.
			_, err = n.Client.CreateVolume(testutil.Ctx(t), &csi.CreateVolumeRequest{
				Name:               "refused",
				CapacityRange:      &csi.CapacityRange{RequiredBytes: mib},
				VolumeCapabilities: []*csi.VolumeCapability{dirKind.Capability()},
				Parameters:         dirKind.Params,
			})
			require.Error(t, err)

			tc.writable(t, state)
			requireReady()
		})
	}
}
