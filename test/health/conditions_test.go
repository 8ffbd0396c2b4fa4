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

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
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
	testutil.CleanupUnder(t, dir)
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

// vol is a volume under test, with the layout of its pool.
type vol struct {
	*testutil.Volume
	l testutil.Layout
}

var (
	dirKind   = testutil.DirKind
	ext4Kind  = testutil.Ext4Kind
	xfsKind   = testutil.XFSKind
	blockKind = testutil.BlockKind
)

func create(t *testing.T, n *testutil.Node, dir, name string, k testutil.Kind) *vol {
	t.Helper()
	return &vol{Volume: testutil.CreateVolume(t, n, dir, k, name, 0), l: n.Layout()}
}

// up starts a node on a plain pool in a setup directory, creates a volume
// of kind k there, stages it (and publishes it if published) and checks
// that it is healthy.
func up(t *testing.T, k testutil.Kind, published bool) (*testutil.Node, *vol) {
	t.Helper()
	dir := setup(t)
	n := testutil.NewNode(t, dir, "")
	v := create(t, n, dir, k.Name, k)
	v.Stage()
	if published {
		v.Publish()
	}
	v.requireHealth(published)
	return n, v
}

func (v *vol) image() string   { return v.l.ImagePath(v.ID) }
func (v *vol) dataDir() string { return v.l.DataDir(v.ID) }

// health asks both sides: ControllerGetVolumeHealth, and NodeGetVolumeHealth
// with the volume's staging path (if staged) and target (if published). It returns
// each side's entries as "STATUS/Reason" and logs the messages, so the test
// output shows what an operator would read.
func (v *vol) health(published bool) (controller, node []string) {
	v.T.Helper()
	cr, err := v.Src.CSI().ControllerGetVolumeHealth(testutil.Ctx(v.T), &csi.ControllerGetVolumeHealthRequest{VolumeId: v.ID})
	require.NoError(v.T, err, "ControllerGetVolumeHealth")
	req := &csi.NodeGetVolumeHealthRequest{VolumeId: v.ID}
	if v.Staged {
		req.StagingTargetPath = v.Staging
	}
	if published {
		req.VolumePublishPath = v.Target
	}
	nr, err := v.Src.CSI().NodeGetVolumeHealth(testutil.Ctx(v.T), req)
	require.NoError(v.T, err, "NodeGetVolumeHealth")
	return entries(v.T, "controller", v.ID, cr.GetVolumeHealth()), entries(v.T, "node", v.ID, nr.GetVolumeHealth())
}

func entries(t testing.TB, side, id string, vh *csi.VolumeHealth) []string {
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
	v.T.Helper()
	if want == nil {
		want = []string{}
	}
	c, n := v.health(published)
	require.ElementsMatch(v.T, want, c, "ControllerGetVolumeHealth")
	require.ElementsMatch(v.T, want, n, "NodeGetVolumeHealth")
}

// eventuallyHealthy waits until both sides report no condition: XFS frees
// an unlinked file's blocks in the background (deferred inode
// inactivation), so statfs may show it full for a moment after the unlink.
func (v *vol) eventuallyHealthy(published bool) {
	v.T.Helper()
	unix.Sync()
	require.Eventually(v.T, func() bool {
		c, n := v.health(published)
		return len(c) == 0 && len(n) == 0
	}, 10*time.Second, 50*time.Millisecond, "volume %s healthy again", v.ID)
}

// listed returns the IDs ControllerListVolumeHealth reports.
func listed(t *testing.T, c testutil.ClientSource) []string {
	t.Helper()
	resp, err := c.CSI().ControllerListVolumeHealth(testutil.Ctx(t), &csi.ControllerListVolumeHealthRequest{})
	require.NoError(t, err)
	return strs(resp.GetEntries(), (*csi.VolumeHealth).GetVolumeId)
}

// storage returns NodeGetStorageHealth's entries as "STATUS/Reason".
func storage(t *testing.T, c testutil.ClientSource) []string {
	t.Helper()
	resp, err := c.CSI().NodeGetStorageHealth(testutil.Ctx(t), &csi.NodeGetStorageHealthRequest{})
	require.NoError(t, err)
	return strs(resp.GetBackendHealth(), func(e *csi.NodeGetStorageHealthResponse_StorageBackendHealth) string {
		t.Logf("storage health: %s %s: %s", e.GetStatus(), e.GetReason(), e.GetMessage())
		return e.GetStatus().String() + "/" + e.GetReason()
	})
}

// strs is f of every element of in, never nil.
func strs[T any](in []T, f func(T) string) []string {
	out := []string{}
	for _, x := range in {
		out = append(out, f(x))
	}
	return out
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
	t.Logf("ran: %s %s", name, strings.Join(args, " "))
}

// loopsOf returns the loop devices backing v's image (sysfs and losetup
// agreeing).
func (v *vol) loopsOf() []string { v.T.Helper(); return testutil.RequireLoopsOf(v.T, v.image()) }

// oneLoop requires that exactly one loop device backs v's image and
// returns it.
func (v *vol) oneLoop() string {
	v.T.Helper()
	devs := v.loopsOf()
	require.Len(v.T, devs, 1, "loop devices of %s", v.image())
	return devs[0]
}

// requireDetached waits (briefly: the kernel may finish an autoclear
// detach after the last close returns) until no loop device backs v's
// image.
func (v *vol) requireDetached(why string) {
	v.T.Helper()
	require.Eventually(v.T, func() bool {
		devs, err := testutil.LoopsFor(v.image())
		return err == nil && len(devs) == 0
	}, 5*time.Second, 10*time.Millisecond, why)
	require.Empty(v.T, v.loopsOf(), why)
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
	n := testutil.NewNode(t, dir, "")
	v := create(t, n, dir, "dir", dirKind)
	other := create(t, n, dir, "other", dirKind)
	v.Stage()
	v.Publish()
	require.NoError(t, os.WriteFile(filepath.Join(v.Target, "file"), []byte("data"), 0o644))
	v.requireHealth(true)
	require.Empty(t, listed(t, n.Client))

	require.NoError(t, os.RemoveAll(v.dataDir()))
	t.Logf("removed %s", v.dataDir())
	v.requireHealth(true, dataMissing)
	other.requireHealth(false)
	require.Equal(t, []string{v.ID}, listed(t, n.Client), "ControllerListVolumeHealth lists the broken volume only")
	require.Empty(t, storage(t, n.Client), "the pool itself is fine")

	v.Unpublish()
	v.Unstage()
	v.Delete()
	other.Delete()
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
	n, v := up(t, ext4Kind, false)
	dev := v.oneLoop()

	run(t, "losetup", "-d", dev)
	require.Equal(t, []string{dev}, v.loopsOf(), "the kernel keeps an open device attached (autoclear)")
	require.NoError(t, os.WriteFile(filepath.Join(v.Staging, "file"), []byte("written after losetup -d"), 0o644))
	v.requireHealth(false)

	run(t, "umount", v.Staging)
	v.requireDetached("the last close detaches the device")
	v.requireHealth(false, stagingMissing, loopDetached)
	require.Equal(t, []string{v.ID}, listed(t, n.Client))

	v.Stage()
	v.requireHealth(false)
	b, err := os.ReadFile(filepath.Join(v.Staging, "file"))
	require.NoError(t, err)
	require.Equal(t, "written after losetup -d", string(b))
	v.Unstage()
	v.Delete()
}

// TestLoopDetachedWhilePublished unmounts a published volume's staging
// path lazily and detaches its device: the pod's target still holds the
// filesystem (and so the device) open; the node reports the staging mount
// missing but the target fine. When the target goes too, the device is
// detached and reported so.
func TestLoopDetachedWhilePublished(t *testing.T) {
	_, v := up(t, ext4Kind, true)
	dev := v.oneLoop()

	run(t, "umount", "-l", v.Staging)
	run(t, "losetup", "-d", dev)
	require.Equal(t, []string{dev}, v.loopsOf(), "the target keeps the device open")
	v.requireHealth(true, stagingMissing)
	require.NoError(t, os.WriteFile(filepath.Join(v.Target, "file"), []byte("x"), 0o644), "the pod can still write")

	v.Unpublish()
	v.requireDetached("unmounting the target was the last close")
	v.requireHealth(false, stagingMissing, loopDetached)
	v.Unstage()
	v.requireHealth(false)
	v.Delete()
}

// TestBlockDetached detaches a staged raw block volume's device: nothing
// holds it open, so it goes at once.
func TestBlockDetached(t *testing.T) {
	_, v := up(t, blockKind, false)
	dev := v.oneLoop()
	run(t, "losetup", "-d", dev)
	v.requireDetached("nothing held the device open")
	v.requireHealth(false, loopDetached)
	v.Stage()
	v.requireHealth(false)
	v.Unstage()
	v.Delete()
}

// TestLoopFull fills ext4 and XFS volumes through their targets until
// the kernel answers ENOSPC: the limit is exhausted. Removing the file
// makes the volume healthy again.
func TestLoopFull(t *testing.T) {
	for name, k := range map[string]testutil.Kind{"ext4": ext4Kind, "xfs": xfsKind} {
		t.Run(name, func(t *testing.T) {
			n, v := up(t, k, true)

			fill := filepath.Join(v.Target, "fill")
			written, err := fillUp(fill)
			require.ErrorIs(t, err, syscall.ENOSPC, "writing until the volume is full")
			t.Logf("wrote %d MiB into a %d MiB %s volume, then: %v", written>>20, k.Size>>20, name, err)
			var st unix.Statfs_t
			require.NoError(t, unix.Statfs(v.Target, &st))
			t.Logf("statfs after ENOSPC: %d bytes available, %d inodes free", int64(st.Bavail)*st.Bsize, st.Ffree)
			v.requireHealth(true, limitExhausted)
			require.Equal(t, []string{v.ID}, listed(t, n.Client))

			require.NoError(t, os.Remove(fill))
			v.eventuallyHealthy(true)
			v.Unpublish()
			v.Unstage()
			v.Delete()
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
	n, v := up(t, ext4Kind, true)

	run(t, "mount", "-o", "remount,ro", v.Staging)
	err := os.WriteFile(filepath.Join(v.Target, "file"), []byte("x"), 0o644)
	require.ErrorIs(t, err, syscall.EROFS, "the pod's writes fail")
	v.requireHealth(true, filesystemRO)
	require.Equal(t, []string{v.ID}, listed(t, n.Client))

	run(t, "mount", "-o", "remount,rw", v.Staging)
	v.requireHealth(true)

	// Published read-only only: a read-only filesystem is what was asked.
	v.Unpublish()
	v.PublishReadOnly()
	run(t, "mount", "-o", "remount,ro", v.Staging)
	v.requireHealth(true)
	run(t, "mount", "-o", "remount,rw", v.Staging)

	v.Unpublish()
	v.Unstage()
	v.Delete()
}

// TestPoolReadOnly bind-mounts a pool onto itself read-only: the node's
// storage health says so, and its directory volumes are read-only.
func TestPoolReadOnly(t *testing.T) {
	dir := setup(t)
	n := testutil.NewNode(t, dir, "")
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
	v.Delete()
}

// poolFilesystem makes a pool of its own: an ext4 filesystem of size bytes
// in an image under dir, on a loop device, mounted at dir/pool.
func poolFilesystem(t *testing.T, dir string, size int64) *testutil.PoolFS {
	t.Helper()
	return testutil.NewPoolFS(t, dir, testutil.PoolFSOptions{Size: size})
}

// onSmallPool is a node whose pool is a filesystem of its own of poolSize
// bytes, and on it a volume of kind k with size bytes.
func onSmallPool(t *testing.T, poolSize int64, k testutil.Kind, size int64, name string) (*testutil.Node, *vol) {
	t.Helper()
	dir := setup(t)
	n := testutil.NewNode(t, dir, poolFilesystem(t, dir, poolSize).Path)
	k.Size = size
	return n, create(t, n, dir, name, k)
}

// TestPoolNearlyFull fills a 64 MiB loop-backed pool: the node's storage
// health says it is nearly full, and its directory volume, bounded only by
// the pool until quotas enforce a limit, has exhausted it.
func TestPoolNearlyFull(t *testing.T) {
	n, v := onSmallPool(t, 64*mib, dirKind, 8*mib, "dir")
	v.Stage()
	v.Publish()
	require.Empty(t, storage(t, n.Client))
	v.requireHealth(true)

	fill := filepath.Join(v.Target, "fill")
	_, err := fillUp(fill)
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Equal(t, []string{storageNearlyFull}, storage(t, n.Client))
	v.requireHealth(true, limitExhausted)

	require.NoError(t, os.Remove(fill))
	require.Empty(t, storage(t, n.Client))
	v.requireHealth(true)
	v.Unpublish()
	v.Unstage()
	v.Delete()
}

// TestPoolTooFullForImage: something other than hostvol fills the pool of
// a sparse loop volume until the pool cannot hold what the image may still
// grow into. Writes inside the volume would then fail with I/O errors; its
// health says so (DEGRADED PoolTooFull) instead of healthy. Freeing the
// space mends it.
func TestPoolTooFullForImage(t *testing.T) {
	n, v := onSmallPool(t, 96*mib, blockKind, 40*mib, "blk")
	v.requireHealth(false)
	junk := filepath.Join(n.PoolPath, "junk")
	_, err := fillUp(junk)
	require.ErrorIs(t, err, syscall.ENOSPC, "filling the pool from outside hostvol")
	v.requireHealth(false, poolTooFull)
	require.NoError(t, os.Remove(junk))
	v.eventuallyHealthy(false)
	v.Delete()
}

// TestPoolUnmounted lazily unmounts a pool's filesystem under the running
// driver (a plain umount is refused: hostvol holds the pool open). The
// path is then an empty directory of the parent filesystem, not the pool:
// storage health says the pool is unreachable and its volumes say the pool
// is unavailable. Mounting it back mends both.
func TestPoolUnmounted(t *testing.T) {
	dir := setup(t)
	pfs := poolFilesystem(t, dir, 64*mib)
	pool := pfs.Path
	n := testutil.NewNode(t, dir, pool)
	k := dirKind
	k.Size = 8 * mib
	v := create(t, n, dir, "dir", k)
	v.requireHealth(false)
	devs, err := testutil.LoopsFor(pfs.Image)
	require.NoError(t, err)
	require.Equal(t, []string{pfs.Device}, devs)

	require.Error(t, unix.Unmount(pool, 0), "the pool is busy while hostvol runs")
	run(t, "umount", "-l", pool)
	require.Equal(t, []string{storageMissing}, storage(t, n.Client))
	v.requireHealth(false, poolUnavailable)

	require.NoError(t, unix.Mount(devs[0], pool, "ext4", 0, ""))
	require.Empty(t, storage(t, n.Client))
	v.requireHealth(false)
	v.Delete()
}
