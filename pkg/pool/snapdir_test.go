package pool_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestCopyDir copies a tree holding every kind of file, on real ext4, XFS
// and btrfs, by copy and (where the pool can) by reflink: into a snapshot,
// back into a new volume, and from volume to volume. Each copy holds
// exactly the source (contents, holes, modes with set-ID and sticky bits,
// owners, times, symlinks, hard links, extended attributes and ACLs,
// FIFO, device, socket, a deep chain), does not change when the source
// does, and never follows the symlink planted to point out of the pool.
func TestCopyDir(t *testing.T) {
	testutil.RequireRootAndTools(t, "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs")
	for _, fs := range []string{"ext4", "xfs", "btrfs"} {
		t.Run(fs, func(t *testing.T) {
			p, cs := openPoolFS(t, fs, 400*mib)
			outside := filepath.Join(t.TempDir(), "secret")
			require.NoError(t, os.WriteFile(outside, []byte("outside the pool"), 0o600))
			outsideBefore := describe(t, filepath.Dir(outside))

			src := volumeid.FromName(fs + "-src")
			require.NoError(t, p.CreateDir(src))
			buildTree(t, p.DirPath(src), outside)
			snaps := map[string]map[string]string{} // each snapshot as it was made

			ctx := context.Background()
			for _, reflink := range []bool{false, true} {
				if reflink && !cs.Reflink {
					continue
				}
				name := fmt.Sprintf("%s-%v", fs, reflink)
				o := pool.CopyOptions{Reflink: reflink}
				var progress int64
				o.Progress = func(n int64) { progress = n }

				// Taken again for each copy: reading a symlink sets its
				// access time, and nothing can read one without.
				want := describe(t, p.DirPath(src))
				snap := volumeid.SnapshotFromName("node", name)
				n, err := p.CopyDirToSnapshot(ctx, src, snap, o)
				require.NoError(t, err)
				require.GreaterOrEqual(t, n, int64(2*mib), "the bytes of file data copied")
				require.Equal(t, n, progress, "progress ends at the total")
				require.Equal(t, want, describe(t, p.SnapshotDirPath(snap)), "the snapshot holds the tree")
				ok, err := p.SnapshotDirExists(snap)
				require.NoError(t, err)
				require.True(t, ok)
				_, err = p.CopyDirToSnapshot(ctx, src, snap, o)
				require.ErrorIs(t, err, os.ErrExist)

				restored := volumeid.FromName(name + "-restored")
				require.NoError(t, p.CreateDir(restored))
				_, err = p.CopyDirFromSnapshot(ctx, snap, restored, o)
				require.NoError(t, err)
				require.Equal(t, want, describe(t, p.DirPath(restored)), "the restore holds the tree")
				_, err = p.CopyDirFromSnapshot(ctx, snap, restored, o)
				require.ErrorIs(t, err, os.ErrExist, "a volume that is not empty")

				clone := volumeid.FromName(name + "-clone")
				require.NoError(t, p.CreateDir(clone))
				_, err = p.CloneDir(ctx, restored, clone, o)
				require.NoError(t, err)
				require.Equal(t, want, describe(t, p.DirPath(clone)), "the clone holds the tree")

				id, err := p.SnapshotSubvolumeID(snap)
				require.NoError(t, err)
				require.Zero(t, id, "a copy is no subvolume")
				snaps[snap] = describe(t, p.SnapshotDirPath(snap))
			}

			// The source changes; the copies do not.
			writeAt(t, filepath.Join(p.DirPath(src), "data"), []byte("changed"), 0)
			require.NoError(t, os.WriteFile(filepath.Join(p.DirPath(src), "new"), []byte("new"), 0o644))
			require.NoError(t, os.Chmod(filepath.Join(p.DirPath(src), "sticky"), 0o700))
			for snap, want := range snaps {
				require.Equal(t, want, describe(t, p.SnapshotDirPath(snap)), "the snapshot does not change with its source")
			}
			require.Equal(t, outsideBefore, describe(t, filepath.Dir(outside)), "the file outside the pool is untouched")

			ids, err := p.SnapshotEntries()
			require.NoError(t, err)
			require.Len(t, ids, len(snaps))
			for _, id := range ids {
				require.NoError(t, p.RemoveSnapshotDir(id), "removes read-only files and 0500 directories")
				require.NoError(t, p.RemoveSnapshotDir(id), "removing what is gone succeeds")
				require.NoDirExists(t, p.SnapshotDirPath(id))
			}
			require.Equal(t, outsideBefore, describe(t, filepath.Dir(outside)), "removal follows no symlink")
		})
	}
}

// TestCopyDirFailures: a cancelled copy into a snapshot removes it, one
// into a volume leaves the volume to the caller; a cancelled image copy
// leaves nothing; a missing source is os.ErrNotExist and leaves nothing; a
// source that is a symlink is not followed; a tree too deep is refused
// and removed.
func TestCopyDirFailures(t *testing.T) {
	p, _ := openPoolFS(t, "ext4", 200*mib)
	ctx := context.Background()
	src := volumeid.FromName("src")
	require.NoError(t, p.CreateDir(src))
	for i := range 8 {
		require.NoError(t, os.WriteFile(filepath.Join(p.DirPath(src), fmt.Sprint("f", i)), bytes.Repeat([]byte{'x'}, 64<<10), 0o644))
	}
	cancelled := func() pool.CopyOptions {
		cctx, cancel := context.WithCancel(ctx)
		ctx = cctx
		return pool.CopyOptions{Progress: func(int64) { cancel() }}
	}

	snap := volumeid.SnapshotFromName("node", "cancelled")
	o := cancelled()
	_, err := p.CopyDirToSnapshot(ctx, src, snap, o)
	require.ErrorIs(t, err, context.Canceled)
	require.NoDirExists(t, p.SnapshotDirPath(snap), "a cancelled snapshot copy removes what it made")

	ctx = context.Background()
	vol := volumeid.FromName("into")
	require.NoError(t, p.CreateDir(vol))
	o = cancelled()
	_, err = p.CloneDir(ctx, src, vol, o)
	require.ErrorIs(t, err, context.Canceled)
	require.DirExists(t, p.DirPath(vol), "the caller removes the volume")

	ctx = context.Background()
	img := volumeid.FromName("img")
	require.NoError(t, p.CreateImage(img, 64*mib, true))
	writeAt(t, p.ImagePath(img), bytes.Repeat([]byte{'a'}, 40*mib), 0)
	o = cancelled()
	require.ErrorIs(t, p.SnapshotImage(ctx, img, snap, o), context.Canceled)
	require.NoFileExists(t, p.SnapshotImagePath(snap), "a cancelled image copy removes what it wrote")

	ctx = context.Background()
	_, err = p.CopyDirToSnapshot(ctx, volumeid.FromName("missing"), snap, pool.CopyOptions{})
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoDirExists(t, p.SnapshotDirPath(snap))

	// A volume directory replaced by a symlink to a directory outside.
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600))
	link := volumeid.FromName("link")
	require.NoError(t, os.Symlink(outside, p.DirPath(link)))
	_, err = p.CopyDirToSnapshot(ctx, link, snap, pool.CopyOptions{})
	require.Error(t, err)
	require.NoDirExists(t, p.SnapshotDirPath(snap))
	// And a snapshot directory replaced by one: removal takes the link.
	require.NoError(t, os.Symlink(outside, p.SnapshotDirPath(snap)))
	require.NoError(t, p.RemoveSnapshotDir(snap))
	require.NoFileExists(t, p.SnapshotDirPath(snap))
	require.FileExists(t, filepath.Join(outside, "secret"))

	deep := volumeid.FromName("deep")
	require.NoError(t, p.CreateDir(deep))
	d, err := os.Open(p.DirPath(deep))
	require.NoError(t, err)
	for range 1030 {
		require.NoError(t, unix.Mkdirat(int(d.Fd()), "d", 0o755))
		fd, err := unix.Openat(int(d.Fd()), "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		require.NoError(t, err)
		d.Close()
		d = os.NewFile(uintptr(fd), "d")
	}
	d.Close()
	_, err = p.CopyDirToSnapshot(ctx, deep, snap, pool.CopyOptions{})
	require.ErrorIs(t, err, pool.ErrTooDeep)
	require.NoDirExists(t, p.SnapshotDirPath(snap))
}

// TestCopyDirReflinkShares: on XFS and btrfs a reflink copy of a 32 MiB
// file takes (almost) no space: the copy shares the file's blocks.
func TestCopyDirReflinkShares(t *testing.T) {
	testutil.RequireRootAndTools(t, "mkfs.xfs", "mkfs.btrfs")
	for _, fs := range []string{"xfs", "btrfs"} {
		t.Run(fs, func(t *testing.T) {
			p, cs := openPoolFS(t, fs, 400*mib)
			require.True(t, cs.Reflink)
			src := volumeid.FromName("src")
			require.NoError(t, p.CreateDir(src))
			data := make([]byte, 32*mib)
			for i := range data {
				data[i] = byte(i*7 + i>>12)
			}
			require.NoError(t, os.WriteFile(filepath.Join(p.DirPath(src), "big"), data, 0o644))
			before := freeAfterSync(t, p)
			snap := volumeid.SnapshotFromName("node", "shared")
			n, err := p.CopyDirToSnapshot(context.Background(), src, snap, pool.CopyOptions{Reflink: true})
			require.NoError(t, err)
			require.EqualValues(t, 32*mib, n)
			after := freeAfterSync(t, p)
			t.Logf("%s: free before %d, after a reflink copy of 32 MiB %d", fs, before, after)
			require.Less(t, before-after, int64(4*mib), "the copy shares the file's blocks")
			got, err := os.ReadFile(filepath.Join(p.SnapshotDirPath(snap), "big"))
			require.NoError(t, err)
			require.True(t, bytes.Equal(data, got))
		})
	}
}

func freeAfterSync(t *testing.T, p *pool.Pool) int64 {
	t.Helper()
	f, err := os.Open(p.Path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, unix.Syncfs(int(f.Fd())))
	st, err := p.Stats()
	require.NoError(t, err)
	return st.FreeBytes
}

func openPoolFS(t *testing.T, fs string, size int64) (*pool.Pool, pool.CopySupport) {
	t.Helper()
	path := testutil.NewPoolFS(t, t.TempDir(), testutil.PoolFSOptions{Type: fs, Size: size}).Path
	p, err := pool.Open(pool.Spec{Name: "p", Path: path})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	cs, err := p.DetectCopy()
	require.NoError(t, err)
	return p, cs
}

// buildTree fills dir with one of every kind of thing a copy must keep.
func buildTree(t *testing.T, dir, outside string) {
	t.Helper()
	at := func(n string) string { return filepath.Join(dir, n) }
	must := func(err error) { t.Helper(); require.NoError(t, err) }

	// A sparse file: data, a hole, data, a hole at the end.
	f, err := os.OpenFile(at("data"), os.O_CREATE|os.O_WRONLY, 0o644)
	must(err)
	_, err = f.WriteAt(bytes.Repeat([]byte{'a'}, mib), 0)
	must(err)
	_, err = f.WriteAt(bytes.Repeat([]byte{'b'}, mib), 3*mib)
	must(err)
	must(f.Truncate(6 * mib))
	must(f.Close())
	must(os.Chown(at("data"), 1234, 5678))
	must(os.Chmod(at("data"), 0o4755|os.ModeSetuid))
	must(unix.Chmod(at("data"), 0o6755))
	must(unix.Setxattr(at("data"), "user.color", []byte("blue"), 0))
	must(unix.Setxattr(at("data"), "trusted.hostvol", []byte{0, 1, 2}, 0))
	must(os.WriteFile(at("empty"), nil, 0o600))

	must(os.WriteFile(at("acl"), []byte("acl"), 0o640))
	must(unix.Setxattr(at("acl"), "system.posix_acl_access", posixACL(), 0))

	must(os.Mkdir(at("ro"), 0o755))
	must(os.WriteFile(at("ro/file"), []byte("read-only"), 0o400))
	must(os.Mkdir(at("ro/inner"), 0o500))
	must(os.Chmod(at("ro"), 0o500))
	must(os.Mkdir(at("sticky"), 0o755))
	must(unix.Chmod(at("sticky"), 0o1777))
	must(os.Chown(at("sticky"), 42, 43))
	must(unix.Setxattr(at("sticky"), "user.dir", []byte("x"), 0))

	must(os.Mkdir(at("sub"), 0o750))
	must(os.WriteFile(at("hard1"), []byte("linked twice"), 0o644))
	must(os.Link(at("hard1"), at("sub/hard2")))
	must(os.Symlink("data", at("link-rel")))
	must(os.Symlink(outside, at("escape")))
	must(os.Symlink("../nowhere", at("sub/dangling")))
	must(unix.Lchown(at("sub/dangling"), 7, 8))
	must(unix.Mkfifo(at("fifo"), 0o640))
	must(unix.Mknod(at("null"), unix.S_IFCHR|0o620, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(at("sock"), unix.S_IFSOCK|0o755, 0))
	must(os.Link(at("fifo"), at("sub/fifo2")))

	chain := dir
	for range 40 {
		chain = filepath.Join(chain, "d")
	}
	must(os.MkdirAll(chain, 0o755))
	must(os.WriteFile(filepath.Join(chain, "bottom"), []byte("deep"), 0o644))

	must(os.Chown(dir, 1000, 1001))
	must(os.Chmod(dir, 0o755))
	// Distinct times, children before their directories.
	var paths []string
	must(filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}))
	base := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := len(paths) - 1; i >= 0; i-- {
		ts := []unix.Timespec{unix.NsecToTimespec(base.Add(time.Duration(i)*time.Hour + 123).UnixNano()), unix.NsecToTimespec(base.Add(time.Duration(i)*time.Minute + 456).UnixNano())}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

// posixACL is user::rwx user:1000:r-x group::r-x mask::r-x other::r-- in
// the kernel's xattr format.
func posixACL() []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 2)
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{0x01, 7, 0xffffffff}, {0x02, 5, 1000}, {0x04, 5, 0xffffffff}, {0x10, 5, 0xffffffff}, {0x20, 4, 0xffffffff}} {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// describe lists everything under root (root itself as "."), with every
// property a copy must keep, reading without changing access times.
func describe(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	inodes := map[uint64]string{} // first path of each multiply-linked inode
	var walk func(rel string)
	walk = func(rel string) {
		path := filepath.Join(root, rel)
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(path, &st))
		typ := st.Mode & unix.S_IFMT
		d := fmt.Sprintf("type=%o mode=%o uid=%d gid=%d atime=%d mtime=%d", typ, st.Mode&0o7777, st.Uid, st.Gid, st.Atim.Nano(), st.Mtim.Nano())
		if typ != unix.S_IFDIR {
			d += fmt.Sprintf(" size=%d rdev=%d nlink=%d", st.Size, st.Rdev, st.Nlink)
			if st.Nlink > 1 {
				if _, ok := inodes[st.Ino]; !ok {
					inodes[st.Ino] = rel
				}
				d += " linked-to=" + inodes[st.Ino]
			}
		}
		d += " xattrs=" + xattrs(t, path)
		var names []string
		switch typ {
		case unix.S_IFLNK:
			target, err := os.Readlink(path)
			require.NoError(t, err)
			// readlink sets the link's access time: put it back.
			require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW))
			d += " target=" + target
		case unix.S_IFREG:
			f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOATIME|unix.O_NOFOLLOW, 0)
			require.NoError(t, err)
			h := sha256.New()
			_, err = f.WriteTo(h)
			require.NoError(t, err)
			f.Close()
			d += fmt.Sprintf(" sha256=%x sparse=%v", h.Sum(nil), st.Blocks*512 < st.Size)
		case unix.S_IFDIR:
			f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOATIME|unix.O_NOFOLLOW|unix.O_DIRECTORY, 0)
			require.NoError(t, err)
			names, err = f.Readdirnames(-1)
			require.NoError(t, err)
			f.Close()
			sort.Strings(names)
		}
		out[rel] = d
		for _, n := range names {
			walk(filepath.Join(rel, n))
		}
	}
	walk(".")
	return out
}

func xattrs(t *testing.T, path string) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(path, buf)
	require.NoError(t, err)
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	var out []string
	for _, a := range names {
		if a == "" {
			continue
		}
		v := make([]byte, 4096)
		m, err := unix.Lgetxattr(path, a, v)
		require.NoError(t, err)
		out = append(out, fmt.Sprintf("%s=%x", a, v[:m]))
	}
	return strings.Join(out, ",")
}
