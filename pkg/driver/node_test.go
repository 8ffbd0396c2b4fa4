package driver_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

func (h *harness) unpublish(t *testing.T, id, target string) {
	t.Helper()
	_, err := h.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	require.NoError(t, err)
}

func TestNodeGetInfo(t *testing.T) {
	h := start(t, testutil.Options{NodeID: "node-x", MaxVolumes: 42})
	resp, err := h.node.NodeGetInfo(t.Context(), &csi.NodeGetInfoRequest{})
	require.NoError(t, err)
	require.Equal(t, "node-x", resp.GetNodeId())
	require.Equal(t, int64(42), resp.GetMaxVolumesPerNode())
	require.Equal(t, map[string]string{params.TopologyKey: "node-x"}, resp.GetAccessibleTopology().GetSegments())

	caps, err := h.node.NodeGetCapabilities(t.Context(), &csi.NodeGetCapabilitiesRequest{})
	require.NoError(t, err)
	var rpcs []csi.NodeServiceCapability_RPC_Type
	for _, c := range caps.GetCapabilities() {
		rpcs = append(rpcs, c.GetRpc().GetType())
	}
	require.Contains(t, rpcs, csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME)
	require.Contains(t, rpcs, csi.NodeServiceCapability_RPC_GET_VOLUME_STATS)
}

func TestNodePublishIdempotent(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("vol"))
	target := filepath.Join(h.Dir, "target")

	h.publish(t, id, target)
	mp, ok := h.mountAt(t, target)
	require.True(t, ok)
	require.Equal(t, h.dataDir(id), mp.Device)
	require.Contains(t, mp.Opts, "bind")
	require.NotContains(t, mp.Opts, "ro")

	t.Run("same_request_again", func(t *testing.T) {
		h.publish(t, id, target)
		mounts := 0
		for _, a := range h.mounter.GetLog() {
			if a.Action == mount.FakeActionMount {
				mounts++
			}
		}
		require.Equal(t, 1, mounts, "an idempotent publish must not mount again")
	})
	t.Run("same_target_read_only", func(t *testing.T) {
		_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, target, mountCap(snw), true))
		requireCode(t, codes.AlreadyExists, err)
	})
	t.Run("same_target_reader_mode", func(t *testing.T) {
		_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, target, mountCap(mnro), false))
		requireCode(t, codes.AlreadyExists, err)
	})
	t.Run("second_target_single_node_writer", func(t *testing.T) {
		second := filepath.Join(h.Dir, "second")
		h.publish(t, id, second)
		h.unpublish(t, id, second)
	})
	t.Run("unpublish_twice", func(t *testing.T) {
		h.unpublish(t, id, target)
		_, ok := h.mountAt(t, target)
		require.False(t, ok)
		require.NoDirExists(t, target)
		h.unpublish(t, id, target)
	})
}

func TestSingleNodeSingleWriter(t *testing.T) {
	h := start(t, testutil.Options{})
	req := createReq("rwop")
	req.VolumeCapabilities = []*csi.VolumeCapability{mountCap(snsw)}
	id := h.create(t, req)
	first, second := filepath.Join(h.Dir, "first"), filepath.Join(h.Dir, "second")

	_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, first, mountCap(snsw), false))
	require.NoError(t, err)
	_, err = h.node.NodePublishVolume(t.Context(), publishReq(id, first, mountCap(snsw), false))
	require.NoError(t, err, "the same target again is idempotent")

	cases := []struct {
		name     string
		c        *csi.VolumeCapability
		readOnly bool
	}{
		{name: "single_writer", c: mountCap(snsw)},
		{name: "single_writer_read_only", c: mountCap(snsw), readOnly: true},
		{name: "single_node_writer", c: mountCap(snw)},
		{name: "reader", c: mountCap(snro)},
	}
	for _, tc := range cases {
		t.Run(tc.name+"_at_second_target", func(t *testing.T) {
			_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, second, tc.c, tc.readOnly))
			requireCode(t, codes.FailedPrecondition, err)
			require.NoDirExists(t, second)
		})
	}

	h.unpublish(t, id, first)
	_, err = h.node.NodePublishVolume(t.Context(), publishReq(id, second, mountCap(snsw), false))
	require.NoError(t, err, "after the first unpublish the second target works")
	_, err = h.node.NodePublishVolume(t.Context(), publishReq(id, first, mountCap(snsw), false))
	requireCode(t, codes.FailedPrecondition, err)

	t.Run("single_writer_after_a_shared_publish", func(t *testing.T) {
		h.unpublish(t, id, second)
		h.publish(t, id, first)
		_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, second, mountCap(snsw), false))
		requireCode(t, codes.FailedPrecondition, err)
	})
}

func TestReadOnlyPublish(t *testing.T) {
	h, rw, ro := rwAndRO(t)

	cases := []struct {
		name     string
		id       string
		c        *csi.VolumeCapability
		readOnly bool
		code     codes.Code
		wantRO   bool
	}{
		{name: "writer", id: rw, c: mountCap(snw)},
		{name: "writer_asked_read_only", id: rw, c: mountCap(snw), readOnly: true, wantRO: true},
		{name: "writer_with_ro_flag", id: rw, c: mountCap(snw, "ro"), wantRO: true},
		{name: "multi_node_reader_not_asked_read_only", id: rw, c: mountCap(mnro), wantRO: true},
		{name: "single_node_reader_not_asked_read_only", id: rw, c: mountCap(snro), wantRO: true},
		{name: "reader_only_volume_reader_mode", id: ro, c: mountCap(mnro), wantRO: true},
		{name: "reader_only_volume_single_node_writer", id: ro, c: mountCap(snw), code: codes.FailedPrecondition},
		{name: "reader_only_volume_single_writer", id: ro, c: mountCap(snsw), code: codes.FailedPrecondition},
		{name: "reader_only_volume_multi_writer", id: ro, c: mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER), code: codes.FailedPrecondition},
		{name: "block", id: rw, c: blockCap(snw), code: codes.InvalidArgument},
		{name: "no_capability", id: rw, code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mp, ok := h.publishAs(t, tc.id, tc.name, tc.c, tc.readOnly, tc.code)
			if !ok {
				return
			}
			require.Equal(t, tc.wantRO, slices.Contains(mp.Opts, "ro"), "mount options %v", mp.Opts)
			require.NotContains(t, mp.Opts, "rw")
			h.unpublish(t, tc.id, mp.Path)
		})
	}
}

func TestMountFlags(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("vol"))
	cases := []struct {
		name     string
		flags    []string
		mode     csi.VolumeCapability_AccessMode_Mode
		readOnly bool
		code     codes.Code
		wantOpts []string // must be among the mount's options
	}{
		{name: "noexec", flags: []string{"noexec"}, wantOpts: []string{"noexec"}},
		{name: "comma_list", flags: []string{"nosuid,nodev", "noatime"}, wantOpts: []string{"nosuid", "nodev", "noatime"}},
		{name: "rw_on_writer", flags: []string{"rw"}},
		{name: "bind_is_implied", flags: []string{"bind"}, wantOpts: []string{"bind"}},
		{name: "ro_and_noexec", flags: []string{"ro", "noexec"}, wantOpts: []string{"ro", "noexec"}},
		{name: "suid", flags: []string{"suid"}, code: codes.InvalidArgument},
		{name: "dev", flags: []string{"dev"}, code: codes.InvalidArgument},
		{name: "x_foo", flags: []string{"x-foo"}, code: codes.InvalidArgument},
		{name: "suid_in_comma_list", flags: []string{"noexec,suid"}, code: codes.InvalidArgument},
		{name: "rbind", flags: []string{"rbind"}, code: codes.InvalidArgument},
		{name: "remount", flags: []string{"remount"}, code: codes.InvalidArgument},
		{name: "selinux_context", flags: []string{"context=system_u:object_r:tmp_t:s0"}, code: codes.InvalidArgument},
		{name: "nul_smuggled", flags: []string{"noexec\x00suid"}, code: codes.InvalidArgument},
		{name: "rw_on_read_only_request", flags: []string{"rw"}, readOnly: true, code: codes.InvalidArgument},
		{name: "rw_on_reader_mode", flags: []string{"rw"}, mode: mnro, code: codes.InvalidArgument},
		{name: "rw_with_ro", flags: []string{"ro,rw"}, code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mode := tc.mode
			if mode == csi.VolumeCapability_AccessMode_UNKNOWN {
				mode = snw
			}
			mp, ok := h.publishAs(t, id, tc.name, mountCap(mode, tc.flags...), tc.readOnly, tc.code)
			if !ok {
				return
			}
			for _, o := range tc.wantOpts {
				require.Contains(t, mp.Opts, o)
			}
			require.NotContains(t, mp.Opts, "rw")
			h.unpublish(t, id, mp.Path)
		})
	}
}

// TestVolumeOfAnotherNode creates a volume with a driver for node-a, then
// starts a driver for node-b on the same state directory and pool: node-b
// must refuse to stage, publish or measure it.
func TestVolumeOfAnotherNode(t *testing.T) {
	base := t.TempDir()
	poolDir := filepath.Join(base, "pool")
	require.NoError(t, os.Mkdir(poolDir, 0o755))
	opts := func(node string) testutil.Options {
		return testutil.Options{
			NodeID:    node,
			StateDir:  filepath.Join(base, "state"),
			PoolSpecs: []pool.Spec{{Name: pool.DefaultName, Path: poolDir}},
		}
	}
	a := start(t, opts("node-a"))
	id := a.create(t, createReq("vol"))
	a.Driver.Stop()

	b := start(t, opts("node-b"))
	target, staging := filepath.Join(base, "target"), filepath.Join(base, "staging")
	cases := []struct {
		name string
		call func() error
	}{
		{name: "node_stage_volume", call: func() error {
			_, err := b.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw)})
			return err
		}},
		{name: "node_publish_volume", call: func() error {
			req := publishReq(id, target, mountCap(snw), false)
			req.StagingTargetPath = staging
			_, err := b.node.NodePublishVolume(t.Context(), req)
			return err
		}},
		{name: "node_publish_volume_read_only", call: func() error {
			_, err := b.node.NodePublishVolume(t.Context(), publishReq(id, target, mountCap(mnro), true))
			return err
		}},
		{name: "node_get_volume_stats", call: func() error {
			_, err := b.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireCode(t, codes.NotFound, tc.call())
		})
	}
	require.Empty(t, b.mounter.GetLog(), "node-b mounted another node's volume")
	require.NoDirExists(t, target)
	require.NoDirExists(t, staging)
	require.Empty(t, recordFiles(t, b.Layout().NodeStatesDir()))
	require.DirExists(t, b.dataDir(id))
}

func TestDeleteVolumeInUse(t *testing.T) {
	h := start(t, testutil.Options{})
	deleteVol := func(t *testing.T, id string) error {
		_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
		return err
	}

	t.Run("published", func(t *testing.T) {
		id := h.create(t, createReq("published"))
		target := filepath.Join(h.Dir, "published")
		h.publish(t, id, target)
		requireCode(t, codes.FailedPrecondition, deleteVol(t, id))
		require.DirExists(t, h.dataDir(id))
		require.FileExists(t, h.Layout().RecordPath(id))
		_, ok := h.mountAt(t, target)
		require.True(t, ok)

		h.unpublish(t, id, target)
		require.NoError(t, deleteVol(t, id))
		require.NoDirExists(t, h.dataDir(id))
		require.NoFileExists(t, h.Layout().RecordPath(id))
		require.NoFileExists(t, h.Layout().NodeStatePath(id))
	})

	t.Run("staged", func(t *testing.T) {
		id := h.create(t, createReq("staged"))
		staging := filepath.Join(h.Dir, "staging")
		stage := &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw)}
		_, err := h.node.NodeStageVolume(t.Context(), stage)
		require.NoError(t, err)
		_, err = h.node.NodeStageVolume(t.Context(), stage)
		require.NoError(t, err, "staging again at the same path is idempotent")
		// A directory volume stages without a mount: its staging never
		// counts as use, and a mount of something else at its staging
		// path is not the volume's (loop volumes: TestLoopDeleteInUse).
		require.NoError(t, os.MkdirAll(staging, 0o750))
		require.NoError(t, h.mounter.Mount("/dev/loop-fake", staging, "ext4", nil))
		_, err = h.node.NodeUnstageVolume(t.Context(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
		require.NoError(t, err)
		_, ok := h.mountAt(t, staging)
		require.True(t, ok, "unstaging a directory volume leaves another mount at its staging path alone")
		require.NoError(t, h.mounter.Unmount(staging))
		_, err = h.node.NodeStageVolume(t.Context(), stage)
		require.NoError(t, err)

		unstage := &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}
		_, err = h.node.NodeUnstageVolume(t.Context(), unstage)
		require.NoError(t, err)
		_, err = h.node.NodeUnstageVolume(t.Context(), unstage)
		require.NoError(t, err, "unstaging again is idempotent")
		require.NoError(t, deleteVol(t, id))
		require.NoDirExists(t, h.dataDir(id))
	})
}

func TestNodeStageVolume(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("vol"))
	staging := filepath.Join(h.Dir, "staging")
	_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw)})
	require.NoError(t, err)

	cases := []struct {
		name string
		req  *csi.NodeStageVolumeRequest
		code codes.Code
	}{
		{name: "same_path_cleaned", req: &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging + "/", VolumeCapability: mountCap(snw)}},
		{name: "other_path", req: &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging + "2", VolumeCapability: mountCap(snw)}, code: codes.AlreadyExists},
		{name: "unknown_volume", req: &csi.NodeStageVolumeRequest{VolumeId: volumeid.FromName("nope"), StagingTargetPath: staging, VolumeCapability: mountCap(snw)}, code: codes.NotFound},
		{name: "no_capability", req: &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging}, code: codes.InvalidArgument},
		{name: "block_capability", req: &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: blockCap(snw)}, code: codes.InvalidArgument},
		{name: "no_volume_id", req: &csi.NodeStageVolumeRequest{StagingTargetPath: staging, VolumeCapability: mountCap(snw)}, code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.node.NodeStageVolume(t.Context(), tc.req)
			requireCode(t, tc.code, err)
		})
	}
	t.Run("unstage_other_path", func(t *testing.T) {
		_, err := h.node.NodeUnstageVolume(t.Context(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging + "2"})
		require.NoError(t, err)
		// Still recorded as staged at the real path, but a directory
		// volume's staging holds no mount, so it does not block deletion.
		_, err = h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
		require.NoError(t, err)
		require.NoDirExists(t, h.dataDir(id))
	})
}

func TestNodeUnpublishVolume(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("vol"))
	target := filepath.Join(h.Dir, "target")
	h.publish(t, id, target)

	cases := []struct {
		name string
		id   string
		path string
		code codes.Code
	}{
		{name: "never_used_target", id: id, path: filepath.Join(h.Dir, "never")},
		{name: "unknown_volume", id: volumeid.FromName("nope"), path: filepath.Join(h.Dir, "never"), code: codes.NotFound},
		{name: "no_volume_id", path: target, code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: tc.id, TargetPath: tc.path})
			requireCode(t, tc.code, err)
			_, ok := h.mountAt(t, target)
			require.True(t, ok, "the real publication is untouched")
		})
	}

	t.Run("empty_dir_at_unknown_target_is_cleaned", func(t *testing.T) {
		stray := filepath.Join(h.Dir, "stray")
		require.NoError(t, os.Mkdir(stray, 0o750))
		h.unpublish(t, id, stray)
		require.NoDirExists(t, stray)
	})
	t.Run("target_removed_behind_our_back", func(t *testing.T) {
		other := filepath.Join(h.Dir, "other")
		h.publish(t, id, other)
		require.NoError(t, h.mounter.Unmount(other))
		require.NoError(t, os.Remove(other))
		h.unpublish(t, id, other)
		_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
		requireCode(t, codes.FailedPrecondition, err) // still published at target
	})
	t.Run("other_volume_at_this_target_leaves_the_mount", func(t *testing.T) {
		// Unpublishing volume B at volume A's target must not unmount A.
		other := h.create(t, createReq("other-vol"))
		_, err := h.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: other, TargetPath: target})
		requireCode(t, codes.FailedPrecondition, err)
		_, ok := h.mountAt(t, target)
		require.True(t, ok, "volume A's mount is untouched")
		require.DirExists(t, target)
	})
}

func TestNodeGetVolumeStats(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("vol"))
	target := filepath.Join(h.Dir, "target")
	elsewhere := filepath.Join(h.Dir, "elsewhere")
	require.NoError(t, os.Mkdir(elsewhere, 0o755))
	stats := func(t *testing.T, id, path string) (*csi.NodeGetVolumeStatsResponse, error) {
		return h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: path})
	}

	t.Run("not_published", func(t *testing.T) {
		_, err := stats(t, id, target)
		requireCode(t, codes.NotFound, err)
	})

	h.publish(t, id, target)
	staging := filepath.Join(h.Dir, "staging")
	require.NoError(t, os.Mkdir(staging, 0o755))
	_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw)})
	require.NoError(t, err)

	cases := []struct {
		name string
		id   string
		path string
		code codes.Code
	}{
		{name: "published_path", id: id, path: target},
		{name: "published_path_unclean", id: id, path: target + "/."},
		{name: "staging_path", id: id, path: staging},
		{name: "other_existing_dir", id: id, path: elsewhere, code: codes.NotFound},
		{name: "the_data_dir", id: id, path: h.dataDir(id), code: codes.NotFound},
		{name: "missing_path", id: id, path: filepath.Join(h.Dir, "missing"), code: codes.NotFound},
		{name: "unknown_volume_at_published_path", id: volumeid.FromName("nope"), path: target, code: codes.NotFound},
		{name: "no_volume_path", id: id, code: codes.InvalidArgument},
		{name: "no_volume_id", path: target, code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := stats(t, tc.id, tc.path)
			requireCode(t, tc.code, err)
			if tc.code != codes.OK {
				return
			}
			units := map[csi.VolumeUsage_Unit]*csi.VolumeUsage{}
			for _, u := range resp.GetUsage() {
				units[u.GetUnit()] = u
			}
			for _, unit := range []csi.VolumeUsage_Unit{csi.VolumeUsage_BYTES, csi.VolumeUsage_INODES} {
				u := units[unit]
				require.NotNil(t, u, "unit %s", unit)
				require.Positive(t, u.GetTotal(), "unit %s", unit)
				require.Positive(t, u.GetAvailable(), "unit %s", unit)
				require.Positive(t, u.GetUsed(), "unit %s", unit)
				require.LessOrEqual(t, u.GetAvailable()+u.GetUsed(), u.GetTotal(), "unit %s", unit)
			}
		})
	}

	t.Run("after_unpublish", func(t *testing.T) {
		h.unpublish(t, id, target)
		_, err := stats(t, id, target)
		requireCode(t, codes.NotFound, err)
	})
}

// TestPlantedSymlinks plants links inside a volume that point outside it:
// stats still measure the pool, and DeleteVolume removes the links, never
// what they point at.
func TestPlantedSymlinks(t *testing.T) {
	// A pool that limits nothing: the stats of its directory volumes
	// describe the pool's filesystem, read without following the links.
	unlimited := quota.NewFake()
	unlimited.Method = quota.None
	h := start(t, testutil.Options{Quota: unlimited})
	outside := t.TempDir()
	keep := filepath.Join(outside, "keep")
	require.NoError(t, os.WriteFile(keep, []byte("precious"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(outside, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "sub", "file"), []byte("also precious"), 0o644))
	outsideBefore := snapshotTree(t, outside)
	plantSentinels(t, h.Dir)
	sentinels := func() map[string]string {
		s := snapshotTree(t, filepath.Join(h.Dir, "etc"))
		for k, v := range snapshotTree(t, filepath.Join(h.Dir, "x")) {
			s[k] = v
		}
		return s
	}
	sentinelsBefore := sentinels()

	var poolFS unix.Statfs_t
	require.NoError(t, unix.Statfs(h.poolPath(), &poolFS))

	req := createReq("vol")
	req.Parameters = map[string]string{"sizeLimit": "optional"}
	id := h.create(t, req)
	data := h.dataDir(id)
	require.NoError(t, os.Symlink(outside, filepath.Join(data, "to-outside-dir")))
	require.NoError(t, os.Symlink(keep, filepath.Join(data, "to-outside-file")))
	require.NoError(t, os.Symlink("../../..", filepath.Join(data, "up")))
	require.NoError(t, os.Symlink("/", filepath.Join(data, "root")))
	require.NoError(t, os.Symlink("/proc", filepath.Join(data, "proc")))
	require.NoError(t, os.MkdirAll(filepath.Join(data, "nested", "deeper"), 0o755))
	require.NoError(t, os.Symlink(outside, filepath.Join(data, "nested", "deeper", "to-outside")))
	require.NoError(t, os.Link(keep, filepath.Join(data, "hardlink-to-outside")))

	target := filepath.Join(h.Dir, "target")
	h.publish(t, id, target)
	stats, err := h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	require.NoError(t, err)
	usage := map[csi.VolumeUsage_Unit]*csi.VolumeUsage{}
	for _, u := range stats.GetUsage() {
		usage[u.GetUnit()] = u
	}
	require.Equal(t, int64(poolFS.Blocks)*int64(poolFS.Bsize), usage[csi.VolumeUsage_BYTES].GetTotal(), "stats must describe the pool's filesystem")
	require.Equal(t, int64(poolFS.Files), usage[csi.VolumeUsage_INODES].GetTotal())

	_, err = h.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	require.NoError(t, err)
	_, err = h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	require.NoDirExists(t, data)
	require.Equal(t, outsideBefore, snapshotTree(t, outside), "DeleteVolume followed a planted link")
	require.Equal(t, sentinelsBefore, sentinels())
	b, err := os.ReadFile(keep)
	require.NoError(t, err)
	require.Equal(t, "precious", string(b))
	require.DirExists(t, h.poolPath())
	require.DirExists(t, h.StateDir)
}

// TestDataDirReplacedBySymlink covers a volume's data directory itself
// swapped for a link to elsewhere: hostvol must neither mount, measure nor
// delete what the link points at.
func TestDataDirReplacedBySymlink(t *testing.T) {
	h := start(t, testutil.Options{})
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "keep"), []byte("precious"), 0o644))
	before := snapshotTree(t, outside)

	id := h.create(t, createReq("vol"))
	require.NoError(t, os.Remove(h.dataDir(id)))
	require.NoError(t, os.Symlink(outside, h.dataDir(id)))

	target := filepath.Join(h.Dir, "target")
	_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, target, mountCap(snw), false))
	require.Error(t, err)
	require.Empty(t, h.mounter.GetLog(), "nothing may be mounted from a symlinked data directory")

	_, err = h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	_, err = os.Lstat(h.dataDir(id))
	require.True(t, os.IsNotExist(err), "the planted link itself is removed")
	require.Equal(t, before, snapshotTree(t, outside))
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
