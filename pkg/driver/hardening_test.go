package driver_test

// The smaller hardening cases, each through the gRPC API
// with the fakes (full pool during mkfs, vanished data, another node's
// volumes, unreadable records, a read-only state directory, long request
// strings).

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
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

// After a restart with another --node-id on the same state directory, the
// node-local volumes whose records name the old node are not this node's:
// DeleteVolume is FAILED_PRECONDITION naming both nodes (deleting would
// remove data the other node owns; OK would make the provisioner believe
// it gone), expansion NOT_FOUND, as stage and publish already answer.
// Shared-pool volumes (no node in the record) are unaffected.
func TestVolumesOfTheOldNodeID(t *testing.T) {
	base := t.TempDir()
	poolDir, sharedDir := filepath.Join(base, "pool"), filepath.Join(base, "shared")
	require.NoError(t, os.Mkdir(poolDir, 0o755))
	require.NoError(t, os.Mkdir(sharedDir, 0o755))
	opts := func(node string) testutil.Options {
		return testutil.Options{
			NodeID:   node,
			StateDir: filepath.Join(base, "state"),
			PoolSpecs: []pool.Spec{
				{Name: pool.DefaultName, Path: poolDir},
				{Name: "shared", Path: sharedDir, Shared: true},
			},
		}
	}
	a := start(t, opts("node-a"))
	dirID := a.create(t, createReq("dir"))
	loopReq := createReq("loop")
	loopReq.Parameters = map[string]string{"type": "loop"}
	loopReq.CapacityRange = &csi.CapacityRange{RequiredBytes: 20 * mib}
	loopID := a.create(t, loopReq)
	sharedReq := createReq("shared")
	sharedReq.Parameters = map[string]string{"pool": "shared", "sizeLimit": "optional"}
	sharedID := a.create(t, sharedReq)
	a.Driver.Stop()

	b := start(t, opts("node-b"))
	target := filepath.Join(base, "target")
	for _, tc := range []struct {
		name string
		id   string
		data string
	}{
		{name: "dir", id: dirID, data: b.dataDir(dirID)},
		{name: "loop", id: loopID, data: b.Pools[0].ImagePath(loopID)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: tc.id})
			requireCode(t, codes.FailedPrecondition, err)
			require.ErrorContains(t, err, `"node-a"`)
			require.ErrorContains(t, err, `"node-b"`)
			require.ErrorContains(t, err, tc.id)
			require.FileExists(t, filepath.Join(base, "state", "volumes", tc.id+".json"))

			_, err = b.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{VolumeId: tc.id, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
			requireCode(t, codes.NotFound, err)
			_, err = b.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{VolumeId: tc.id, VolumePath: target, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
			requireCode(t, codes.NotFound, err)

			resp, err := b.ctrl.ControllerGetVolume(t.Context(), &csi.ControllerGetVolumeRequest{VolumeId: tc.id})
			require.NoError(t, err)
			require.Less(t, resp.GetVolume().GetCapacityBytes(), 64*mib, "the record is unchanged")
			fi, err := os.Stat(tc.data)
			require.NoError(t, err, "the data stays")
			if !fi.IsDir() {
				require.Less(t, fi.Size(), 64*mib, "the image did not grow")
			}
		})
	}
	t.Run("shared_pool_volume", func(t *testing.T) {
		_, err := b.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{VolumeId: sharedID, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 * mib}})
		require.NoError(t, err)
		_, err = b.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: sharedID})
		require.NoError(t, err)
		require.NoDirExists(t, filepath.Join(sharedDir, "volumes", sharedID))
	})

	// Under its own name again, the node deletes them.
	b.Driver.Stop()
	a = start(t, opts("node-a"))
	for _, id := range []string{dirID, loopID} {
		_, err := a.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
		require.NoError(t, err)
	}
	requireNoVolumes(t, a)
}

// Records that cannot be read are reported, not hidden: after the restart
// that finds them, ListVolumes lists them in ID order with the others (no
// capacity, a volume_context entry saying why), pages included, and the
// controller health RPCs report them as INACCESSIBLE RecordUnreadable.
// They are never deleted.
func TestUnreadableRecordsReported(t *testing.T) {
	base := t.TempDir()
	poolDir := filepath.Join(base, "pool")
	require.NoError(t, os.Mkdir(poolDir, 0o755))
	opts := testutil.Options{StateDir: filepath.Join(base, "state"), PoolSpecs: []pool.Spec{{Name: pool.DefaultName, Path: poolDir}}}
	h := start(t, opts)
	var good []string
	for i := range 5 {
		good = append(good, h.create(t, createReq(fmt.Sprintf("good-%d", i))))
	}
	bad := map[string]string{
		volumeid.FromName("truncated"): `{"schema":1,"id":`,
		volumeid.FromName("binary"):    "\x00\xff\xfe",
	}
	for id, content := range bad {
		require.NoError(t, os.WriteFile(filepath.Join(h.StateDir, "volumes", id+".json"), []byte(content), 0o600))
	}
	h.Driver.Stop()
	h = start(t, opts)

	all := append([]string{}, good...)
	for id := range bad {
		all = append(all, id)
	}
	slices.Sort(all)
	for _, max := range []int32{0, 1, 2, 4} {
		ids, _ := listAll(t, h, max, nil)
		require.Equal(t, all, ids, "max_entries %d", max)
	}
	resp, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
	require.NoError(t, err)
	for _, e := range resp.GetEntries() {
		v := e.GetVolume()
		if _, isBad := bad[v.GetVolumeId()]; !isBad {
			require.NotContains(t, v.GetVolumeContext(), params.KeyRecordUnreadable)
			continue
		}
		require.Zero(t, v.GetCapacityBytes())
		require.Contains(t, v.GetVolumeContext()[params.KeyRecordUnreadable], "cannot be read")
		require.Contains(t, v.GetVolumeContext()[params.KeyRecordUnreadable], v.GetVolumeId()+".json")
		require.Equal(t, nodeTopology(testNode)[0].GetSegments(), v.GetAccessibleTopology()[0].GetSegments())
	}

	for id := range bad {
		resp, err := h.ctrl.ControllerGetVolumeHealth(t.Context(), &csi.ControllerGetVolumeHealthRequest{VolumeId: id})
		require.NoError(t, err)
		requireHealth(t, resp.GetVolumeHealth(), id, "INACCESSIBLE/"+volume.ReasonRecordUnreadable)
	}
	list, err := h.ctrl.ControllerListVolumeHealth(t.Context(), &csi.ControllerListVolumeHealthRequest{})
	require.NoError(t, err)
	var listed []string
	for _, e := range list.GetEntries() {
		requireHealth(t, e, e.GetVolumeId(), "INACCESSIBLE/"+volume.ReasonRecordUnreadable)
		listed = append(listed, e.GetVolumeId())
	}
	require.ElementsMatch(t, slices.Collect(maps.Keys(bad)), listed)

	for id := range bad {
		_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
		requireCode(t, codes.DataLoss, err)
		require.FileExists(t, filepath.Join(h.StateDir, "volumes", id+".json"), "never deleted")
	}
}

// A 10 KB string in a request (an ID, a name, a path, a parameter, a
// token, a mount flag) is echoed cut to a few hundred bytes with its full
// length, whichever check refuses it, not whole into the error and the
// "Call failed" log line.
func TestLongRequestStringsAreCut(t *testing.T) {
	h := start(t, testutil.Options{})
	existing := h.create(t, createReq("existing"))
	long := strings.Repeat("a", 10<<10)
	longName := strings.Repeat("n", 1000) // names are refused above 1024 bytes
	target := filepath.Join(h.Dir, "target")
	ephemeral := func(attrs map[string]string) *csi.NodePublishVolumeRequest {
		ctx := map[string]string{"csi.storage.k8s.io/ephemeral": "true"}
		maps.Copy(ctx, attrs)
		return &csi.NodePublishVolumeRequest{VolumeId: "csi-" + strings.Repeat("ab", 32), TargetPath: target, VolumeCapability: mountCap(snw), VolumeContext: ctx}
	}
	fsCap := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: long}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: snw},
	}
	cases := []struct {
		name   string
		length int // of the string that must appear cut
		call   func() error
	}{
		{name: "create_volume_name", length: len(longName), call: func() error {
			r := createReq(longName)
			r.VolumeCapabilities = nil
			_, err := h.ctrl.CreateVolume(t.Context(), r)
			return err
		}},
		{name: "create_volume_parameter_key", length: len(long), call: func() error {
			r := createReq("v")
			r.Parameters = map[string]string{long: "x"}
			_, err := h.ctrl.CreateVolume(t.Context(), r)
			return err
		}},
		{name: "create_volume_parameter_value", length: len(long), call: func() error {
			r := createReq("v")
			r.Parameters = map[string]string{"type": long}
			_, err := h.ctrl.CreateVolume(t.Context(), r)
			return err
		}},
		{name: "create_volume_pool_name", length: len(long), call: func() error {
			r := createReq("v")
			r.Parameters = map[string]string{"pool": long}
			_, err := h.ctrl.CreateVolume(t.Context(), r)
			return err
		}},
		{name: "create_volume_fs_type", length: len(long), call: func() error {
			r := createReq("v")
			r.VolumeCapabilities = []*csi.VolumeCapability{fsCap}
			_, err := h.ctrl.CreateVolume(t.Context(), r)
			return err
		}},
		{name: "delete_volume_id", length: len(long), call: func() error {
			_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: long})
			return err
		}},
		{name: "controller_expand_volume_no_range", length: len(long), call: func() error {
			_, err := h.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{VolumeId: long})
			return err
		}},
		{name: "list_volumes_token", length: len(long), call: func() error {
			_, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{StartingToken: long})
			return err
		}},
		{name: "list_volume_health_token", length: len(long), call: func() error {
			_, err := h.ctrl.ControllerListVolumeHealth(t.Context(), &csi.ControllerListVolumeHealthRequest{StartingToken: long})
			return err
		}},
		{name: "node_stage_volume_no_capability", length: len(long), call: func() error {
			_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: long, StagingTargetPath: target})
			return err
		}},
		{name: "node_stage_volume_relative_path", length: len(long), call: func() error {
			_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: existing, StagingTargetPath: long, VolumeCapability: mountCap(snw)})
			return err
		}},
		{name: "node_stage_volume_mount_flag", length: len(long), call: func() error {
			_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: existing, StagingTargetPath: target, VolumeCapability: mountCap(snw, long)})
			return err
		}},
		{name: "node_publish_volume_id_and_path", length: len(long), call: func() error {
			_, err := h.node.NodePublishVolume(t.Context(), publishReq(long, long, mountCap(snw), false))
			return err
		}},
		{name: "node_publish_inline_size", length: len(long), call: func() error {
			_, err := h.node.NodePublishVolume(t.Context(), ephemeral(map[string]string{"size": long}))
			return err
		}},
		{name: "node_publish_inline_attribute_key", length: len(long), call: func() error {
			_, err := h.node.NodePublishVolume(t.Context(), ephemeral(map[string]string{long: "x"}))
			return err
		}},
		{name: "node_unpublish_volume_id", length: len(long), call: func() error {
			_, err := h.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: long, TargetPath: target})
			return err
		}},
		{name: "node_get_volume_stats_no_path", length: len(long), call: func() error {
			_, err := h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: long})
			return err
		}},
		{name: "node_expand_volume_no_path", length: len(long), call: func() error {
			_, err := h.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{VolumeId: long})
			return err
		}},
		{name: "node_get_volume_health_relative_path", length: len(long), call: func() error {
			_, err := h.node.NodeGetVolumeHealth(t.Context(), &csi.NodeGetVolumeHealthRequest{VolumeId: long, VolumePublishPath: long})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Error(t, err)
			msg := status.Convert(err).Message()
			require.Less(t, len(msg), 1024, "message: %.2000s", msg)
			require.Contains(t, msg, fmt.Sprintf("... (%d bytes)", tc.length))
		})
	}
}
