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
var dirKind = kind{name: "dir", params: map[string]string{"sizeLimit": "optional"}, size: 64 * mib}

func (k kind) hasImage() bool { return k.block || k.fsType != "" }

func (v *vol) err(op string) error {
	var err error
	switch op {
	case "stage":
		err = v.stageErr()
	case "unstage":
		_, err = v.n.Client.NodeUnstageVolume(rpcCtx(v.t), &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
	case "publish":
		_, err = v.n.Client.NodePublishVolume(rpcCtx(v.t), &csi.NodePublishVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: v.target, VolumeCapability: v.k.capability()})
	case "unpublish":
		_, err = v.n.Client.NodeUnpublishVolume(rpcCtx(v.t), &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target})
	default:
		v.t.Fatalf("unknown op %q", op)
	}
	return err
}

// requireGone checks that nothing of the volume is mounted or attached and
// that its target path is gone.
func (v *vol) requireGone() {
	v.t.Helper()
	require.Empty(v.t, testutil.MountsUnder(v.t, filepath.Dir(v.target)), "mounts of %s", v.name)
	if v.k.hasImage() {
		require.Empty(v.t, v.device(), "loop device of %s", v.name)
	}
	_, err := os.Lstat(v.target)
	require.ErrorIs(v.t, err, os.ErrNotExist, "target of %s removed", v.name)
}

// TestUnpublishUnstageAfterReboot: after a reboot (every mount and loop
// device gone, the driver restarted) the kubelet unpublishes and unstages
// what it had: each call succeeds, removes the empty target, forgets the
// record, and so does its retry; the volume can then be deleted. The same
// holds when the mounts were removed by someone else under a running
// driver.
func TestUnpublishUnstageAfterReboot(t *testing.T) {
	testutil.RequireRoot(t)
	for _, k := range []kind{dirKind, ext4Kind, xfsKind, blockKind} {
		for _, how := range []string{"reboot", "unmounted_by_hand"} {
			t.Run(k.name+"/"+how, func(t *testing.T) {
				n, dir := setup(t)
				v := create(t, n, dir, k, volName(t, "gone"), 0)
				v.up()
				if how == "reboot" {
					n.Stop()
				}
				for _, m := range testutil.MountsUnder(t, filepath.Join(dir, "mnt")) {
					require.NoError(t, unix.Unmount(m, 0), "unmount %s", m)
				}
				if k.hasImage() && how == "reboot" {
					require.NoError(t, loop.New().Detach(v.device()))
				}
				if how == "reboot" {
					n.Start()
				}
				for _, op := range []string{"unpublish", "unpublish", "unstage", "unstage"} {
					require.NoError(t, v.err(op), "%s of a path that is no longer mounted", op)
				}
				v.requireGone()
				require.NoError(t, v.deleteErr())
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
			v.publish()
			require.NoError(t, os.WriteFile(filepath.Join(v.target, "data"), []byte("x"), 0o644))
			n.Stop()
			ReleaseUnder(t, dir)
			n.Start()
			v.unpublish()
			v.unpublish()
			requirePoolEmpty(t, n)
			_, err := os.Lstat(v.target)
			require.ErrorIs(t, err, os.ErrNotExist)
		})
	}
}

// TestStageOntoAnotherVolume: B's stage at the staging path where A is
// mounted fails (ALREADY_EXISTS) and leaves nothing of B: no loop device, no
// record of that path, so B's publish is refused (B is not staged) instead
// of showing A's filesystem, and B's unstage there leaves A mounted.
func TestStageOntoAnotherVolume(t *testing.T) {
	n, dir := setup(t)
	a := create(t, n, dir, ext4Kind, volName(t, "a"), 0)
	b := create(t, n, dir, ext4Kind, volName(t, "b"), 0)
	a.up()
	want := a.writeData()

	b.staging = a.staging
	requireCode(t, codes.AlreadyExists, b.stageErr(), "stage B where A is mounted")
	require.Empty(t, b.device(), "a refused stage leaves no loop device")
	requireCode(t, codes.FailedPrecondition, b.err("publish"), "publish B, which is not staged")
	require.NoError(t, b.err("unstage"), "unstage B at A's staging path: nothing of B there")
	a.checkData(a.target, want)
	require.Contains(t, testutil.MountsUnder(t, a.staging), a.staging, "A is still staged")

	a.down()
	b.staging = filepath.Join(dir, "mnt", b.name, "staging")
	b.up()
	b.down()
	require.NoError(t, a.deleteErr())
	require.NoError(t, b.deleteErr())
}

// TestStaleStagingRecord: B's record names a staging path whose mount is
// gone (unmounted, detached) and where A is now mounted; B stages at a new
// path, which must succeed: A's mount there is not B's staging.
func TestStaleStagingRecord(t *testing.T) {
	n, dir := setup(t)
	a := create(t, n, dir, ext4Kind, volName(t, "a"), 0)
	b := create(t, n, dir, ext4Kind, volName(t, "b"), 0)
	b.stage()
	require.NoError(t, unix.Unmount(b.staging, 0))
	require.NoError(t, loop.New().Detach(b.device()))
	a.staging = b.staging
	a.stage()
	b.staging = filepath.Join(dir, "mnt", b.name, "staging2")
	b.stage()
	b.publish()
	b.writeData()
	b.down()
	a.unstage()
	require.NoError(t, a.deleteErr())
	require.NoError(t, b.deleteErr())
}

// TestSymlinkedPaths: a target or staging path that is a symlink is
// INVALID_ARGUMENT and nothing lands where it points (a directory, or a
// file a dangling link would create); paths at, in or above the pool and
// the state directory are INVALID_ARGUMENT; an unpublish of a symlink
// leaves the mount it points to alone.
func TestSymlinkedPaths(t *testing.T) {
	testutil.RequireRoot(t)
	for _, k := range []kind{dirKind, ext4Kind, blockKind} {
		t.Run(k.name, func(t *testing.T) {
			n, dir := setup(t)
			v := create(t, n, dir, k, volName(t, "link"), 0)
			elsewhere := filepath.Join(dir, "elsewhere")
			require.NoError(t, os.MkdirAll(elsewhere, 0o755))

			if k.fsType != "" {
				realStaging := v.staging
				require.NoError(t, os.Remove(v.staging))
				require.NoError(t, os.Symlink(elsewhere, v.staging))
				requireCode(t, codes.InvalidArgument, v.stageErr(), "stage at a symlink")
				require.Empty(t, testutil.MountsUnder(t, elsewhere), "nothing mounted where the staging link points")
				require.Empty(t, v.device(), "a refused stage leaves no loop device")
				require.NoError(t, os.Remove(v.staging))
				v.staging = realStaging
				require.NoError(t, os.MkdirAll(v.staging, 0o750))
			}
			v.stage()

			require.NoError(t, os.MkdirAll(filepath.Dir(v.target), 0o750))
			dest := elsewhere
			if k.block {
				dest = filepath.Join(elsewhere, "device") // dangling: publish would create it
			}
			require.NoError(t, os.Symlink(dest, v.target))
			requireCode(t, codes.InvalidArgument, v.err("publish"), "publish at a symlink")
			require.Empty(t, testutil.MountsUnder(t, elsewhere), "nothing mounted where the target link points")
			_, err := os.Lstat(filepath.Join(elsewhere, "device"))
			require.ErrorIs(t, err, os.ErrNotExist, "no file created through a dangling link")
			require.NoError(t, os.Remove(v.target))

			for name, p := range map[string]string{
				"inside the pool":      filepath.Join(n.PoolPath, "volumes", "x"),
				"the pool":             n.PoolPath,
				"above the pool":       filepath.Dir(n.PoolPath),
				"inside the state dir": filepath.Join(n.StateDir, "node", "x"),
			} {
				_, err := n.Client.NodePublishVolume(rpcCtx(t), &csi.NodePublishVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: p, VolumeCapability: v.k.capability()})
				requireCode(t, codes.InvalidArgument, err, "publish "+name)
				if k.fsType != "" && name != "above the pool" {
					_, err := n.Client.NodeStageVolume(rpcCtx(t), &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: p, VolumeCapability: v.k.capability()})
					requireCode(t, codes.InvalidArgument, err, "stage "+name)
				}
			}

			// A link to a real publish: its unpublish must not unmount it.
			v.publish()
			link := filepath.Join(dir, "mnt", v.name, "link")
			require.NoError(t, os.Symlink(v.target, link))
			_, err = n.Client.NodeUnpublishVolume(rpcCtx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: link})
			require.NoError(t, err, "unpublish of a symlink: nothing of the volume is mounted on the link itself")
			require.Contains(t, testutil.MountsUnder(t, v.target), v.target, "the publish the link points to stays")
			v.down()
			require.NoError(t, v.deleteErr())
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
	require.NoError(t, os.MkdirAll(filepath.Dir(gone.target), 0o750))
	require.NoError(t, os.WriteFile(gone.target, []byte("not hostvol's"), 0o644))
	gone.unpublish()
	b, err := os.ReadFile(gone.target)
	require.NoError(t, err, "a file at the target of an unknown handle stays")
	require.Equal(t, "not hostvol's", string(b))

	v := create(t, n, dir, dirKind, volName(t, "d"), 0)
	v.up()
	require.NoError(t, unix.Unmount(v.target, 0))
	require.NoError(t, os.WriteFile(filepath.Join(v.target, "kept"), []byte("x"), 0o644))
	v.unpublish()
	require.FileExists(t, filepath.Join(v.target, "kept"), "a directory with files in it stays")
	require.NoError(t, os.RemoveAll(v.target))
	v.unstage()
	require.NoError(t, v.deleteErr())
}

// TestStageLeftoversDetached: a loop device attached to a volume's image
// with no staging recorded (a stage killed after its attach) is detached
// by the unstage the kubelet sends, and by a driver restart.
func TestStageLeftoversDetached(t *testing.T) {
	n, dir := setup(t)
	for _, k := range []kind{ext4Kind, blockKind} {
		v := create(t, n, dir, k, volName(t, k.name), 0)
		attach := func() {
			f, err := os.OpenFile(v.image(), os.O_RDWR, 0)
			require.NoError(t, err)
			_, err = loop.New().Attach(f, loop.AttachOptions{})
			f.Close()
			require.NoError(t, err)
			v.requireOneLoop()
		}
		attach()
		v.unstage()
		require.Empty(t, v.device(), "unstage detaches the image's device without a record")

		attach()
		n.Stop()
		n.Start()
		require.Empty(t, v.device(), "start-up detaches the image's device no staging holds")

		// A device that is mounted (a stage killed after its mount) is the
		// retry's: start-up leaves it, the stage adopts it.
		v.up()
		n.Stop()
		n.Start()
		v.requireOneLoop()
		v.down()
		require.NoError(t, v.deleteErr())
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
	CleanupUnder(t, dir)
	shared := filepath.Join(dir, "shared")
	require.NoError(t, os.MkdirAll(shared, 0o755))
	start := func(node string) *Client {
		o := Options()
		o.NodeID = node
		o.StateDir = filepath.Join(dir, node, "state")
		o.PoolSpecs = []pool.Spec{{Name: pool.DefaultName, Path: shared, Shared: true}}
		return Dial(t, testutil.StartDriver(t, o).Endpoint)
	}
	a, b := start("node-a"), start("node-b")
	na, nb := &Node{t: t, PoolPath: shared, Client: a}, &Node{t: t, PoolPath: shared, Client: b}

	for _, mode := range []csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY} {
		c := ext4Kind.capability()
		c.AccessMode.Mode = mode
		_, err := a.CreateVolume(rpcCtx(t), &csi.CreateVolumeRequest{Name: "rwx-" + mode.String(), VolumeCapabilities: []*csi.VolumeCapability{c}, Parameters: ext4Kind.params, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
		requireCode(t, codes.InvalidArgument, err, "a loop filesystem in a shared pool with "+mode.String())
	}

	resp, err := a.CreateVolume(rpcCtx(t), &csi.CreateVolumeRequest{Name: "rwo", VolumeCapabilities: []*csi.VolumeCapability{ext4Kind.capability()}, Parameters: ext4Kind.params, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
	require.NoError(t, err)
	id := resp.GetVolume().GetVolumeId()
	onA := &vol{t: t, n: na, k: ext4Kind, name: "rwo-a", id: id, staging: filepath.Join(dir, "a", "staging"), target: filepath.Join(dir, "a", "target")}
	onB := &vol{t: t, n: nb, k: ext4Kind, name: "rwo-b", id: id, staging: filepath.Join(dir, "b", "staging"), target: filepath.Join(dir, "b", "target")}
	onA.up()
	requireCode(t, codes.FailedPrecondition, onB.stageErr(), "stage on B while A has the image attached")
	require.NoFileExists(t, filepath.Join(onB.staging, "lost+found"), "nothing mounted on B")
	onA.down()
	onB.up()
	_, err = a.DeleteVolume(rpcCtx(t), &csi.DeleteVolumeRequest{VolumeId: id})
	requireCode(t, codes.FailedPrecondition, err, "DeleteVolume on A while B has it staged")
	onB.down()
	_, err = a.DeleteVolume(rpcCtx(t), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)

	c := blockKind.capability()
	c.AccessMode.Mode = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	resp, err = a.CreateVolume(rpcCtx(t), &csi.CreateVolumeRequest{Name: "rwx-block", VolumeCapabilities: []*csi.VolumeCapability{c}, Parameters: map[string]string{"allowBlockRWX": "true"}, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
	require.NoError(t, err)
	id = resp.GetVolume().GetVolumeId()
	for _, cl := range []*Client{a, b} {
		_, err := cl.NodeStageVolume(rpcCtx(t), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: filepath.Join(dir, "blk-staging"), VolumeCapability: c})
		require.NoError(t, err, "raw block for several nodes stages on each")
	}
	for _, cl := range []*Client{a, b} {
		_, err := cl.NodeUnstageVolume(rpcCtx(t), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: filepath.Join(dir, "blk-staging")})
		require.NoError(t, err)
	}
	_, err = a.DeleteVolume(rpcCtx(t), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)
}

// TestStatsOfUnmountedPath: after the mounts of a loop volume went (a
// reboot, an unmount by hand), NodeGetVolumeStats of its recorded paths
// is NOT_FOUND, not the figures of the filesystem underneath.
func TestStatsOfUnmountedPath(t *testing.T) {
	n, dir := setup(t)
	v := create(t, n, dir, ext4Kind, volName(t, "stats"), 0)
	v.up()
	require.NoError(t, unix.Unmount(v.target, 0))
	_, err := n.Client.NodeGetVolumeStats(rpcCtx(t), &csi.NodeGetVolumeStatsRequest{VolumeId: v.id, VolumePath: v.target})
	requireCode(t, codes.NotFound, err, "stats of a target that is no longer mounted")
	v.stats(v.staging)
	v.down()
	require.NoError(t, v.deleteErr())
}
