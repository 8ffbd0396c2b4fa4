package driver_test

// Tests of driver.go over the gRPC socket, with mount-utils' FakeMounter
// and real temporary directories (any user): start-up before and after the
// records load, restart on the same state directory, per-volume locking,
// the endpoint, and the interceptor. harness_test.go holds the helpers
// the tests of every handler file share.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/driver"
	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestProbeAndUnavailableBeforeLoad serves a driver on a Manager whose
// Load has not run: only identity calls may answer, and Probe says
// not ready, until Load finishes.
func TestProbeAndUnavailableBeforeLoad(t *testing.T) {
	h := start(t, testutil.Options{Unloaded: true})
	dir := h.Dir
	ident, ctrl, node := h.ident, h.ctrl, h.node
	ctx := t.Context()
	id := volumeid.FromName("vol")

	probe, err := ident.Probe(ctx, &csi.ProbeRequest{})
	require.NoError(t, err)
	require.False(t, probe.GetReady().GetValue(), "not ready before Load")
	info, err := ident.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	require.NoError(t, err)
	require.Equal(t, "hostvol.csi.io", info.GetName())
	_, err = ident.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	require.NoError(t, err)

	calls := []struct {
		name string
		call func() error
	}{
		{name: "create_volume", call: func() error { _, err := ctrl.CreateVolume(ctx, createReq("vol")); return err }},
		{name: "delete_volume", call: func() error {
			_, err := ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
			return err
		}},
		{name: "list_volumes", call: func() error { _, err := ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{}); return err }},
		{name: "get_capacity", call: func() error { _, err := ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{}); return err }},
		{name: "controller_get_capabilities", call: func() error {
			_, err := ctrl.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
			return err
		}},
		{name: "node_get_info", call: func() error { _, err := node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{}); return err }},
		{name: "node_publish_volume", call: func() error {
			_, err := node.NodePublishVolume(ctx, publishReq(id, filepath.Join(dir, "target"), mountCap(snw), false))
			return err
		}},
		{name: "node_get_volume_stats", call: func() error {
			_, err := node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: filepath.Join(dir, "target")})
			return err
		}},
	}
	for _, tc := range calls {
		t.Run(tc.name+"_before_load", func(t *testing.T) {
			requireCode(t, codes.Unavailable, tc.call())
		})
	}
	require.NoDirExists(t, filepath.Join(dir, "target"))

	h.Load(t)
	probe, err = ident.Probe(ctx, &csi.ProbeRequest{})
	require.NoError(t, err)
	require.True(t, probe.GetReady().GetValue(), "ready after Load")
	_, err = ctrl.CreateVolume(ctx, createReq("vol"))
	require.NoError(t, err)
	_, err = node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	require.NoError(t, err)
}

// TestRestartSameStateDir stops a driver and starts another on the same
// state directory and pool: volumes and publications are remembered, and a
// publication whose mount is gone (a reboot) is dropped.
func TestRestartSameStateDir(t *testing.T) {
	base := t.TempDir()
	poolDir := filepath.Join(base, "pool")
	require.NoError(t, os.Mkdir(poolDir, 0o755))
	opts := func(m mount.Interface) testutil.Options {
		return testutil.Options{
			StateDir:  filepath.Join(base, "state"),
			PoolSpecs: []pool.Spec{{Name: pool.DefaultName, Path: poolDir}},
			Mounter:   m,
		}
	}
	mounter := mount.NewFakeMounter(nil)
	first := start(t, opts(mounter))
	var ids []string
	for i := range 3 {
		ids = append(ids, first.create(t, createReq(fmt.Sprintf("vol-%d", i))))
	}
	target := filepath.Join(base, "target")
	first.publish(t, ids[0], target)
	first.Driver.Stop()

	listIDs := func(h *harness) []string {
		resp, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
		require.NoError(t, err)
		require.Empty(t, resp.GetNextToken())
		var got []string
		for _, e := range resp.GetEntries() {
			got = append(got, e.GetVolume().GetVolumeId())
		}
		slices.Sort(got)
		return got
	}
	want := slices.Sorted(slices.Values(ids))

	t.Run("same_mounts", func(t *testing.T) {
		h := start(t, opts(mounter))
		require.Equal(t, want, listIDs(h))
		_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: ids[0]})
		requireCode(t, codes.FailedPrecondition, err)
		require.DirExists(t, h.dataDir(ids[0]))
		// Single-writer and read-only checks see the remembered target too.
		_, err = h.node.NodePublishVolume(t.Context(), publishReq(ids[0], target, mountCap(snw), true))
		requireCode(t, codes.AlreadyExists, err)
		h.Driver.Stop()
	})

	t.Run("after_reboot", func(t *testing.T) {
		h := start(t, opts(mount.NewFakeMounter(nil)))
		require.Equal(t, want, listIDs(h))
		_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: ids[0]})
		require.NoError(t, err)
		require.NoDirExists(t, h.dataDir(ids[0]))
		require.Equal(t, slices.Sorted(slices.Values(ids[1:])), listIDs(h))
		for _, id := range ids[1:] {
			require.DirExists(t, h.dataDir(id))
		}
	})
}

func TestConcurrentCreateSameName(t *testing.T) {
	h := start(t, testutil.Options{})
	const callers = 16
	type result struct {
		id   string
		code codes.Code
	}
	results := make([]result, callers)
	var wg sync.WaitGroup
	startGate := make(chan struct{})
	for i := range callers {
		wg.Go(func() {
			<-startGate
			resp, err := h.ctrl.CreateVolume(context.Background(), createReq("same-name"))
			results[i] = result{id: resp.GetVolume().GetVolumeId(), code: status.Code(err)}
		})
	}
	close(startGate)
	wg.Wait()

	want := volumeid.FromName("same-name")
	oks := 0
	for i, r := range results {
		switch r.code {
		case codes.OK:
			oks++
			require.Equal(t, want, r.id, "caller %d", i)
		case codes.Aborted:
		default:
			t.Fatalf("caller %d: code %s, want OK or Aborted", i, r.code)
		}
	}
	require.Positive(t, oks)
	require.Equal(t, []string{testutil.RecordFile(want)}, recordFiles(t, h.Layout().RecordsDir()))
	entries, err := h.Pools[0].Entries()
	require.NoError(t, err)
	require.Equal(t, []string{want}, entries)
}

func TestPerVolumeLock(t *testing.T) {
	p, others := startHeld(t, "other")
	h, held, other := p.h, p.id, others[0]

	ctx := t.Context()
	staging := filepath.Join(p.base, "staging")
	onHeld := []struct {
		name string
		call func() error
	}{
		{name: "create_volume_same_name", call: func() error { _, err := h.ctrl.CreateVolume(ctx, createReq("held")); return err }},
		{name: "delete_volume", call: func() error {
			_, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: held})
			return err
		}},
		{name: "node_stage_volume", call: func() error {
			_, err := h.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: held, StagingTargetPath: staging, VolumeCapability: mountCap(snw)})
			return err
		}},
		{name: "node_unstage_volume", call: func() error {
			_, err := h.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: held, StagingTargetPath: staging})
			return err
		}},
		{name: "node_publish_volume_other_target", call: func() error {
			_, err := h.node.NodePublishVolume(ctx, publishReq(held, filepath.Join(p.base, "second"), mountCap(snw), false))
			return err
		}},
		{name: "node_publish_volume_same_target", call: func() error {
			_, err := h.node.NodePublishVolume(ctx, publishReq(held, p.target, mountCap(snw), false))
			return err
		}},
		{name: "node_unpublish_volume", call: func() error {
			_, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: held, TargetPath: p.target})
			return err
		}},
	}
	for _, tc := range onHeld {
		t.Run(tc.name, func(t *testing.T) {
			requireCode(t, codes.Aborted, tc.call())
		})
	}

	// No global lock: other volumes, and read-only calls, go on.
	t.Run("other_volume_not_blocked", func(t *testing.T) {
		h.publish(t, other, filepath.Join(p.base, "other"))
		_, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: other, TargetPath: filepath.Join(p.base, "other")})
		require.NoError(t, err)
		_, err = h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: other})
		require.NoError(t, err)
		h.create(t, createReq("third"))
	})
	t.Run("reads_not_blocked", func(t *testing.T) {
		_, err := h.ctrl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: held, VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw)}})
		require.NoError(t, err)
		_, err = h.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{})
		require.NoError(t, err)
	})

	p.release()
	require.NoError(t, <-p.published)
	_, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: held})
	requireCode(t, codes.FailedPrecondition, err) // published, and now unlocked
	_, err = h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: held, TargetPath: p.target})
	require.NoError(t, err)
	_, err = h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: held})
	require.NoError(t, err)
}

func info(method string) *grpc.UnaryServerInfo { return &grpc.UnaryServerInfo{FullMethod: method} }

func TestInterceptRecoversPanics(t *testing.T) {
	d := start(t, testutil.Options{}).Driver
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
			resp, err := d.Intercept(t.Context(), &csi.CreateVolumeRequest{Name: "v"}, info("/csi.v1.Controller/CreateVolume"), tc.handler)
			require.Equal(t, codes.Internal, status.Code(err), "error: %v", err)
			require.Nil(t, resp)
		})
	}
}

func TestInterceptMapsErrors(t *testing.T) {
	d := start(t, testutil.Options{}).Driver
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
			resp, err := d.Intercept(t.Context(), &csi.DeleteVolumeRequest{}, info("/csi.v1.Controller/DeleteVolume"),
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
	h := start(t, testutil.Options{Unloaded: true})
	d := h.Driver
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
			h.Load(t)
		}
		for _, tc := range methods {
			t.Run(fmt.Sprintf("loaded_%v_%s", loaded, tc.name), func(t *testing.T) {
				called := false
				_, err := d.Intercept(t.Context(), &csi.ProbeRequest{}, info(tc.method), func(context.Context, any) (any, error) {
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
	m := start(t, testutil.Options{}).Manager
	cases := []struct {
		name string
		cfg  driver.Config
		ok   bool
	}{
		{name: "complete", cfg: driver.Config{Name: "hostvol.csi.io", NodeID: "n", Manager: m}, ok: true},
		{name: "no_name", cfg: driver.Config{NodeID: "n", Manager: m}},
		{name: "no_node_id", cfg: driver.Config{Name: "hostvol.csi.io", Manager: m}},
		{name: "no_manager", cfg: driver.Config{Name: "hostvol.csi.io", NodeID: "n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := driver.New(tc.cfg)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}

// A Stop that comes before Serve (a start-up that failed right after the
// driver was built) is not lost: Serve returns at once instead of serving
// forever.
func TestStopBeforeServe(t *testing.T) {
	m := start(t, testutil.Options{}).Manager
	d, err := driver.New(driver.Config{Name: "hostvol.csi.io", NodeID: "n", Manager: m})
	require.NoError(t, err)
	d.Stop()
	l, err := endpoint.Listen("unix://" + filepath.Join(t.TempDir(), "csi.sock"))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- d.Serve(l) }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, grpc.ErrServerStopped)
	case <-t.Context().Done():
		t.Fatal("Serve kept serving after Stop")
	}
}
