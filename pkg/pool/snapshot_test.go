package pool_test

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const mib = 1 << 20

// TestSnapshotImage copies a sparse image with data at two places, on real
// ext4, XFS and btrfs, by reflink where the pool can and by copy
// everywhere: the snapshot holds the image's data as it was, keeps its
// holes, does not change when the image is written after, and refuses to
// be made twice. A reflink where the pool cannot leaves nothing behind.
func TestSnapshotImage(t *testing.T) {
	testutil.RequireRootAndTools(t, "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs")
	for _, fs := range []string{"ext4", "xfs", "btrfs"} {
		t.Run(fs, func(t *testing.T) {
			path := testutil.NewPoolFS(t, t.TempDir(), testutil.PoolFSOptions{Type: fs, Size: 400 * mib}).Path
			p, err := pool.Open(pool.Spec{Name: "p", Path: path})
			require.NoError(t, err)
			t.Cleanup(func() { p.Close() })
			cs, err := p.DetectCopy()
			require.NoError(t, err)

			ctx := context.Background()
			vol := volumeid.FromName("v")
			require.NoError(t, p.CreateImage(vol, 64*mib, true))
			a, b := bytes.Repeat([]byte{'a'}, mib), bytes.Repeat([]byte{'b'}, mib)
			writeAt(t, p.ImagePath(vol), a, 0)
			writeAt(t, p.ImagePath(vol), b, 40*mib)
			want, err := os.ReadFile(p.ImagePath(vol))
			require.NoError(t, err)

			for _, reflink := range []bool{false, true} {
				snap := volumeid.SnapshotFromName("node", fs+map[bool]string{false: "-copy", true: "-reflink"}[reflink])
				o := pool.CopyOptions{Reflink: reflink}
				err := p.SnapshotImage(ctx, vol, snap, o)
				if reflink && !cs.Reflink {
					require.ErrorIs(t, err, unix.EOPNOTSUPP)
					require.NoFileExists(t, p.SnapshotImagePath(snap), "a failed copy leaves nothing")
					continue
				}
				require.NoError(t, err)
				got, err := os.ReadFile(p.SnapshotImagePath(snap))
				require.NoError(t, err)
				require.True(t, bytes.Equal(want, got), "the snapshot holds the image's data")
				size, allocated, err := p.SnapshotImageUsage(snap)
				require.NoError(t, err)
				require.EqualValues(t, 64*mib, size)
				require.Less(t, allocated, int64(8*mib), "holes stay holes")
				require.ErrorIs(t, p.SnapshotImage(ctx, vol, snap, o), os.ErrExist)
				ok, err := p.SnapshotImageExists(snap)
				require.NoError(t, err)
				require.True(t, ok)

				// Restore and clone make new images with the same data.
				restored := volumeid.FromName(snap + "-restored")
				require.NoError(t, p.RestoreImage(ctx, snap, restored, o))
				require.ErrorIs(t, p.RestoreImage(ctx, snap, restored, o), os.ErrExist)
				clone := volumeid.FromName(snap + "-clone")
				require.NoError(t, p.CloneImage(ctx, restored, clone, o))
				for _, id := range []string{restored, clone} {
					got, err := os.ReadFile(p.ImagePath(id))
					require.NoError(t, err)
					require.True(t, bytes.Equal(want, got), "a restore or clone holds the data")
					_, allocated, err := p.ImageUsage(id)
					require.NoError(t, err)
					require.Less(t, allocated, int64(8*mib), "holes stay holes")
				}
			}

			writeAt(t, p.ImagePath(vol), b, 0)
			snap := volumeid.SnapshotFromName("node", fs+"-copy")
			got, err := os.ReadFile(p.SnapshotImagePath(snap))
			require.NoError(t, err)
			require.True(t, bytes.Equal(want, got), "writing the image after leaves the snapshot as it was")
			require.NoError(t, p.RemoveSnapshotImage(snap))
			require.NoError(t, p.RemoveSnapshotImage(snap), "removing what is gone succeeds")
			require.NoFileExists(t, p.SnapshotImagePath(snap))
			ok, err := p.SnapshotImageExists(snap)
			require.NoError(t, err)
			require.False(t, ok)
			require.ErrorIs(t, p.RestoreImage(ctx, snap, volumeid.FromName("w"), pool.CopyOptions{}), os.ErrNotExist)
		})
	}
}

func writeAt(t *testing.T, path string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt(data, off)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
}
