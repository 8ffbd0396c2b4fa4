package driver_test

// Issue 9, point 8: the smaller hardening cases, each through the gRPC API
// with the fakes (full pool during mkfs, vanished data, another node's
// volumes, unreadable records, a read-only state directory, long request
// strings).

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// A full pool while mkfs formats a new loop volume is RESOURCE_EXHAUSTED
// (the provisioner may try another node), and nothing is left behind.
func TestCreateVolumeFormatNoSpace(t *testing.T) {
	fs := &fsutil.Fake{Err: fmt.Errorf("mkfs.ext4 ...: %w: exit status 1: mkfs.ext4: No space left on device while writing out and closing file system", fsutil.ErrNoSpace)}
	h := start(t, testutil.Options{FS: fs})
	req := createReq("full")
	req.Parameters = map[string]string{"type": "loop"}
	req.CapacityRange = &csi.CapacityRange{RequiredBytes: 20 * mib}
	_, err := h.ctrl.CreateVolume(t.Context(), req)
	requireCode(t, codes.ResourceExhausted, err)
	requireNoVolumes(t, h)
}

// NodeGetVolumeStats of a published volume whose data vanished (removed
// by hand, a disk not mounted) is NOT_FOUND saying the data is missing,
// not INTERNAL.
func TestNodeGetVolumeStatsDataMissing(t *testing.T) {
	unlimited := quota.NewFake()
	unlimited.Method = quota.None
	cases := []struct {
		name  string
		opts  testutil.Options
		req   func(*csi.CreateVolumeRequest)
		block bool
	}{
		{name: "dir_limited"},
		{name: "dir_unlimited", opts: testutil.Options{Quota: unlimited}, req: func(r *csi.CreateVolumeRequest) {
			r.Parameters = map[string]string{"sizeLimit": "optional"}
		}},
		{name: "block", block: true, req: func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{blockCap(snw)}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, tc.opts)
			r := createReq("vol")
			if tc.req != nil {
				tc.req(r)
			}
			id := h.create(t, r)
			capability, data := mountCap(snw), h.dataDir(id)
			if tc.block {
				capability, data = blockCap(snw), h.Pools[0].ImagePath(id)
			}
			staging, target := filepath.Join(h.Dir, "staging"), filepath.Join(h.Dir, "target")
			_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: capability})
			require.NoError(t, err)
			pub := publishReq(id, target, capability, false)
			pub.StagingTargetPath = staging
			_, err = h.node.NodePublishVolume(t.Context(), pub)
			require.NoError(t, err)
			_, err = h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
			require.NoError(t, err)

			require.NoError(t, os.RemoveAll(data))
			_, err = h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
			requireCode(t, codes.NotFound, err)
			require.ErrorContains(t, err, "missing")
			require.ErrorContains(t, err, id)
		})
	}
}
