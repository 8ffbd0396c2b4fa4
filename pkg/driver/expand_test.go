package driver_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// Kubernetes must not call ControllerExpandVolume: the external-resizer runs
// wherever its leader is, not on the volume's node. With node EXPAND_VOLUME
// alone it takes its "node expansion only" path and the kubelet of the
// volume's node calls NodeExpandVolume.
func TestExpansionIsNodeOnly(t *testing.T) {
	h := start(t, testutil.Options{})
	ctrl, err := h.ctrl.ControllerGetCapabilities(t.Context(), &csi.ControllerGetCapabilitiesRequest{})
	require.NoError(t, err)
	for _, c := range ctrl.GetCapabilities() {
		require.NotEqual(t, csi.ControllerServiceCapability_RPC_EXPAND_VOLUME, c.GetRpc().GetType())
	}
	node, err := h.node.NodeGetCapabilities(t.Context(), &csi.NodeGetCapabilitiesRequest{})
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(node.GetCapabilities(), func(c *csi.NodeServiceCapability) bool {
		return c.GetRpc().GetType() == csi.NodeServiceCapability_RPC_EXPAND_VOLUME
	}))
	ident, err := h.ident.GetPluginCapabilities(t.Context(), &csi.GetPluginCapabilitiesRequest{})
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(ident.GetCapabilities(), func(c *csi.PluginCapability) bool {
		return c.GetVolumeExpansion().GetType() == csi.PluginCapability_VolumeExpansion_ONLINE
	}), "the kubelet grows volumes in use only with ONLINE expansion")
}

func TestNodeExpandVolumeGrowsTheVolume(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("grow"))
	target := filepath.Join(h.Dir, "target")
	h.publish(t, id, target)
	capacity := func() int64 {
		t.Helper()
		resp, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
		require.NoError(t, err)
		for _, e := range resp.GetEntries() {
			if e.GetVolume().GetVolumeId() == id {
				return e.GetVolume().GetCapacityBytes()
			}
		}
		t.Fatalf("volume %s not listed", id)
		return 0
	}
	expand := func(required, limit int64) (*csi.NodeExpandVolumeResponse, error) {
		return h.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{
			VolumeId:      id,
			VolumePath:    target,
			CapacityRange: &csi.CapacityRange{RequiredBytes: required, LimitBytes: limit},
		})
	}

	resp, err := expand(4*mib, 0)
	require.NoError(t, err)
	require.Equal(t, 4*mib, resp.GetCapacityBytes())
	require.Equal(t, 4*mib, capacity(), "the record holds the new size")

	t.Run("same_size_again", func(t *testing.T) {
		resp, err := expand(4*mib, 0)
		require.NoError(t, err)
		require.Equal(t, 4*mib, resp.GetCapacityBytes())
	})
	t.Run("smaller_is_a_no_op", func(t *testing.T) {
		resp, err := expand(2*mib, 0)
		require.NoError(t, err)
		require.Equal(t, 4*mib, resp.GetCapacityBytes())
	})
	t.Run("shrink_below_limit", func(t *testing.T) {
		_, err := expand(mib, 2*mib)
		requireCode(t, codes.OutOfRange, err)
	})
	t.Run("no_capacity_range_runs_the_node_step_only", func(t *testing.T) {
		resp, err := h.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target})
		require.NoError(t, err)
		require.Equal(t, 4*mib, resp.GetCapacityBytes())
	})
	t.Run("volume_of_another_node", func(t *testing.T) {
		other := start(t, testutil.Options{NodeID: "other-node"})
		_, err := other.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{
			VolumeId:      id,
			VolumePath:    target,
			CapacityRange: &csi.CapacityRange{RequiredBytes: 8 * mib},
		})
		requireCode(t, codes.NotFound, err)
		require.Equal(t, 4*mib, capacity())
	})
}
