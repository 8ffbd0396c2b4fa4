package driver

// Internal tests of the error boundary: codeFor, toStatus and the
// interceptor (panic recovery, the not-yet-loaded gate, error mapping).

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

func TestCodeFor(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want codes.Code
	}{
		{name: "volume_not_found", err: volume.ErrNotFound, want: codes.NotFound},
		{name: "invalid", err: volume.ErrInvalid, want: codes.InvalidArgument},
		{name: "already_exists", err: volume.ErrAlreadyExists, want: codes.AlreadyExists},
		{name: "in_use", err: volume.ErrInUse, want: codes.FailedPrecondition},
		{name: "not_allowed", err: volume.ErrNotAllowed, want: codes.FailedPrecondition},
		{name: "pool_unavailable", err: volume.ErrPoolUnavailable, want: codes.FailedPrecondition},
		{name: "other_node", err: volume.ErrOtherNode, want: codes.FailedPrecondition},
		{name: "no_space", err: volume.ErrNoSpace, want: codes.ResourceExhausted},
		{name: "corrupt_record", err: volume.ErrCorrupt, want: codes.DataLoss},
		{name: "busy", err: volume.ErrBusy, want: codes.Aborted},
		{name: "context_canceled", err: context.Canceled, want: codes.Canceled},
		{name: "deadline_exceeded", err: context.DeadlineExceeded, want: codes.DeadlineExceeded},
		{name: "permission", err: os.ErrPermission, want: codes.PermissionDenied},
		{name: "eacces_path_error", err: &fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, want: codes.PermissionDenied},
		{name: "eperm", err: syscall.EPERM, want: codes.PermissionDenied},
		{name: "unknown", err: errors.New("boom"), want: codes.Internal},
		{name: "io_error", err: &fs.PathError{Op: "write", Path: "/x", Err: syscall.EIO}, want: codes.Internal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, codeFor(tc.err))
			wrapped := fmt.Errorf("volume hv-x: step: %w", tc.err)
			require.Equal(t, tc.want, codeFor(wrapped), "wrapped")
			require.Equal(t, tc.want, codeFor(fmt.Errorf("outer: %w", wrapped)), "wrapped twice")
			require.Equal(t, tc.want, status.Code(toStatus(wrapped)), "through toStatus")
		})
	}
}

func TestCodeForBackendErrors(t *testing.T) {
	// The errors the backends really return, not only the bare sentinels.
	cases := []struct {
		name string
		err  error
		want codes.Code
	}{
		{name: "validate_malformed", err: volume.CheckID("../.."), want: codes.InvalidArgument},
		{name: "validate_foreign", err: volume.CheckID("reallyfakevolumeid"), want: codes.NotFound},
		{name: "validate_upper_case", err: volume.CheckID("HV-0123456789ABCDEF0123456789ABCDEF"), want: codes.NotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Error(t, tc.err)
			require.Equal(t, tc.want, codeFor(tc.err))
		})
	}
}

func TestToStatus(t *testing.T) {
	require.NoError(t, toStatus(nil))

	kept := status.Error(codes.Aborted, "busy")
	require.Equal(t, kept, toStatus(kept), "a status made on purpose is kept as is")

	got := toStatus(fmt.Errorf("volume %s: %w", volumeid.FromName("v"), volume.ErrNoSpace))
	require.Equal(t, codes.ResourceExhausted, status.Code(got))
}

// newTestDriver builds a driver on a Manager with a FakeMounter and one
// pool in a temporary directory; load says whether Load has run.
func newTestDriver(t *testing.T, load bool) (*Driver, *volume.Manager) {
	t.Helper()
	dir := t.TempDir()
	pd := filepath.Join(dir, "pool")
	require.NoError(t, os.Mkdir(pd, 0o755))
	p, err := pool.Open(pool.Spec{Name: pool.DefaultName, Path: pd})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	m, err := volume.New(volume.Config{NodeID: "n", StateDir: filepath.Join(dir, "state"), Pools: []*pool.Pool{p}, Mounter: mount.NewFakeMounter(nil)})
	require.NoError(t, err)
	if load {
		require.NoError(t, m.Load())
	}
	d, err := New(Config{Name: "hostvol.csi.io", NodeID: "n", Manager: m})
	require.NoError(t, err)
	return d, m
}

func info(method string) *grpc.UnaryServerInfo { return &grpc.UnaryServerInfo{FullMethod: method} }

func TestInterceptRecoversPanics(t *testing.T) {
	d, _ := newTestDriver(t, true)
	cases := []struct {
		name    string
		handler grpc.UnaryHandler
	}{
		{name: "panic_string", handler: func(context.Context, any) (any, error) { panic("boom") }},
		{name: "panic_error", handler: func(context.Context, any) (any, error) { panic(errors.New("boom")) }},
		{name: "nil_dereference", handler: func(context.Context, any) (any, error) {
			var v *csi.Volume
			return v.VolumeId, nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := d.intercept(t.Context(), &csi.CreateVolumeRequest{Name: "v"}, info("/csi.v1.Controller/CreateVolume"), tc.handler)
			require.Equal(t, codes.Internal, status.Code(err), "error: %v", err)
			require.Nil(t, resp)
		})
	}
}

func TestInterceptMapsErrors(t *testing.T) {
	d, _ := newTestDriver(t, true)
	cases := []struct {
		name string
		err  error
		want codes.Code
	}{
		{name: "ok", want: codes.OK},
		{name: "backend_in_use", err: fmt.Errorf("delete: %w", volume.ErrInUse), want: codes.FailedPrecondition},
		{name: "backend_not_found", err: fmt.Errorf("get: %w", volume.ErrNotFound), want: codes.NotFound},
		{name: "backend_corrupt", err: fmt.Errorf("get: %w", records.ErrCorrupt), want: codes.DataLoss},
		{name: "plain_error", err: errors.New("disk on fire"), want: codes.Internal},
		{name: "status_kept", err: status.Error(codes.Aborted, "busy"), want: codes.Aborted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := &csi.DeleteVolumeResponse{}
			resp, err := d.intercept(t.Context(), &csi.DeleteVolumeRequest{}, info("/csi.v1.Controller/DeleteVolume"),
				func(context.Context, any) (any, error) {
					if tc.err != nil {
						return nil, tc.err
					}
					return want, nil
				})
			require.Equal(t, tc.want, status.Code(err), "error: %v", err)
			_, isStatus := status.FromError(err)
			require.True(t, isStatus)
			if tc.err == nil {
				require.Same(t, want, resp)
			}
		})
	}
}

func TestInterceptGatesUntilLoaded(t *testing.T) {
	d, m := newTestDriver(t, false)
	methods := []struct {
		name   string
		method string
		gated  bool
	}{
		{name: "probe", method: "/csi.v1.Identity/Probe"},
		{name: "get_plugin_info", method: "/csi.v1.Identity/GetPluginInfo"},
		{name: "get_plugin_capabilities", method: "/csi.v1.Identity/GetPluginCapabilities"},
		{name: "create_volume", method: "/csi.v1.Controller/CreateVolume", gated: true},
		{name: "controller_get_capabilities", method: "/csi.v1.Controller/ControllerGetCapabilities", gated: true},
		{name: "node_publish_volume", method: "/csi.v1.Node/NodePublishVolume", gated: true},
		{name: "node_get_info", method: "/csi.v1.Node/NodeGetInfo", gated: true},
		// A method name that merely contains the identity prefix.
		{name: "identity_prefix_not_at_start", method: "/csi.v1.Node/csi.v1.Identity/", gated: true},
	}
	for _, loaded := range []bool{false, true} {
		if loaded {
			require.NoError(t, m.Load())
		}
		for _, tc := range methods {
			t.Run(fmt.Sprintf("loaded_%v_%s", loaded, tc.name), func(t *testing.T) {
				called := false
				_, err := d.intercept(t.Context(), &csi.ProbeRequest{}, info(tc.method), func(context.Context, any) (any, error) {
					called = true
					return &csi.ProbeResponse{}, nil
				})
				if tc.gated && !loaded {
					require.Equal(t, codes.Unavailable, status.Code(err))
					require.False(t, called, "a gated handler must not run")
					return
				}
				require.NoError(t, err)
				require.True(t, called)
			})
		}
	}
}

func TestNewRequiresConfig(t *testing.T) {
	_, m := newTestDriver(t, true)
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{name: "complete", cfg: Config{Name: "hostvol.csi.io", NodeID: "n", Manager: m}, ok: true},
		{name: "no_name", cfg: Config{NodeID: "n", Manager: m}},
		{name: "no_node_id", cfg: Config{Name: "hostvol.csi.io", Manager: m}},
		{name: "no_manager", cfg: Config{Name: "hostvol.csi.io", NodeID: "n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}
