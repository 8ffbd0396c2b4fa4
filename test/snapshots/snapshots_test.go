// Package snapshots takes snapshots, restores and clones of real volumes on
// real pools, by each method hostvol has: btrfs subvolume snapshots,
// reflinks of images (with the staged filesystem frozen, the device
// flushed) and background copies. Needs root.
package snapshots

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const mib = int64(1) << 20

// node starts a driver on a pool filesystem of its own.
func node(t *testing.T, o testutil.PoolFSOptions) (*testutil.Node, string) {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	testutil.CleanupUnder(t, dir)
	pfs := testutil.NewPoolFS(t, t.TempDir(), o)
	testutil.CleanupUnder(t, testutil.LayoutAt("", pfs.Path).ImagesDir())
	return testutil.NewNode(t, dir, pfs.Path), dir
}

// appender appends numbered lines ("%08d\n") to a file until stopped, as
// a pod that keeps writing would; no fsync: what reaches the image is the
// filesystem's business (a freeze writes it out).
type appender struct {
	stop     chan struct{}
	done     chan error
	lines    atomic.Int64
	haltOnce sync.Once
	err      error
}

func startAppender(t *testing.T, path string) *appender {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	require.NoError(t, err)
	a := &appender{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		defer f.Close()
		for i := int64(1); ; i++ {
			select {
			case <-a.stop:
				a.done <- nil
				return
			default:
			}
			if _, err := fmt.Fprintf(f, "%08d\n", i); err != nil {
				a.done <- err
				return
			}
			a.lines.Store(i)
		}
	}()
	t.Cleanup(func() { _ = a.halt() })
	return a
}

// halt stops the writer and returns why it stopped (nil: asked to).
func (a *appender) halt() error {
	a.haltOnce.Do(func() {
		close(a.stop)
		a.err = <-a.done
	})
	return a.err
}

// waitLines waits until n lines are written.
func (a *appender) waitLines(t *testing.T, n int64) {
	t.Helper()
	for a.lines.Load() < n {
		select {
		case err := <-a.done:
			a.done <- err
			t.Fatalf("writer stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
}

// requireLines checks that a file holds lines 1..n for some n >= min, each
// whole, and nothing else: a consistent state of what the appender wrote.
func requireLines(t *testing.T, path string, minLines int64) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	n := int64(len(b) / 9)
	require.GreaterOrEqual(t, n, minLines, "lines in %s", path)
	require.Zero(t, len(b)%9, "%s ends with a torn line", path)
	for i := int64(0); i < n; i++ {
		require.Equal(t, fmt.Sprintf("%08d\n", i+1), string(b[i*9:i*9+9]), "line %d of %s", i+1, path)
	}
	return n
}

// TestReflinkSnapshotWhileWriting: on an XFS pool with reflink, a snapshot
// of a loop volume whose filesystem a writer keeps appending to holds a
// consistent prefix of what was written (the filesystem is frozen for the
// instant of the FICLONE, and thawed: the writer goes on), not what was
// written after; a restore (larger than the source) holds it, with its
// filesystem grown; a clone holds the source's current data; all survive
// the deletion of the others in either order.
func TestReflinkSnapshotWhileWriting(t *testing.T) {
	for _, k := range []testutil.Kind{testutil.Ext4Kind, testutil.XFSKind} {
		t.Run(k.Name, func(t *testing.T) {
			n, dir := node(t, testutil.PoolFSOptions{Type: "xfs", Size: 8 << 30, Mkfs: []string{"-m", "reflink=1"}})
			v := testutil.CreateVolume(t, n, dir, k, "src", 0)
			v.Up()
			log := filepath.Join(v.Target, "log")
			a := startAppender(t, log)
			a.waitLines(t, 1000)
			snap := v.Snapshot("snap")
			a.waitLines(t, a.lines.Load()+1000) // the freeze is over: writes go on
			require.NoError(t, a.halt())
			require.NoError(t, os.WriteFile(filepath.Join(v.Target, "after"), []byte("after"), 0o644))

			r := testutil.CreateVolumeFrom(t, n, dir, k, "restored", v.Capacity+64*mib, testutil.SnapshotSource(snap.GetSnapshotId()))
			require.Equal(t, v.Capacity+64*mib, r.Capacity)
			r.Up()
			got := requireLines(t, filepath.Join(r.Target, "log"), 1000)
			require.Less(t, got, a.lines.Load(), "the restore holds the data at snapshot time, not later")
			require.NoFileExists(t, filepath.Join(r.Target, "after"))
			var src, dst unix.Statfs_t
			require.NoError(t, unix.Statfs(v.Target, &src))
			require.NoError(t, unix.Statfs(r.Target, &dst))
			require.Greater(t, dst.Blocks*uint64(dst.Bsize), src.Blocks*uint64(src.Bsize), "the restored filesystem grew at stage")

			c := testutil.CreateVolumeFrom(t, n, dir, k, "clone", 0, testutil.VolumeSource(v.ID))
			c.Up()
			require.FileExists(t, filepath.Join(c.Target, "after"), "a clone holds the source's current data")
			requireLines(t, filepath.Join(c.Target, "log"), a.lines.Load())

			v.Down()
			v.Delete()
			testutil.DeleteSnapshot(t, n, snap.GetSnapshotId())
			r.Down()
			r.Up()
			require.Equal(t, got, requireLines(t, filepath.Join(r.Target, "log"), 1000), "a restore outlives its snapshot and source")
			r.Down()
			r.Delete()
			c.Down()
			c.Delete()
		})
	}
}

// TestReflinkSnapshotOfBlockVolume: a raw block volume's device is flushed
// before the FICLONE: what was written to it (buffered, no fsync) is in
// the snapshot, what was written after is not.
func TestReflinkSnapshotOfBlockVolume(t *testing.T) {
	n, dir := node(t, testutil.PoolFSOptions{Type: "xfs", Size: 4 << 30, Mkfs: []string{"-m", "reflink=1"}})
	v := testutil.CreateVolume(t, n, dir, testutil.BlockKind, "blk", 0)
	v.Up()
	before, after := make([]byte, mib), make([]byte, mib)
	_, _ = rand.Read(before)
	_, _ = rand.Read(after)
	writeAt := func(path string, b []byte) {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt(b, 0)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}
	writeAt(v.Target, before)
	snap := v.Snapshot("snap")
	writeAt(v.Target, after)
	r := testutil.CreateVolumeFrom(t, n, dir, testutil.BlockKind, "restored", 0, testutil.SnapshotSource(snap.GetSnapshotId()))
	r.Up()
	f, err := os.Open(r.Target)
	require.NoError(t, err)
	got := make([]byte, mib)
	_, err = f.ReadAt(got, 0)
	require.NoError(t, f.Close())
	require.NoError(t, err)
	require.True(t, bytes.Equal(before, got), "the restored device holds what was written before the snapshot")
	r.Down()
	r.Delete()
	testutil.DeleteSnapshot(t, n, snap.GetSnapshotId())
	v.Down()
	v.Delete()
}

// TestBtrfsSubvolumeSnapshot: a directory volume on a btrfs pool with
// quotas is a subvolume; its snapshot is a read-only subvolume snapshot; a
// restore is a writable snapshot with its own qgroup limit (enforced), not
// inherited, so the qgroups stay consistent; deleting everything leaves no
// qgroup behind.
func TestBtrfsSubvolumeSnapshot(t *testing.T) {
	testutil.RequireRootAndTools(t, "mkfs.btrfs", "btrfs")
	dir := t.TempDir()
	testutil.CleanupUnder(t, dir)
	poolPath := testutil.BtrfsPool(t, 2<<30)
	n := testutil.NewNode(t, dir, poolPath)
	k := testutil.Kind{Name: "dir", Params: map[string]string{}, Size: 64 * mib}
	v := testutil.CreateVolume(t, n, dir, k, "src", 0)
	v.Up()
	data := make([]byte, 8*mib)
	_, _ = rand.Read(data)
	require.NoError(t, os.WriteFile(filepath.Join(v.Target, "data"), data, 0o644))
	snap := v.Snapshot("snap")
	require.NoError(t, os.WriteFile(filepath.Join(v.Target, "data"), []byte("changed"), 0o644))

	snapDir := filepath.Join(poolPath, "snapshots", snap.GetSnapshotId())
	err := os.WriteFile(filepath.Join(snapDir, "x"), nil, 0o644)
	require.ErrorIs(t, err, unix.EROFS, "a snapshot is read-only")

	r := testutil.CreateVolumeFrom(t, n, dir, k, "restored", 96*mib, testutil.SnapshotSource(snap.GetSnapshotId()))
	r.Up()
	got, err := os.ReadFile(filepath.Join(r.Target, "data"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "the restore holds the data at snapshot time")
	// 8 MiB referenced already; the limit is 96 MiB: a 96 MiB file fails.
	f, err := os.Create(filepath.Join(r.Target, "big"))
	require.NoError(t, err)
	werr := writeFull(f, 96*mib)
	require.NoError(t, f.Close())
	require.ErrorIs(t, werr, unix.EDQUOT, "the restored volume's qgroup limit holds")

	requireQgroupsConsistent(t, poolPath)
	c := testutil.CreateVolumeFrom(t, n, dir, k, "clone", 0, testutil.VolumeSource(v.ID))
	c.Up()
	got, err = os.ReadFile(filepath.Join(c.Target, "data"))
	require.NoError(t, err)
	require.Equal(t, "changed", string(got))
	for _, x := range []*testutil.Volume{v, r, c} {
		x.Down()
	}
	testutil.DeleteSnapshot(t, n, snap.GetSnapshotId())
	for _, x := range []*testutil.Volume{v, r, c} {
		x.Delete()
	}
	requireQgroupsConsistent(t, poolPath)
	ids, err := quota.BtrfsQgroups(poolPath)
	require.NoError(t, err)
	require.Equal(t, []uint64{5}, ids, "no qgroup outlives its subvolume")
}

func writeFull(f *os.File, n int64) error {
	buf := make([]byte, mib)
	for done := int64(0); done < n; done += mib {
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Sync()
}

func requireQgroupsConsistent(t *testing.T, path string) {
	t.Helper()
	testutil.Run(t, "btrfs", "filesystem", "sync", path)
	out := testutil.Run(t, "btrfs", "qgroup", "show", path)
	require.NotContains(t, strings.ToLower(out), "inconsistent", "btrfs qgroup show: %s", out)
}

// TestCopySnapshotRefusesLiveVolume: on an ext4 pool (no reflink) a
// snapshot of a loop volume is a copy; it is refused while the volume is
// published read-write unless the class allows it, and taken once the
// writer is gone; its restore holds the data.
func TestCopySnapshotRefusesLiveVolume(t *testing.T) {
	n, dir := node(t, testutil.PoolFSOptions{Type: "ext4", Size: 2 << 30})
	for _, k := range []testutil.Kind{testutil.Ext4Kind, {Name: "dir", Params: map[string]string{"sizeLimit": "optional"}, Size: 64 * mib}} {
		t.Run(k.Name, func(t *testing.T) {
			v := testutil.CreateVolume(t, n, dir, k, "live-"+k.Name, 0)
			v.Up()
			require.NoError(t, os.WriteFile(filepath.Join(v.Target, "f"), []byte("data"), 0o644))
			_, err := v.SnapshotErr("refused-"+k.Name, nil)
			require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
			require.Contains(t, status.Convert(err).Message(), "allowLiveCopy")
			s, err := v.SnapshotErr("allowed-"+k.Name, map[string]string{"allowLiveCopy": "true"})
			require.NoError(t, err)
			v.Unpublish()
			snap := v.Snapshot("copy-" + k.Name)
			r := testutil.CreateVolumeFrom(t, n, dir, k, "restored-"+k.Name, 0, testutil.SnapshotSource(snap.GetSnapshotId()))
			r.Up()
			got, err := os.ReadFile(filepath.Join(r.Target, "f"))
			require.NoError(t, err)
			require.Equal(t, "data", string(got))
			r.Down()
			r.Delete()
			for _, id := range []string{s.GetSnapshotId(), snap.GetSnapshotId()} {
				testutil.DeleteSnapshot(t, n, id)
			}
			v.Unstage()
			v.Delete()
			resp, err := n.Client.ListSnapshots(testutil.Ctx(t), &csi.ListSnapshotsRequest{})
			require.NoError(t, err)
			require.Empty(t, resp.GetEntries())
		})
	}
}
