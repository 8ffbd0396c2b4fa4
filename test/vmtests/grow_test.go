package vmtests

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const mib = int64(1) << 20

// TestOnlineExt4Grow grows a published ext4 loop volume while it is
// mounted: ControllerExpandVolume grows the image, NodeExpandVolume the
// loop device and the filesystem (resize2fs on a mounted ext4 needs
// CAP_SYS_RESOURCE, which some hosts lack: hence the VM).
func TestOnlineExt4Grow(t *testing.T) { testOnlineGrow(t, fsutil.Ext4, 64*mib, 128*mib) }

// TestOnlineXFSGrow is the same for XFS (xfs_growfs on the mount point).
func TestOnlineXFSGrow(t *testing.T) { testOnlineGrow(t, fsutil.XFS, 300*mib, 400*mib) }

func testOnlineGrow(t *testing.T, fsType string, from, to int64) {
	RequireVM(t)
	testutil.RequireRoot(t)
	ctx := t.Context()

	env := startDriver(t)
	c := env.Client

	vc := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	created, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:               "grow-" + fsType,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: from},
		VolumeCapabilities: []*csi.VolumeCapability{vc},
		Parameters:         map[string]string{"type": "loop"},
	})
	require.NoError(t, err)
	id := created.GetVolume().GetVolumeId()
	require.Equal(t, from, created.GetVolume().GetCapacityBytes())

	staging, target := filepath.Join(env.Dir, "staging"), filepath.Join(env.Dir, "target")
	_, err = c.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: vc})
	require.NoError(t, err)
	_, err = c.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: vc})
	require.NoError(t, err)
	logLoopDevice(t, env.Pools[0].ImagePath(id))

	before := statfsTotal(t, target)
	t.Logf("%s: %d MiB volume, filesystem size %.1f MiB", fsType, from/mib, float64(before)/float64(mib))
	require.LessOrEqual(t, before, from)

	data := make([]byte, 4*mib)
	_, _ = rand.Read(data)
	want := sha256.Sum256(data)
	writeSynced(t, filepath.Join(target, "data"), data)

	expanded, err := c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
		VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: to}, VolumeCapability: vc,
	})
	require.NoError(t, err)
	require.True(t, expanded.GetNodeExpansionRequired(), "a loop volume's filesystem grows on the node")
	require.Equal(t, to, expanded.GetCapacityBytes())
	require.Equal(t, before, statfsTotal(t, target), "the filesystem must not grow before NodeExpandVolume")

	grown, err := c.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{
		VolumeId: id, VolumePath: target, CapacityRange: &csi.CapacityRange{RequiredBytes: to}, VolumeCapability: vc,
	})
	require.NoError(t, err, "online grow of mounted %s", fsType)
	require.Equal(t, to, grown.GetCapacityBytes())

	after := statfsTotal(t, target)
	t.Logf("%s: grown to %d MiB, filesystem size %.1f MiB", fsType, to/mib, float64(after)/float64(mib))
	require.LessOrEqual(t, after, to)
	// The fixed overhead stays (XFS: a 64 MiB log); the added space comes
	// with a little metadata (ext4: inode tables, bitmaps).
	require.GreaterOrEqual(t, after-before, (to-from)*85/100, "filesystem growth from %d to %d bytes", from, to)
	require.Equal(t, after, statfsTotal(t, staging), "staging mount and published bind mount are one filesystem")

	got, err := os.ReadFile(filepath.Join(target, "data"))
	require.NoError(t, err)
	require.Equal(t, want, sha256.Sum256(got), "data written before the grow is intact")

	// The new space is usable: reserve more than the old filesystem held.
	big := filepath.Join(target, "big")
	f, err := os.Create(big)
	require.NoError(t, err)
	require.NoError(t, unix.Fallocate(int(f.Fd()), 0, 0, from+8*mib), "allocate %d MiB in the grown filesystem", (from+8*mib)/mib)
	require.NoError(t, f.Close())
	require.NoError(t, os.Remove(big))

	again, err := c.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target, VolumeCapability: vc})
	require.NoError(t, err, "NodeExpandVolume again is idempotent")
	require.Equal(t, to, again.GetCapacityBytes())

	stats, err := c.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	require.NoError(t, err)
	for _, u := range stats.GetUsage() {
		if u.GetUnit() == csi.VolumeUsage_BYTES {
			require.Equal(t, after, u.GetTotal(), "NodeGetVolumeStats total bytes")
		}
	}

	_, err = c.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	require.NoError(t, err)
	_, err = c.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	require.NoError(t, err)
	require.Empty(t, testutil.MountsUnder(t, env.Dir))
	checkFilesystem(t, fsType, env.Pools[0].ImagePath(id))
	_, err = c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	_, err = os.Stat(env.Pools[0].ImagePath(id))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// startDriver starts hostvol with the real mounter, loop manager and
// filesystem tools, on a pool that is an ext4 filesystem of its own, as on
// a node. (TMPDIR is a tmpfs, which has no direct I/O before Linux 6.6:
// the loop devices would fall back to buffered I/O.)
func startDriver(t *testing.T) *testutil.Env {
	t.Helper()
	pfs := testutil.NewPoolFS(t, t.TempDir(), testutil.PoolFSOptions{Size: 1 << 30})
	opts := testutil.RealOptions()
	opts.PoolSpecs = []pool.Spec{{Name: pool.DefaultName, Path: pfs.Path}}
	env := testutil.StartDriver(t, opts)
	testutil.CleanupUnder(t, env.Dir)
	return env
}

// statfsTotal is the filesystem size at path, as df shows it.
func statfsTotal(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(path, &st))
	return int64(st.Blocks) * st.Bsize
}

func writeSynced(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	_, err = f.Write(data)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
}

// checkFilesystem checks the unmounted filesystem in an image, read-only.
func checkFilesystem(t *testing.T, fsType, image string) {
	t.Helper()
	switch fsType {
	case fsutil.XFS:
		testutil.Run(t, "xfs_repair", "-n", "-f", image)
	default:
		testutil.Run(t, "e2fsck", "-f", "-n", image)
	}
}

// logLoopDevice logs the loop device backed by image and whether it does
// direct I/O.
func logLoopDevice(t *testing.T, image string) {
	t.Helper()
	loops, err := testutil.AttachedLoops()
	require.NoError(t, err)
	for dev, file := range loops {
		if file == image {
			dio, _ := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "dio"))
			t.Logf("%s is on %s, direct I/O %s", filepath.Base(image), dev, bytes.TrimSpace(dio))
			return
		}
	}
	t.Errorf("no loop device is backed by %s", image)
}
