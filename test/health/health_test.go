// Package health provokes, for real, every condition hostvol's health
// RPCs report, and checks what they say: a directory volume's data removed,
// a staged loop volume's device detached by hand (with and without its
// mount in place), a loop filesystem filled to ENOSPC, a staging mount
// remounted read-only, a pool bind-mounted read-only, a small loop-backed
// pool filled up and a pool whose filesystem was lazily unmounted. Needs
// root; every mount and loop device a test makes is released in t.Cleanup,
// even when it fails, and the test then checks that `losetup -a` and the
// mount table show nothing of it.
package health

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/test/loopvol"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const mib = int64(1) << 20

// setup gives a test its own directory, with the release of everything
// mounted or attached under it registered first, and a check after that
// release that nothing is left.
func setup(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { requireNothingLeft(t, dir) })
	loopvol.CleanupUnder(t, dir)
	return dir
}

// requireNothingLeft checks, after the clean-up, that no loop device backs
// a file under dir (as `losetup -a` lists them) and that nothing is mounted
// under dir.
func requireNothingLeft(t *testing.T, dir string) {
	t.Helper()
	out, err := exec.Command("losetup", "-a").CombinedOutput()
	if err != nil {
		t.Errorf("losetup -a: %v: %s", err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), dir+"/") {
			t.Errorf("losetup -a still lists a device of this test: %s", sc.Text())
		}
	}
	if m := testutil.MountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left under %s: %v", dir, m)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// vol is a volume under test.
type vol struct {
	t               *testing.T
	c               *loopvol.Client
	id              string
	capability      *csi.VolumeCapability
	staging, target string
	pool            string // the pool's path, for images and directories
	// staged says whether hostvol staged the volume (its record, not the
	// mount, which tests remove by hand): NodeGetVolumeHealth is then
	// asked about the staging path too.
	staged bool
}

type kind struct {
	params map[string]string
	block  bool
	size   int64
}

var (
	// The pools here are plain temporary directories, which cannot limit
	// a directory volume's size: the class must accept that.
	dirKind   = kind{params: map[string]string{"sizeLimit": "optional"}, size: 64 * mib}
	ext4Kind  = kind{params: map[string]string{"type": "loop"}, size: 64 * mib}
	xfsKind   = kind{params: map[string]string{"type": "loop", "csi.storage.k8s.io/fstype": "xfs"}, size: 300 * mib}
	blockKind = kind{params: map[string]string{}, block: true, size: 64 * mib}
)

func create(t *testing.T, n *loopvol.Node, dir, name string, k kind) *vol {
	t.Helper()
	c := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	if k.block {
		c.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	} else {
		c.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}
	}
	resp, err := n.Client.CreateVolume(ctx(t), &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: k.size},
		VolumeCapabilities: []*csi.VolumeCapability{c},
		Parameters:         k.params,
	})
	require.NoError(t, err, "CreateVolume %s", name)
	v := &vol{
		t: t, c: n.Client, id: resp.GetVolume().GetVolumeId(), capability: c,
		staging: filepath.Join(dir, "mnt", name, "staging"),
		target:  filepath.Join(dir, "mnt", name, "target"),
		pool:    n.PoolPath,
	}
	require.NoError(t, os.MkdirAll(v.staging, 0o750))
	return v
}

func (v *vol) image() string   { return filepath.Join(v.pool, "images", v.id+".img") }
func (v *vol) dataDir() string { return filepath.Join(v.pool, "volumes", v.id) }

func (v *vol) stage() {
	v.t.Helper()
	_, err := v.c.NodeStageVolume(ctx(v.t), &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: v.capability})
	require.NoError(v.t, err, "NodeStageVolume")
	v.staged = true
}

func (v *vol) unstage() {
	v.t.Helper()
	_, err := v.c.NodeUnstageVolume(ctx(v.t), &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
	require.NoError(v.t, err, "NodeUnstageVolume")
	v.staged = false
}

func (v *vol) publish(readOnly bool) {
	v.t.Helper()
	_, err := v.c.NodePublishVolume(ctx(v.t), &csi.NodePublishVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: v.target, VolumeCapability: v.capability, Readonly: readOnly,
	})
	require.NoError(v.t, err, "NodePublishVolume")
}

func (v *vol) unpublish() {
	v.t.Helper()
	_, err := v.c.NodeUnpublishVolume(ctx(v.t), &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target})
	require.NoError(v.t, err, "NodeUnpublishVolume")
}

func (v *vol) delete() {
	v.t.Helper()
	_, err := v.c.DeleteVolume(ctx(v.t), &csi.DeleteVolumeRequest{VolumeId: v.id})
	require.NoError(v.t, err, "DeleteVolume")
}

// health asks both sides: ControllerGetVolumeHealth, and NodeGetVolumeHealth
// with the volume's staging path (if staged) and target (if published). It returns
// each side's entries as "STATUS/Reason" and logs the messages, so the test
// output shows what an operator would read.
func (v *vol) health(published bool) (controller, node []string) {
	v.t.Helper()
	cr, err := v.c.ControllerGetVolumeHealth(ctx(v.t), &csi.ControllerGetVolumeHealthRequest{VolumeId: v.id})
	require.NoError(v.t, err, "ControllerGetVolumeHealth")
	req := &csi.NodeGetVolumeHealthRequest{VolumeId: v.id}
	if v.staged {
		req.StagingTargetPath = v.staging
	}
	if published {
		req.VolumePublishPath = v.target
	}
	nr, err := v.c.NodeGetVolumeHealth(ctx(v.t), req)
	require.NoError(v.t, err, "NodeGetVolumeHealth")
	return entries(v.t, "controller", v.id, cr.GetVolumeHealth()), entries(v.t, "node", v.id, nr.GetVolumeHealth())
}

func entries(t *testing.T, side, id string, vh *csi.VolumeHealth) []string {
	t.Helper()
	require.Equal(t, id, vh.GetVolumeId())
	out := []string{}
	for _, e := range vh.GetHealthStatuses() {
		out = append(out, e.GetStatus().String()+"/"+e.GetReason())
		t.Logf("%s health: %s %s: %s", side, e.GetStatus(), e.GetReason(), e.GetMessage())
		require.Contains(t, e.GetMessage(), id)
	}
	return out
}

// requireHealth checks both sides against the same entries.
func (v *vol) requireHealth(published bool, want ...string) {
	v.t.Helper()
	if want == nil {
		want = []string{}
	}
	c, n := v.health(published)
	require.ElementsMatch(v.t, want, c, "ControllerGetVolumeHealth")
	require.ElementsMatch(v.t, want, n, "NodeGetVolumeHealth")
}

// eventuallyHealthy waits until both sides report no condition: XFS frees
// an unlinked file's blocks in the background (deferred inode
// inactivation), so statfs may show it full for a moment after the unlink.
func (v *vol) eventuallyHealthy(published bool) {
	v.t.Helper()
	unix.Sync()
	require.Eventually(v.t, func() bool {
		c, n := v.health(published)
		return len(c) == 0 && len(n) == 0
	}, 10*time.Second, 50*time.Millisecond, "volume %s healthy again", v.id)
}

// listed returns the IDs ControllerListVolumeHealth reports.
func listed(t *testing.T, c *loopvol.Client) []string {
	t.Helper()
	resp, err := c.ControllerListVolumeHealth(ctx(t), &csi.ControllerListVolumeHealthRequest{})
	require.NoError(t, err)
	out := []string{}
	for _, e := range resp.GetEntries() {
		out = append(out, e.GetVolumeId())
	}
	return out
}

// storage returns NodeGetStorageHealth's entries as "STATUS/Reason".
func storage(t *testing.T, c *loopvol.Client) []string {
	t.Helper()
	resp, err := c.NodeGetStorageHealth(ctx(t), &csi.NodeGetStorageHealthRequest{})
	require.NoError(t, err)
	out := []string{}
	for _, e := range resp.GetBackendHealth() {
		out = append(out, e.GetStatus().String()+"/"+e.GetReason())
		t.Logf("storage health: %s %s: %s", e.GetStatus(), e.GetReason(), e.GetMessage())
	}
	return out
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
	t.Logf("ran: %s %s", name, strings.Join(args, " "))
}

// loopsOf returns the loop devices backing v's image, as sysfs lists them,
// and checks that losetup agrees.
func (v *vol) loopsOf() []string {
	v.t.Helper()
	devs, err := loopvol.LoopsFor(v.image())
	require.NoError(v.t, err)
	require.Equal(v.t, devs, loopvol.LosetupFor(v.t, v.image()), "losetup -j %s", v.image())
	return devs
}

// requireDetached waits (briefly: the kernel may finish an autoclear
// detach after the last close returns) until no loop device backs v's
// image.
func (v *vol) requireDetached(why string) {
	v.t.Helper()
	require.Eventually(v.t, func() bool {
		devs, err := loopvol.LoopsFor(v.image())
		return err == nil && len(devs) == 0
	}, 5*time.Second, 10*time.Millisecond, why)
	require.Empty(v.t, v.loopsOf(), why)
}

const (
	dataMissing       = "INACCESSIBLE/" + volume.ReasonDataMissing
	loopDetached      = "INACCESSIBLE/" + volume.ReasonLoopDeviceDetached
	stagingMissing    = "INACCESSIBLE/" + volume.ReasonStagingMountMissing
	limitExhausted    = "DEGRADED/" + volume.ReasonLimitExhausted
	poolTooFull       = "DEGRADED/" + volume.ReasonPoolTooFull
	filesystemRO      = "DEGRADED/" + volume.ReasonFilesystemReadOnly
	poolUnavailable   = "INACCESSIBLE/" + volume.ReasonPoolUnavailable
	storageReadOnly   = "STORAGE_DEGRADED/" + volume.ReasonPoolReadOnly
	storageNearlyFull = "STORAGE_DEGRADED/" + volume.ReasonPoolNearlyFull
	storageMissing    = "STORAGE_UNREACHABLE/" + volume.ReasonPoolMissing
)

// TestDirDataRemoved removes a published directory volume's data directory
// (the bind mount at the target keeps the old directory alive for the pod,
// but the volume's data is gone from the pool).
func TestDirDataRemoved(t *testing.T) {
	dir := setup(t)
	n := loopvol.NewNode(t, dir, "")
	v := create(t, n, dir, "dir", dirKind)
	other := create(t, n, dir, "other", dirKind)
	v.stage()
	v.publish(false)
	require.NoError(t, os.WriteFile(filepath.Join(v.target, "file"), []byte("data"), 0o644))
	v.requireHealth(true)
	require.Empty(t, listed(t, n.Client))

	require.NoError(t, os.RemoveAll(v.dataDir()))
	t.Logf("removed %s", v.dataDir())
	v.requireHealth(true, dataMissing)
	other.requireHealth(false)
	require.Equal(t, []string{v.id}, listed(t, n.Client), "ControllerListVolumeHealth lists the broken volume only")
	require.Empty(t, storage(t, n.Client), "the pool itself is fine")

	v.unpublish()
	v.unstage()
	v.delete()
	other.delete()
}

// TestLoopDetachedWithMountInPlace runs `losetup -d` on a staged ext4
// volume's device while its filesystem is mounted. The kernel does not
// detach a device that is open: LOOP_CLR_FD only marks it to detach itself
// at the last close (autoclear). The filesystem keeps working and hostvol
// reports the volume healthy, which is true. Unmounting the staging path
// by hand is that last close: the device goes, and hostvol reports the
// staging mount missing and the loop device detached. Staging again mends
// both, and the data is intact.
func TestLoopDetachedWithMountInPlace(t *testing.T) {
	dir := setup(t)
	n := loopvol.NewNode(t, dir, "")
	v := create(t, n, dir, "ext4", ext4Kind)
	v.stage()
	v.requireHealth(false)
	devs := v.loopsOf()
	require.Len(t, devs, 1)

	run(t, "losetup", "-d", devs[0])
	require.Equal(t, devs, v.loopsOf(), "the kernel keeps an open device attached (autoclear)")
	require.NoError(t, os.WriteFile(filepath.Join(v.staging, "file"), []byte("written after losetup -d"), 0o644))
	v.requireHealth(false)

	run(t, "umount", v.staging)
	v.requireDetached("the last close detaches the device")
	v.requireHealth(false, stagingMissing, loopDetached)
	require.Equal(t, []string{v.id}, listed(t, n.Client))

	v.stage()
	v.requireHealth(false)
	b, err := os.ReadFile(filepath.Join(v.staging, "file"))
	require.NoError(t, err)
	require.Equal(t, "written after losetup -d", string(b))
	v.unstage()
	v.delete()
}

// TestLoopDetachedWhilePublished unmounts a published volume's staging
// path lazily and detaches its device: the pod's target still holds the
// filesystem (and so the device) open; the node reports the staging mount
// missing but the target fine. When the target goes too, the device is
// detached and reported so.
func TestLoopDetachedWhilePublished(t *testing.T) {
	dir := setup(t)
	n := loopvol.NewNode(t, dir, "")
	v := create(t, n, dir, "ext4", ext4Kind)
	v.stage()
	v.publish(false)
	v.requireHealth(true)
	devs := v.loopsOf()
	require.Len(t, devs, 1)

	run(t, "umount", "-l", v.staging)
	run(t, "losetup", "-d", devs[0])
	require.Equal(t, devs, v.loopsOf(), "the target keeps the device open")
	v.requireHealth(true, stagingMissing)
	require.NoError(t, os.WriteFile(filepath.Join(v.target, "file"), []byte("x"), 0o644), "the pod can still write")

	v.unpublish()
	v.requireDetached("unmounting the target was the last close")
	v.requireHealth(false, stagingMissing, loopDetached)
	v.unstage()
	v.requireHealth(false)
	v.delete()
}

// TestBlockDetached detaches a staged raw block volume's device: nothing
// holds it open, so it goes at once.
func TestBlockDetached(t *testing.T) {
	dir := setup(t)
	n := loopvol.NewNode(t, dir, "")
	v := create(t, n, dir, "block", blockKind)
	v.stage()
	v.requireHealth(false)
	devs := v.loopsOf()
	require.Len(t, devs, 1)
	run(t, "losetup", "-d", devs[0])
	v.requireDetached("nothing held the device open")
	v.requireHealth(false, loopDetached)
	v.stage()
	v.requireHealth(false)
	v.unstage()
	v.delete()
}

// TestLoopFull fills ext4 and XFS volumes through their targets until
// the kernel answers ENOSPC: the limit is exhausted. Removing the file
// makes the volume healthy again.
func TestLoopFull(t *testing.T) {
	for name, k := range map[string]kind{"ext4": ext4Kind, "xfs": xfsKind} {
		t.Run(name, func(t *testing.T) {
			dir := setup(t)
			n := loopvol.NewNode(t, dir, "")
			v := create(t, n, dir, name, k)
			v.stage()
			v.publish(false)
			v.requireHealth(true)

			fill := filepath.Join(v.target, "fill")
			written, err := fillUp(fill)
			require.ErrorIs(t, err, syscall.ENOSPC, "writing until the volume is full")
			t.Logf("wrote %d MiB into a %d MiB %s volume, then: %v", written>>20, k.size>>20, name, err)
			var st unix.Statfs_t
			require.NoError(t, unix.Statfs(v.target, &st))
			t.Logf("statfs after ENOSPC: %d bytes available, %d inodes free", int64(st.Bavail)*st.Bsize, st.Ffree)
			v.requireHealth(true, limitExhausted)
			require.Equal(t, []string{v.id}, listed(t, n.Client))

			require.NoError(t, os.Remove(fill))
			v.eventuallyHealthy(true)
			v.unpublish()
			v.unstage()
			v.delete()
		})
	}
}

// fillUp writes 1 MiB blocks to path until a write fails, syncs, and
// returns what it wrote and the error that stopped it.
func fillUp(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, int(mib))
	var written int64
	for {
		n, err := f.Write(buf)
		written += int64(n)
		if err != nil {
			return written, err
		}
		if written > 1<<30 {
			return written, errors.New("wrote 1 GiB without ENOSPC")
		}
	}
}

// TestLoopRemountedReadOnly remounts a staged ext4 volume read-only, as
// ext4's errors=remount-ro does after an I/O error: abnormal while any
// publish asked for read-write; expected (so healthy) when every publish
// is read-only. Remounting read-write makes it healthy again.
func TestLoopRemountedReadOnly(t *testing.T) {
	dir := setup(t)
	n := loopvol.NewNode(t, dir, "")
	v := create(t, n, dir, "ext4", ext4Kind)
	v.stage()
	v.publish(false)
	v.requireHealth(true)

	run(t, "mount", "-o", "remount,ro", v.staging)
	err := os.WriteFile(filepath.Join(v.target, "file"), []byte("x"), 0o644)
	require.ErrorIs(t, err, syscall.EROFS, "the pod's writes fail")
	v.requireHealth(true, filesystemRO)
	require.Equal(t, []string{v.id}, listed(t, n.Client))

	run(t, "mount", "-o", "remount,rw", v.staging)
	v.requireHealth(true)

	// Published read-only only: a read-only filesystem is what was asked.
	v.unpublish()
	v.publish(true)
	run(t, "mount", "-o", "remount,ro", v.staging)
	v.requireHealth(true)
	run(t, "mount", "-o", "remount,rw", v.staging)

	v.unpublish()
	v.unstage()
	v.delete()
}

// TestPoolReadOnly bind-mounts a pool onto itself read-only: the node's
// storage health says so, and its directory volumes are read-only.
func TestPoolReadOnly(t *testing.T) {
	dir := setup(t)
	n := loopvol.NewNode(t, dir, "")
	v := create(t, n, dir, "dir", dirKind)
	require.Empty(t, storage(t, n.Client))
	v.requireHealth(false)

	run(t, "mount", "--bind", n.PoolPath, n.PoolPath)
	run(t, "mount", "-o", "remount,ro,bind", n.PoolPath)
	require.Equal(t, []string{storageReadOnly}, storage(t, n.Client))
	v.requireHealth(false, filesystemRO)

	run(t, "umount", n.PoolPath)
	require.Empty(t, storage(t, n.Client))
	v.requireHealth(false)
	v.delete()
}

// poolFilesystem makes a pool of its own: an ext4 filesystem of size bytes
// in an image under dir, on a loop device, mounted at dir/pool.
// setup's clean-up unmounts and detaches it after the driver has stopped.
func poolFilesystem(t *testing.T, dir string, size int64) string {
	t.Helper()
	img := filepath.Join(dir, "poolfs.img")
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(size))
	run(t, "mkfs.ext4", "-F", "-q", "-m", "0", "-E", "nodiscard", img)
	dev, err := loop.New().Attach(f, loop.AttachOptions{})
	require.NoError(t, err)
	mp := filepath.Join(dir, "pool")
	require.NoError(t, os.MkdirAll(mp, 0o755))
	require.NoError(t, unix.Mount(dev, mp, "ext4", 0, ""), "mount %s at %s", dev, mp)
	return mp
}

// TestPoolNearlyFull fills a 64 MiB loop-backed pool: the node's storage
// health says it is nearly full, and its directory volume, bounded only by
// the pool until quotas enforce a limit, has exhausted it.
func TestPoolNearlyFull(t *testing.T) {
	dir := setup(t)
	n := loopvol.NewNode(t, dir, poolFilesystem(t, dir, 64*mib))
	k := dirKind
	k.size = 8 * mib
	v := create(t, n, dir, "dir", k)
	v.stage()
	v.publish(false)
	require.Empty(t, storage(t, n.Client))
	v.requireHealth(true)

	fill := filepath.Join(v.target, "fill")
	_, err := fillUp(fill)
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Equal(t, []string{storageNearlyFull}, storage(t, n.Client))
	v.requireHealth(true, limitExhausted)

	require.NoError(t, os.Remove(fill))
	require.Empty(t, storage(t, n.Client))
	v.requireHealth(true)
	v.unpublish()
	v.unstage()
	v.delete()
}

// TestPoolTooFullForImage: something other than hostvol fills the pool of
// a sparse loop volume until the pool cannot hold what the image may still
// grow into. Writes inside the volume would then fail with I/O errors; its
// health says so (DEGRADED PoolTooFull) instead of healthy. Freeing the
// space mends it.
func TestPoolTooFullForImage(t *testing.T) {
	dir := setup(t)
	n := loopvol.NewNode(t, dir, poolFilesystem(t, dir, 96*mib))
	k := blockKind
	k.size = 40 * mib
	v := create(t, n, dir, "blk", k)
	v.requireHealth(false)
	junk := filepath.Join(n.PoolPath, "junk")
	_, err := fillUp(junk)
	require.ErrorIs(t, err, syscall.ENOSPC, "filling the pool from outside hostvol")
	v.requireHealth(false, poolTooFull)
	require.NoError(t, os.Remove(junk))
	v.eventuallyHealthy(false)
	v.delete()
}

// TestPoolUnmounted lazily unmounts a pool's filesystem under the running
// driver (a plain umount is refused: hostvol holds the pool open). The
// path is then an empty directory of the parent filesystem, not the pool:
// storage health says the pool is unreachable and its volumes say the pool
// is unavailable. Mounting it back mends both.
func TestPoolUnmounted(t *testing.T) {
	dir := setup(t)
	pool := poolFilesystem(t, dir, 64*mib)
	n := loopvol.NewNode(t, dir, pool)
	k := dirKind
	k.size = 8 * mib
	v := create(t, n, dir, "dir", k)
	v.requireHealth(false)
	devs, err := loopvol.LoopsFor(filepath.Join(dir, "poolfs.img"))
	require.NoError(t, err)
	require.Len(t, devs, 1)

	require.Error(t, unix.Unmount(pool, 0), "the pool is busy while hostvol runs")
	run(t, "umount", "-l", pool)
	require.Equal(t, []string{storageMissing}, storage(t, n.Client))
	v.requireHealth(false, poolUnavailable)

	require.NoError(t, unix.Mount(devs[0], pool, "ext4", 0, ""))
	require.Empty(t, storage(t, n.Client))
	v.requireHealth(false)
	v.delete()
}
