package mounter

import (
	"errors"
	"fmt"
	"io/fs"

	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"
)

// Interface is what the volume backend needs from a mounter: mount-utils'
// Interface, plus two exact answers about one path. "Something is mounted
// here" is not enough to act on: after a reboot a target is a plain
// directory, and a staging path may hold another volume's filesystem. The
// backend unmounts, reuses or reports a path only when Shows proves that
// the mount there is the volume's own.
type Interface interface {
	mount.Interface
	// MountRoot reports whether path (a final symlink is not followed) is
	// the root of a mount. A path that does not exist is not.
	MountRoot(path string) (bool, error)
	// Shows reports whether path (a final symlink is not followed) is the
	// root of a mount of source: of the directory source itself (same
	// device and inode: a bind mount of it), or, when source is a block
	// device, of the filesystem on that device or of the device node
	// (a raw block bind mount). A path that does not exist shows nothing.
	Shows(path, source string) (bool, error)
	// ShowsDeletedDir reports whether path is the root of a mount of a
	// directory that has since been removed (no link left): a bind mount
	// whose source directory is gone, which Shows cannot compare.
	ShowsDeletedDir(path string) (bool, error)
}

var _ Interface = (*Mounter)(nil)

// MountRoot answers with one statx(2): STATX_ATTR_MOUNT_ROOT (Linux 5.8+).
// On older kernels it asks mount-utils, which reads the mount table.
func (m *Mounter) MountRoot(path string) (bool, error) {
	_, root, err := m.mountRoot(path)
	return root, err
}

// mountRoot stats path (not following a final symlink) and reports
// whether it is the root of a mount; a missing path is not.
func (m *Mounter) mountRoot(path string) (unix.Statx_t, bool, error) {
	tx, err := statx(path)
	if errors.Is(err, fs.ErrNotExist) {
		return tx, false, nil
	}
	if err != nil {
		return tx, false, err
	}
	if tx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		if tx.Mode&unix.S_IFMT == unix.S_IFLNK {
			return tx, false, nil // a symlink is never followed, hence never a mount
		}
		root, err := m.IsMountPoint(path)
		return tx, root, err
	}
	return tx, tx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// Shows answers with one statx(2) of path and one stat(2) of source.
func (m *Mounter) Shows(path, source string) (bool, error) {
	tx, root, err := m.mountRoot(path)
	if err != nil || !root {
		return false, err
	}
	var src unix.Stat_t
	if err := unix.Stat(source, &src); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, &fs.PathError{Op: "stat", Path: source, Err: err}
	}
	return showsStat(tx, src), nil
}

// ShowsDeletedDir answers with one statx(2).
func (m *Mounter) ShowsDeletedDir(path string) (bool, error) {
	tx, root, err := m.mountRoot(path)
	if err != nil || !root {
		return false, err
	}
	return tx.Mode&unix.S_IFMT == unix.S_IFDIR && tx.Nlink == 0, nil
}

// showsStat compares what statx saw at a mount root with its source.
func showsStat(tx unix.Statx_t, src unix.Stat_t) bool {
	dev := unix.Mkdev(tx.Dev_major, tx.Dev_minor)
	if src.Mode&unix.S_IFMT == unix.S_IFBLK {
		if tx.Mode&unix.S_IFMT == unix.S_IFBLK {
			// The device node bind-mounted onto a file.
			return unix.Mkdev(tx.Rdev_major, tx.Rdev_minor) == uint64(src.Rdev)
		}
		// The filesystem on the device (or a bind mount of it).
		return dev == uint64(src.Rdev)
	}
	return dev == uint64(src.Dev) && tx.Ino == uint64(src.Ino)
}

// statx stats path without following a final symlink or triggering an
// automount. A missing path wraps fs.ErrNotExist.
func statx(path string) (unix.Statx_t, error) {
	var tx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT,
		unix.STATX_TYPE|unix.STATX_INO|unix.STATX_NLINK, &tx)
	if err != nil {
		return tx, &fs.PathError{Op: "statx", Path: path, Err: err}
	}
	return tx, nil
}

// FromList adapts any mount.Interface (mount-utils' FakeMounter in
// unprivileged tests) to Interface, answering from its List: path is a
// mount root when an entry names it; it shows source when the last such
// entry's device is source (mount-utils records a bind mount of a mount
// point under the original device, as /proc/mounts does).
func FromList(m mount.Interface) Interface {
	if i, ok := m.(Interface); ok {
		return i
	}
	return listInspector{m}
}

type listInspector struct{ mount.Interface }

func (l listInspector) entry(path string) (mount.MountPoint, bool, error) {
	mps, err := l.List()
	if err != nil {
		return mount.MountPoint{}, false, fmt.Errorf("list mounts: %w", err)
	}
	var found mount.MountPoint
	ok := false
	for _, mp := range mps {
		if mp.Path == path {
			found, ok = mp, true // the last one is on top
		}
	}
	return found, ok, nil
}

func (l listInspector) MountRoot(path string) (bool, error) {
	_, ok, err := l.entry(path)
	return ok, err
}

// ShowsDeletedDir: a list has no notion of removed directories.
func (l listInspector) ShowsDeletedDir(string) (bool, error) { return false, nil }

func (l listInspector) Shows(path, source string) (bool, error) {
	mp, ok, err := l.entry(path)
	return ok && mp.Device == source, err
}
