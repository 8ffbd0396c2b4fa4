package fsutil

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FIFREEZE and FITHAW (linux/fs.h: _IOWR('X', 119, int) and
// _IOWR('X', 120, int)); golang.org/x/sys/unix does not name them.
const (
	fiFreeze = 0xc0045877
	fiThaw   = 0xc0045878
)

// Freeze freezes the filesystem mounted at path (FIFREEZE): the kernel
// writes everything out and blocks new writes until Thaw, so that a copy
// of the device or image beneath it taken meanwhile is consistent. The
// filesystem at path must be the one on the block device dev (compared by
// device number), so that a wrong path can never freeze another
// filesystem (the host's root, say). path is opened without following a
// symlink.
func Freeze(path, dev string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var fst, dst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if err := unix.Stat(dev, &dst); err != nil {
		return &os.PathError{Op: "stat", Path: dev, Err: err}
	}
	if dst.Mode&unix.S_IFMT != unix.S_IFBLK || fst.Dev != dst.Rdev {
		return fmt.Errorf("refusing to freeze %s: its filesystem is not the one on %s", path, dev)
	}
	if err := unix.IoctlSetInt(fd, fiFreeze, 0); err != nil {
		return fmt.Errorf("FIFREEZE %s: %w", path, err)
	}
	return nil
}

// Thaw thaws the filesystem mounted at path (FITHAW). A filesystem that is
// not frozen is not an error (EINVAL): start-up thaws on doubt.
func Thaw(path string) error {
	err := ioctlAt(path, fiThaw, "FITHAW")
	if errors.Is(err, unix.EINVAL) {
		return nil
	}
	return err
}

func ioctlAt(path string, req uint, name string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, req, 0); err != nil {
		return fmt.Errorf("%s %s: %w", name, path, err)
	}
	return nil
}

// FlushDevice writes a block device's dirty buffers out (fsync on the
// device), so that its backing file holds what was written to it.
func FlushDevice(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// SyncFS writes out everything the filesystem mounted at path holds dirty
// (syncfs), so that the image or device beneath it holds its data.
func SyncFS(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}
