package pool_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestSubvolumeSnapshots snapshots a qgroup-limited btrfs volume on a pool
// with quotas: the snapshot is read-only and keeps the data as it was; a
// restore and a clone are writable, independent subvolumes whose qgroup
// limit, once set, is enforced; the qgroups stay consistent throughout;
// removing the read-only snapshot leaves nothing.
func TestSubvolumeSnapshots(t *testing.T) {
	path := testutil.BtrfsPool(t, 400*mib)
	p, err := pool.Open(pool.Spec{Name: "p", Path: path})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	enf, err := quota.New().Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { enf.Close() })
	require.Equal(t, quota.BtrfsQgroup, enf.Info().Method)
	consistent := func(when string) {
		t.Helper()
		bad, err := quota.BtrfsQgroupsInconsistent(path)
		require.NoError(t, err)
		require.False(t, bad, "qgroups consistent %s", when)
	}
	limit := func(id string, bytes int64) {
		t.Helper()
		d, err := p.OpenDir(id)
		require.NoError(t, err)
		defer d.Close()
		_, err = enf.Apply(d, quota.Handle{Method: quota.BtrfsQgroup}, quota.Limits{Bytes: bytes})
		require.NoError(t, err)
	}

	vol := volumeid.FromName("vol")
	require.NoError(t, p.CreateDirWith(vol, enf.MakeDir))
	limit(vol, 64*mib)
	old := bytes.Repeat([]byte{'o'}, 2*mib)
	require.NoError(t, os.WriteFile(filepath.Join(p.DirPath(vol), "f"), old, 0o644))

	snap := volumeid.SnapshotFromName("node", "snap")
	require.NoError(t, p.SnapshotSubvolume(vol, snap))
	require.ErrorIs(t, p.SnapshotSubvolume(vol, snap), os.ErrExist)
	consistent("after a snapshot")
	ok, err := p.SnapshotDirExists(snap)
	require.NoError(t, err)
	require.True(t, ok)
	sub, err := p.SnapshotSubvolumeID(snap)
	require.NoError(t, err)
	require.NotZero(t, sub)
	require.Contains(t, testutil.BtrfsQgroups(t, path), "0/"+itoa(sub), "the snapshot has a qgroup of its own")

	err = os.WriteFile(filepath.Join(p.SnapshotDirPath(snap), "g"), []byte("x"), 0o644)
	require.ErrorIs(t, err, unix.EROFS, "the snapshot is read-only")
	require.NoError(t, os.WriteFile(filepath.Join(p.DirPath(vol), "f"), []byte("new"), 0o644))
	got, err := os.ReadFile(filepath.Join(p.SnapshotDirPath(snap), "f"))
	require.NoError(t, err)
	require.Equal(t, old, got, "the snapshot keeps the data as it was")

	restored := volumeid.FromName("restored")
	require.NoError(t, p.RestoreSubvolume(snap, restored))
	require.ErrorIs(t, p.RestoreSubvolume(snap, restored), os.ErrExist)
	clone := volumeid.FromName("clone")
	require.NoError(t, p.CloneSubvolume(vol, clone))
	consistent("after a restore and a clone")
	got, err = os.ReadFile(filepath.Join(p.DirPath(restored), "f"))
	require.NoError(t, err)
	require.Equal(t, old, got, "the restore holds the snapshot's data")
	got, err = os.ReadFile(filepath.Join(p.DirPath(clone), "f"))
	require.NoError(t, err)
	require.Equal(t, "new", string(got), "the clone holds the volume's data")
	require.NoError(t, os.WriteFile(filepath.Join(p.DirPath(clone), "f"), []byte("clone"), 0o644))
	got, err = os.ReadFile(filepath.Join(p.DirPath(vol), "f"))
	require.NoError(t, err)
	require.Equal(t, "new", string(got), "the clone is independent of its source")

	// A limit set on the restore is enforced.
	limit(restored, 8*mib)
	f, err := os.Create(filepath.Join(p.DirPath(restored), "fill"))
	require.NoError(t, err)
	chunk := bytes.Repeat([]byte{'f'}, mib)
	var werr error
	for i := 0; i < 16 && werr == nil; i++ {
		if _, werr = f.Write(chunk); werr == nil {
			werr = f.Sync()
		}
	}
	f.Close()
	require.ErrorIs(t, werr, unix.EDQUOT, "writing past the restore's limit")
	consistent("after writing to the limit")

	_, err = p.CopyDirToSnapshot(t.Context(), vol, snap, pool.CopyOptions{})
	require.ErrorIs(t, err, os.ErrExist)
	require.NoError(t, p.RemoveSnapshotDir(snap), "removes a read-only subvolume")
	require.NoError(t, p.RemoveSnapshotDir(snap))
	require.NoDirExists(t, p.SnapshotDirPath(snap))
	consistent("after removing the snapshot")
	require.Error(t, p.SnapshotSubvolume(volumeid.FromName("missing"), snap))

	// A plain directory is no subvolume to snapshot.
	plain := volumeid.FromName("plain")
	require.NoError(t, p.CreateDir(plain))
	require.ErrorContains(t, p.SnapshotSubvolume(plain, snap), "not a btrfs subvolume")
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
