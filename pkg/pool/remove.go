package pool

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/quota"
)

// btrfsSubvolumeRootIno is the inode number of every btrfs subvolume's
// root directory (BTRFS_FIRST_FREE_OBJECTID), and of no other directory.
const btrfsSubvolumeRootIno = 256

// removeFrame is a directory being emptied.
type removeFrame struct {
	dir   *os.File
	name  string // its name in the frame below
	names []string
	next  int
}

// removeEntry removes the entry name of the directory parent and, for a
// directory, everything below it: a btrfs subvolume by
// BTRFS_IOC_SNAP_DESTROY (read-only ones too), anything else entry by
// entry, never following a symlink, giving a directory owner rwx before
// emptying it. The walk is iterative; it holds one descriptor per level.
// A missing entry is not an error.
func removeEntry(parent *os.File, name string) error {
	stack := []*removeFrame{{dir: parent}}
	defer func() {
		for _, f := range stack[1:] {
			f.dir.Close()
		}
	}()
	child, err := enterForRemoval(parent, name)
	if err != nil || child == nil {
		return err
	}
	stack = append(stack, child)
	for len(stack) > 1 {
		f := stack[len(stack)-1]
		if f.next < len(f.names) {
			n := f.names[f.next]
			f.next++
			c, err := enterForRemoval(f.dir, n)
			if err != nil {
				return err
			}
			if c != nil {
				stack = append(stack, c)
			}
			continue
		}
		f.dir.Close()
		stack = stack[:len(stack)-1]
		below := stack[len(stack)-1].dir
		if err := unix.Unlinkat(int(below.Fd()), f.name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
			return &os.PathError{Op: "rmdir", Path: f.name, Err: err}
		}
	}
	return nil
}

// enterForRemoval removes the entry name of dir if it is not a directory
// (or is a subvolume, removed whole), or opens it for emptying.
func enterForRemoval(dir *os.File, name string) (*removeFrame, error) {
	dfd := int(dir.Fd())
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, &os.PathError{Op: "lstat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, &os.PathError{Op: "unlink", Path: name, Err: err}
		}
		return nil, nil
	}
	if st.Ino == btrfsSubvolumeRootIno {
		var fs unix.Statfs_t
		if err := unix.Fstatfs(dfd, &fs); err != nil {
			return nil, &os.PathError{Op: "fstatfs", Path: dir.Name(), Err: err}
		}
		if fs.Type == unix.BTRFS_SUPER_MAGIC {
			// The root of a subvolume: read-only ones cannot be emptied.
			if err := quota.BtrfsDeleteSubvolume(dir, name); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
			return nil, nil
		}
	}
	if st.Mode&0o700 != 0o700 {
		if err := unix.Fchmodat(dfd, name, st.Mode&0o7777|0o700, 0); err != nil {
			return nil, &os.PathError{Op: "chmod", Path: name, Err: err}
		}
	}
	d, err := openAt(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		d.Close()
		return nil, err
	}
	return &removeFrame{dir: d, name: name, names: names}, nil
}
