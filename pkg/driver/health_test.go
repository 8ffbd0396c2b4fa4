package driver_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

func TestHealthCapabilities(t *testing.T) {
	h := start(t, testutil.Options{})
	cc, err := h.ctrl.ControllerGetCapabilities(t.Context(), &csi.ControllerGetCapabilitiesRequest{})
	require.NoError(t, err)
	ctrl := map[csi.ControllerServiceCapability_RPC_Type]bool{}
	for _, c := range cc.GetCapabilities() {
		ctrl[c.GetRpc().GetType()] = true
	}
	for _, want := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_GET_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
	} {
		require.True(t, ctrl[want], "controller capability %s", want)
	}
	require.False(t, ctrl[csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES],
		"LIST_VOLUMES_PUBLISHED_NODES needs PUBLISH_UNPUBLISH_VOLUME, which hostvol does not offer")

	nc, err := h.node.NodeGetCapabilities(t.Context(), &csi.NodeGetCapabilitiesRequest{})
	require.NoError(t, err)
	node := map[csi.NodeServiceCapability_RPC_Type]bool{}
	for _, c := range nc.GetCapabilities() {
		node[c.GetRpc().GetType()] = true
	}
	require.True(t, node[csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH])
	require.True(t, node[csi.NodeServiceCapability_RPC_GET_STORAGE_HEALTH])
}

// healthRPCs call the RPCs that take a volume ID, with every other field
// valid (or absent: every other field is optional).
func healthRPCs(dir string) []idRPC {
	return []idRPC{
		{name: "controller_get_volume", call: func(ctx context.Context, h *harness, id string) error {
			_, err := h.ctrl.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: id})
			return err
		}},
		{name: "controller_get_volume_health", call: func(ctx context.Context, h *harness, id string) error {
			_, err := h.ctrl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: id})
			return err
		}},
		{name: "node_get_volume_health", call: func(ctx context.Context, h *harness, id string) error {
			_, err := h.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: id})
			return err
		}},
		{name: "node_get_volume_health_with_paths", call: func(ctx context.Context, h *harness, id string) error {
			_, err := h.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{
				VolumeId: id, VolumePublishPath: filepath.Join(dir, "published"), StagingTargetPath: filepath.Join(dir, "staging"),
			})
			return err
		}},
	}
}

func TestHealthHostileVolumeIDs(t *testing.T) {
	h, existing, before := startHostile(t)

	for _, rpc := range healthRPCs(h.Dir) {
		t.Run(rpc.name, func(t *testing.T) {
			t.Run("empty", func(t *testing.T) {
				requireCode(t, codes.InvalidArgument, rpc.call(t.Context(), h, ""))
			})
			for _, tc := range hostileIDs(existing) {
				t.Run(tc.name, func(t *testing.T) {
					err := rpc.call(t.Context(), h, tc.id)
					if tc.malformed {
						requireCode(t, codes.InvalidArgument, err)
					} else {
						requireCode(t, codes.NotFound, err)
					}
				})
			}
			t.Run("existing", func(t *testing.T) {
				requireCode(t, codes.OK, rpc.call(t.Context(), h, existing))
			})
		})
	}
	require.Equal(t, before, snapshotTree(t, h.Dir), "a health call with a hostile volume ID changed the filesystem")
}

// NodeGetVolumeHealth's paths are optional, but when given they must be
// absolute paths; a path where the volume is not published or staged is a
// condition (the spec lets the CO ask after a failed attempt), never looked
// at.
func TestNodeGetVolumeHealthPaths(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("vol"))
	target := filepath.Join(h.Dir, "target")
	h.publish(t, id, target)
	plantSentinels(t, h.Dir)
	before := snapshotTree(t, h.Dir)

	hostile := []struct{ name, path string }{
		{name: "relative", path: "target"},
		{name: "relative_traversal", path: "../../etc"},
		{name: "dot", path: "."},
		{name: "nul_inside", path: filepath.Join(h.Dir, "a\x00b")},
		{name: "root", path: "/"},
		{name: "root_via_dotdot", path: "/.."},
		{name: "longer_than_path_max", path: "/" + strings.Repeat("a", 4096)},
	}
	for _, field := range []string{"publish", "staging"} {
		req := func(id, p string) *csi.NodeGetVolumeHealthRequest {
			if field == "publish" {
				return &csi.NodeGetVolumeHealthRequest{VolumeId: id, VolumePublishPath: p}
			}
			return &csi.NodeGetVolumeHealthRequest{VolumeId: id, StagingTargetPath: p}
		}
		t.Run(field, func(t *testing.T) {
			for _, tc := range hostile {
				t.Run(tc.name, func(t *testing.T) {
					_, err := h.node.NodeGetVolumeHealth(t.Context(), req(id, tc.path))
					requireCode(t, codes.InvalidArgument, err)
				})
			}
			t.Run("no_volume_id", func(t *testing.T) {
				_, err := h.node.NodeGetVolumeHealth(t.Context(), req("", target))
				requireCode(t, codes.InvalidArgument, err)
			})
			t.Run("not_used_there", func(t *testing.T) {
				resp, err := h.node.NodeGetVolumeHealth(t.Context(), req(id, filepath.Join(h.Dir, "etc")))
				require.NoError(t, err)
				want := volume.ReasonNotPublishedAtPath
				if field == "staging" {
					want = volume.ReasonNotStagedAtPath
				}
				requireHealth(t, resp.GetVolumeHealth(), id, csi.VolumeHealthErrorType_INACCESSIBLE.String()+"/"+want)
			})
		})
	}
	t.Run("published_path", func(t *testing.T) {
		resp, err := h.node.NodeGetVolumeHealth(t.Context(), &csi.NodeGetVolumeHealthRequest{VolumeId: id, VolumePublishPath: target + "/."})
		require.NoError(t, err)
		requireHealth(t, resp.GetVolumeHealth(), id)
	})
	require.Equal(t, before, snapshotTree(t, h.Dir), "a health call changed the filesystem")
}

// requireHealth checks a VolumeHealth: its ID, and its entries as
// "STATUS/Reason", in any order; each entry's message names the volume.
func requireHealth(t *testing.T, vh *csi.VolumeHealth, id string, want ...string) {
	t.Helper()
	require.NotNil(t, vh)
	require.Equal(t, id, vh.GetVolumeId())
	got := []string{}
	for _, e := range vh.GetHealthStatuses() {
		got = append(got, e.GetStatus().String()+"/"+e.GetReason())
		require.Contains(t, e.GetMessage(), id)
	}
	if want == nil {
		want = []string{}
	}
	require.ElementsMatch(t, want, got)
}

func TestControllerGetVolume(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("vol"))
	h.publish(t, id, filepath.Join(h.Dir, "target"))
	resp, err := h.ctrl.ControllerGetVolume(t.Context(), &csi.ControllerGetVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	require.Equal(t, id, resp.GetVolume().GetVolumeId())
	require.Equal(t, mib, resp.GetVolume().GetCapacityBytes())
	require.Equal(t, nodeTopology(testNode)[0].GetSegments(), resp.GetVolume().GetAccessibleTopology()[0].GetSegments())
	require.NotNil(t, resp.GetStatus(), "status is REQUIRED")
	require.Empty(t, resp.GetStatus().GetPublishedNodeIds(), "hostvol never controller-publishes")

	_, err = h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
	requireCode(t, codes.FailedPrecondition, err)
	_, err = h.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: filepath.Join(h.Dir, "target")})
	require.NoError(t, err)
	_, err = h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	_, err = h.ctrl.ControllerGetVolume(t.Context(), &csi.ControllerGetVolumeRequest{VolumeId: id})
	requireCode(t, codes.NotFound, err)
}

func TestControllerVolumeHealth(t *testing.T) {
	h := start(t, testutil.Options{})
	var ids []string
	for _, name := range []string{"a", "b", "c", "d"} {
		ids = append(ids, h.create(t, createReq(name)))
	}
	get := func(t *testing.T, id string) *csi.VolumeHealth {
		t.Helper()
		resp, err := h.ctrl.ControllerGetVolumeHealth(t.Context(), &csi.ControllerGetVolumeHealthRequest{VolumeId: id})
		require.NoError(t, err)
		return resp.GetVolumeHealth()
	}
	for _, id := range ids {
		requireHealth(t, get(t, id), id)
	}
	list, err := h.ctrl.ControllerListVolumeHealth(t.Context(), &csi.ControllerListVolumeHealthRequest{})
	require.NoError(t, err)
	require.Empty(t, list.GetEntries(), "healthy volumes are omitted")
	require.Empty(t, list.GetNextToken())

	broken := []string{ids[1], ids[3]}
	for _, id := range broken {
		require.NoError(t, os.Remove(h.dataDir(id)))
		requireHealth(t, get(t, id), id, "INACCESSIBLE/"+volume.ReasonDataMissing)
	}
	requireHealth(t, get(t, ids[0]), ids[0])

	t.Run("pages_of_one", func(t *testing.T) {
		var got []string
		token := ""
		for range len(ids) + 1 {
			resp, err := h.ctrl.ControllerListVolumeHealth(t.Context(), &csi.ControllerListVolumeHealthRequest{MaxEntries: 1, StartingToken: token})
			require.NoError(t, err)
			require.LessOrEqual(t, len(resp.GetEntries()), 1)
			for _, e := range resp.GetEntries() {
				requireHealth(t, e, e.GetVolumeId(), "INACCESSIBLE/"+volume.ReasonDataMissing)
				got = append(got, e.GetVolumeId())
			}
			if token = resp.GetNextToken(); token == "" {
				break
			}
		}
		require.ElementsMatch(t, broken, got)
	})
	t.Run("invalid", func(t *testing.T) {
		_, err := h.ctrl.ControllerListVolumeHealth(t.Context(), &csi.ControllerListVolumeHealthRequest{MaxEntries: -1})
		requireCode(t, codes.InvalidArgument, err)
		for _, token := range []string{"../..", "/etc/passwd", "nope", ids[0] + "\x00"} {
			_, err := h.ctrl.ControllerListVolumeHealth(t.Context(), &csi.ControllerListVolumeHealthRequest{StartingToken: token})
			requireCode(t, codes.Aborted, err)
		}
	})
}

func TestNodeGetStorageHealth(t *testing.T) {
	h := twoPools(t)
	resp, err := h.node.NodeGetStorageHealth(t.Context(), &csi.NodeGetStorageHealthRequest{})
	require.NoError(t, err)
	require.Empty(t, resp.GetBackendHealth(), "healthy pools report nothing")

	// Both pools gone: one entry (the spec allows one per status and
	// reason) naming both.
	for _, p := range h.Pools {
		require.NoError(t, os.Rename(p.Path, p.Path+".moved"))
		t.Cleanup(func() { _ = os.Rename(p.Path+".moved", p.Path) })
	}
	resp, err = h.node.NodeGetStorageHealth(t.Context(), &csi.NodeGetStorageHealthRequest{})
	require.NoError(t, err)
	require.Len(t, resp.GetBackendHealth(), 1)
	bh := resp.GetBackendHealth()[0]
	require.Equal(t, csi.StorageHealthErrorType_STORAGE_UNREACHABLE, bh.GetStatus())
	require.Equal(t, volume.ReasonPoolMissing, bh.GetReason())
	for _, p := range h.Pools {
		require.Contains(t, bh.GetMessage(), p.Path)
	}
}

// A health check takes the volume's try-lock: while another operation holds
// it, the single-volume calls are ABORTED and the list skips the volume;
// ControllerGetVolume only reads the record and is not blocked.
func TestHealthWhileLocked(t *testing.T) {
	p, _ := startHeld(t)
	h, held := p.h, p.id
	require.NoError(t, os.Remove(h.dataDir(held))) // abnormal, so the list would show it

	ctx := t.Context()
	_, err := h.ctrl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: held})
	requireCode(t, codes.Aborted, err)
	_, err = h.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: held})
	requireCode(t, codes.Aborted, err)
	list, err := h.ctrl.ControllerListVolumeHealth(ctx, &csi.ControllerListVolumeHealthRequest{})
	require.NoError(t, err)
	require.Empty(t, list.GetEntries(), "a busy volume is skipped, not waited for")
	_, err = h.ctrl.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: held})
	require.NoError(t, err)

	p.release()
	require.NoError(t, <-p.published)
	resp, err := h.ctrl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: held})
	require.NoError(t, err)
	requireHealth(t, resp.GetVolumeHealth(), held, "INACCESSIBLE/"+volume.ReasonDataMissing)
}
