package driver_test

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// A size no image can have (rounding it to whole 4 KiB blocks overflows)
// is OUT_OF_RANGE, through either RPC that grows a volume; it once was
// INTERNAL "refusing to shrink it to -9223372036854771712".
func TestExpandVolumeNearMaxInt64(t *testing.T) {
	h := start(t, testutil.Options{})
	req := createReq("huge")
	req.Parameters = map[string]string{"type": "loop"}
	req.CapacityRange = &csi.CapacityRange{RequiredBytes: 20 * mib}
	id := h.create(t, req)
	staging, target := filepath.Join(h.Dir, "staging"), filepath.Join(h.Dir, "target")
	_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw)})
	require.NoError(t, err)
	pub := publishReq(id, target, mountCap(snw), false)
	pub.StagingTargetPath = staging
	_, err = h.node.NodePublishVolume(t.Context(), pub)
	require.NoError(t, err)

	cases := []struct {
		name   string
		expand func(required int64) error
	}{
		{name: "controller_expand_volume", expand: func(required int64) error {
			_, err := h.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{
				VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: required},
			})
			return err
		}},
		{name: "node_expand_volume", expand: func(required int64) error {
			_, err := h.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{
				VolumeId: id, VolumePath: target, CapacityRange: &csi.CapacityRange{RequiredBytes: required},
			})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, required := range []int64{math.MaxInt64, math.MaxInt64 - 100} {
				err := tc.expand(required)
				requireCode(t, codes.OutOfRange, err)
				require.Contains(t, status.Convert(err).Message(), id)
			}
		})
	}
	resp, err := h.ctrl.ControllerGetVolume(t.Context(), &csi.ControllerGetVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	require.Equal(t, 20*mib, resp.GetVolume().GetCapacityBytes())
}
