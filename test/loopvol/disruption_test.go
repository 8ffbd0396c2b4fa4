package loopvol

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// What real nodes do to hostvol: reboots that take every mount and loop
// device, mounts removed by someone else, staging paths reused, symlinks
// and files where targets should be.

// dirKind is a directory volume on a plain pool (no size limit there).
var dirKind = testutil.DirKind

// requireGone checks that nothing of the volume is mounted or attached and
// that its target path is gone.
func (v *vol) requireGone() {
	v.T.Helper()
	require.Empty(v.T, testutil.MountsUnder(v.T, filepath.Dir(v.Target)), "mounts of %s", v.Name)
	if v.Kind.HasImage() {
		require.Empty(v.T, v.device(), "loop device of %s", v.Name)
	}
	_, err := os.Lstat(v.Target)
	require.ErrorIs(v.T, err, os.ErrNotExist, "target of %s removed", v.Name)
}

// TestUnpublishUnstageAfterReboot: after a reboot (every mount and loop
// device gone, the driver restarted) the kubelet unpublishes and unstages
// what it had: each call succeeds, removes the empty target, forgets the
// record, and so does its retry; the volume can then be deleted. The same
// holds when the mounts were removed by someone else under a running
// driver.
func TestUnpublishUnstageAfterReboot(t *testing.T) {
	testutil.RequireRoot(t)
	for _, k := range []testutil.Kind{dirKind, ext4Kind, xfsKind, blockKind} {
		for _, how := range []string{"reboot", "unmounted_by_hand"} {
			t.Run(k.Name+"/"+how, func(t *testing.T) {
				n, dir, v := setupVol(t, k, "gone")
				v.Up()
				if how == "reboot" {
					n.Stop()
				}
				for _, m := range testutil.MountsUnder(t, filepath.Join(dir, "mnt")) {
					require.NoError(t, unix.Unmount(m, 0), "unmount %s", m)
				}
				if k.HasImage() && how == "reboot" {
					require.NoError(t, loop.New().Detach(v.device()))
				}
				if how == "reboot" {
					n.Start()
				}
				for _, op := range []string{"unpublish", "unpublish", "unstage", "unstage"} {
					require.NoError(t, v.Do(op), "%s of a path that is no longer mounted", op)
				}
				v.requireGone()
				require.NoError(t, v.DeleteErr())
			})
		}
	}
}

// TestInlineUnpublishAfterReboot: the pod of an inline volume is deleted
// while the node reboots; the kubelet's unpublish afterwards succeeds and
// deletes the volume, for a loop volume and a directory volume.
func TestInlineUnpublishAfterReboot(t *testing.T) {
	for _, typ := range []string{"loop", "dir"} {
		t.Run(typ, func(t *testing.T) {
			n, dir := setupOn(t, testutil.BtrfsPool(t, 256<<20))
			v := newInline(t, n, dir, "rebooted", map[string]string{"type": typ, "size": "64Mi"})
			v.Publish()
			require.NoError(t, os.WriteFile(filepath.Join(v.Target, "data"), []byte("x"), 0o644))
			n.Stop()
			testutil.ReleaseUnder(t, dir)
			n.Start()
			v.Unpublish()
			v.Unpublish()
			requirePoolEmpty(t, n)
			_, err := os.Lstat(v.Target)
			require.ErrorIs(t, err, os.ErrNotExist)
		})
	}
}

// TestStageOntoAnotherVolume: B's stage at the staging path where A is
// mounted fails (ALREADY_EXISTS) and leaves nothing of B: no loop device, no
// record of that path, so B's publish is refused (B is not staged) instead
// of showing A's filesystem, and B's unstage there leaves A mounted.
func TestStageOntoAnotherVolume(t *testing.T) {
	_, dir, a, b := setupPair(t)
	a.Up()
	want := a.writeData()

	b.Staging = a.Staging
	requireCode(t, codes.AlreadyExists, b.StageErr(), "stage B where A is mounted")
	require.Empty(t, b.device(), "a refused stage leaves no loop device")
	requireCode(t, codes.FailedPrecondition, b.Do("publish"), "publish B, which is not staged")
	require.NoError(t, b.Do("unstage"), "unstage B at A's staging path: nothing of B there")
	a.checkData(a.Target, want)
	require.Contains(t, testutil.MountsUnder(t, a.Staging), a.Staging, "A is still staged")

	a.Down()
	b.Staging = filepath.Join(dir, "mnt", b.Name, "staging")
	b.Up()
	b.Down()
	require.NoError(t, a.DeleteErr())
	require.NoError(t, b.DeleteErr())
}

// TestStaleStagingRecord: B's record names a staging path whose mount is
// gone (unmounted, detached) and where A is now mounted; B stages at a new
// path, which must succeed: A's mount there is not B's staging.
func TestStaleStagingRecord(t *testing.T) {
	_, dir, a, b := setupPair(t)
	b.Stage()
	require.NoError(t, unix.Unmount(b.Staging, 0))
	require.NoError(t, loop.New().Detach(b.device()))
	a.Staging = b.Staging
	a.Stage()
	b.Staging = filepath.Join(dir, "mnt", b.Name, "staging2")
	b.Stage()
	b.Publish()
	b.writeData()
	b.Down()
	a.Unstage()
	require.NoError(t, a.DeleteErr())
	require.NoError(t, b.DeleteErr())
}

// TestSymlinkedPaths: a target or staging path that is a symlink is
// INVALID_ARGUMENT and nothing lands where it points (a directory, or a
// file a dangling link would create); paths at, in or above the pool and
// the state directory are INVALID_ARGUMENT; an unpublish of a symlink
// leaves the mount it points to alone.
func TestSymlinkedPaths(t *testing.T) {
	testutil.RequireRoot(t)
	for _, k := range []testutil.Kind{dirKind, ext4Kind, blockKind} {
		t.Run(k.Name, func(t *testing.T) {
			n, dir, v := setupVol(t, k, "link")
			elsewhere := filepath.Join(dir, "elsewhere")
			require.NoError(t, os.MkdirAll(elsewhere, 0o755))

			if k.FSType != "" {
				realStaging := v.Staging
				require.NoError(t, os.Remove(v.Staging))
				require.NoError(t, os.Symlink(elsewhere, v.Staging))
				requireCode(t, codes.InvalidArgument, v.StageErr(), "stage at a symlink")
				require.Empty(t, testutil.MountsUnder(t, elsewhere), "nothing mounted where the staging link points")
				require.Empty(t, v.device(), "a refused stage leaves no loop device")
				require.NoError(t, os.Remove(v.Staging))
				v.Staging = realStaging
				require.NoError(t, os.MkdirAll(v.Staging, 0o750))
			}
			v.Stage()

			require.NoError(t, os.MkdirAll(filepath.Dir(v.Target), 0o750))
			dest := elsewhere
			if k.Block {
				dest = filepath.Join(elsewhere, "device") // dangling: publish would create it
			}
			require.NoError(t, os.Symlink(dest, v.Target))
			requireCode(t, codes.InvalidArgument, v.Do("publish"), "publish at a symlink")
			require.Empty(t, testutil.MountsUnder(t, elsewhere), "nothing mounted where the target link points")
			_, err := os.Lstat(filepath.Join(elsewhere, "device"))
			require.ErrorIs(t, err, os.ErrNotExist, "no file created through a dangling link")
			require.NoError(t, os.Remove(v.Target))

			for name, p := range map[string]string{
				"inside the pool":      n.Layout().DataDir("x"),
				"the pool":             n.PoolPath,
				"above the pool":       filepath.Dir(n.PoolPath),
				"inside the state dir": n.Layout().NodeStatePath("x"),
			} {
				_, err := n.Client.NodePublishVolume(testutil.Ctx(t), &csi.NodePublishVolumeRequest{VolumeId: v.ID, StagingTargetPath: v.Staging, TargetPath: p, VolumeCapability: v.Kind.Capability()})
				requireCode(t, codes.InvalidArgument, err, "publish "+name)
				if k.FSType != "" && name != "above the pool" {
					_, err := n.Client.NodeStageVolume(testutil.Ctx(t), &csi.NodeStageVolumeRequest{VolumeId: v.ID, StagingTargetPath: p, VolumeCapability: v.Kind.Capability()})
					requireCode(t, codes.InvalidArgument, err, "stage "+name)
				}
			}

			// A link to a real publish: its unpublish must not unmount it.
			v.Publish()
			link := filepath.Join(dir, "mnt", v.Name, "link")
			require.NoError(t, os.Symlink(v.Target, link))
			_, err = n.Client.NodeUnpublishVolume(testutil.Ctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: v.ID, TargetPath: link})
			require.NoError(t, err, "unpublish of a symlink: nothing of the volume is mounted on the link itself")
			require.Contains(t, testutil.MountsUnder(t, v.Target), v.Target, "the publish the link points to stays")
			v.Down()
			require.NoError(t, v.DeleteErr())
		})
	}
}

// TestUnpublishLeavesWhatItDidNotMake: an unpublish removes only an empty
// directory (for raw block, an empty file): a regular file at the target of
// an inline volume that is gone, or a directory holding files, stays with
// its content.
func TestUnpublishLeavesWhatItDidNotMake(t *testing.T) {
	n, dir := setup(t)
	gone := newInline(t, n, dir, "gone", map[string]string{"type": "loop"})
	require.NoError(t, os.MkdirAll(filepath.Dir(gone.Target), 0o750))
	require.NoError(t, os.WriteFile(gone.Target, []byte("not hostvol's"), 0o644))
	gone.Unpublish()
	b, err := os.ReadFile(gone.Target)
	require.NoError(t, err, "a file at the target of an unknown handle stays")
	require.Equal(t, "not hostvol's", string(b))

	v := create(t, n, dir, dirKind, volName(t, "d"), 0)
	v.Up()
	require.NoError(t, unix.Unmount(v.Target, 0))
	require.NoError(t, os.WriteFile(filepath.Join(v.Target, "kept"), []byte("x"), 0o644))
	v.Unpublish()
	require.FileExists(t, filepath.Join(v.Target, "kept"), "a directory with files in it stays")
	require.NoError(t, os.RemoveAll(v.Target))
	v.Unstage()
	require.NoError(t, v.DeleteErr())
}

// TestStageLeftoversDetached: a loop device attached to a volume's image
// with no staging recorded (a stage killed after its attach) is detached
// by the unstage the kubelet sends, and by a driver restart.
func TestStageLeftoversDetached(t *testing.T) {
	n, dir := setup(t)
	for _, k := range []testutil.Kind{ext4Kind, blockKind} {
		v := create(t, n, dir, k, volName(t, k.Name), 0)
		attach := func() {
			f, err := os.OpenFile(v.image(), os.O_RDWR, 0)
			require.NoError(t, err)
			_, err = loop.New().Attach(f, loop.AttachOptions{})
			f.Close()
			require.NoError(t, err)
			v.requireOneLoop()
		}
		attach()
		v.Unstage()
		require.Empty(t, v.device(), "unstage detaches the image's device without a record")

		attach()
		n.Stop()
		n.Start()
		require.Empty(t, v.device(), "start-up detaches the image's device no staging holds")

		// A device that is mounted (a stage killed after its mount) is the
		// retry's: start-up leaves it, the stage adopts it.
		v.Up()
		n.Stop()
		n.Start()
		v.requireOneLoop()
		v.Down()
		require.NoError(t, v.DeleteErr())
	}
}

// TestSharedPoolLease: two nodes share a pool. A loop filesystem with a
// multi-node access mode is refused; one staged on node A is refused on
// node B (FAILED_PRECONDITION) until A unstages it, and DeleteVolume on A
// while B has it staged is refused; raw block created for several nodes
// (allowBlockRWX) stages on both.
func TestSharedPoolLease(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	testutil.CleanupUnder(t, dir)
	shared := filepath.Join(dir, "shared")
	require.NoError(t, os.MkdirAll(shared, 0o755))
	start := func(node string) *testutil.Client {
		o := testutil.RealOptions()
		o.NodeID = node
		o.StateDir = filepath.Join(dir, node, "state")
		o.PoolSpecs = []pool.Spec{{Name: pool.DefaultName, Path: shared, Shared: true}}
		return testutil.StartDriver(t, o).Client
	}
	a, b := start("node-a"), start("node-b")

	for _, mode := range []csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY} {
		c := ext4Kind.Capability()
		c.AccessMode.Mode = mode
		_, err := a.CreateVolume(testutil.Ctx(t), &csi.CreateVolumeRequest{Name: "rwx-" + mode.String(), VolumeCapabilities: []*csi.VolumeCapability{c}, Parameters: ext4Kind.Params, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
		requireCode(t, codes.InvalidArgument, err, "a loop filesystem in a shared pool with "+mode.String())
	}

	resp, err := a.CreateVolume(testutil.Ctx(t), &csi.CreateVolumeRequest{Name: "rwo", VolumeCapabilities: []*csi.VolumeCapability{ext4Kind.Capability()}, Parameters: ext4Kind.Params, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
	require.NoError(t, err)
	id := resp.GetVolume().GetVolumeId()
	onA := &vol{Volume: &testutil.Volume{T: t, Src: a, Kind: ext4Kind, Name: "rwo-a", ID: id, Staging: filepath.Join(dir, "a", "staging"), Target: filepath.Join(dir, "a", "target")}}
	onB := &vol{Volume: &testutil.Volume{T: t, Src: b, Kind: ext4Kind, Name: "rwo-b", ID: id, Staging: filepath.Join(dir, "b", "staging"), Target: filepath.Join(dir, "b", "target")}}
	onA.Up()
	requireCode(t, codes.FailedPrecondition, onB.StageErr(), "stage on B while A has the image attached")
	require.NoFileExists(t, filepath.Join(onB.Staging, "lost+found"), "nothing mounted on B")
	onA.Down()
	onB.Up()
	_, err = a.DeleteVolume(testutil.Ctx(t), &csi.DeleteVolumeRequest{VolumeId: id})
	requireCode(t, codes.FailedPrecondition, err, "DeleteVolume on A while B has it staged")
	onB.Down()
	_, err = a.DeleteVolume(testutil.Ctx(t), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)

	c := blockKind.Capability()
	c.AccessMode.Mode = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	resp, err = a.CreateVolume(testutil.Ctx(t), &csi.CreateVolumeRequest{Name: "rwx-block", VolumeCapabilities: []*csi.VolumeCapability{c}, Parameters: map[string]string{"allowBlockRWX": "true"}, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
	require.NoError(t, err)
	id = resp.GetVolume().GetVolumeId()
	for _, cl := range []*testutil.Client{a, b} {
		_, err := cl.NodeStageVolume(testutil.Ctx(t), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: filepath.Join(dir, "blk-staging"), VolumeCapability: c})
		require.NoError(t, err, "raw block for several nodes stages on each")
	}
	for _, cl := range []*testutil.Client{a, b} {
		_, err := cl.NodeUnstageVolume(testutil.Ctx(t), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: filepath.Join(dir, "blk-staging")})
		require.NoError(t, err)
	}
	_, err = a.DeleteVolume(testutil.Ctx(t), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)
}

// TestStatsOfUnmountedPath: after the mounts of a loop volume went (a
// reboot, an unmount by hand), NodeGetVolumeStats of its recorded paths
// is NOT_FOUND, not the figures of the filesystem underneath.
func TestStatsOfUnmountedPath(t *testing.T) {
	n, _, v := setupVol(t, ext4Kind, "stats")
	v.Up()
	require.NoError(t, unix.Unmount(v.Target, 0))
	_, err := n.Client.NodeGetVolumeStats(testutil.Ctx(t), &csi.NodeGetVolumeStatsRequest{VolumeId: v.ID, VolumePath: v.Target})
	requireCode(t, codes.NotFound, err, "stats of a target that is no longer mounted")
	v.Stats(v.Staging)
	v.Down()
	require.NoError(t, v.DeleteErr())
}
