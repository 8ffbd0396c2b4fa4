package mounter

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrSymlink is returned (wrapped) when a target or staging path, or a
// directory hostvol would create on the way to it, is a symbolic link: a
// mount there would land wherever the link points.
var ErrSymlink = errors.New("is a symbolic link")

// ErrWrongType is returned (wrapped) when a path exists with the wrong type
// for its mount: a file where a directory is needed, or the reverse.
var ErrWrongType = errors.New("has the wrong file type")

// MountPoint is a path made ready by MakeMountPoint.
type MountPoint struct {
	// Real is the path with every symlink of its existing ancestors
	// resolved (the final component is never a symlink).
	Real string
	// Created reports that MakeMountPoint created the final component.
	Created bool
}

// MakeMountPoint makes path ready to be mounted on: a directory, or with
// file an empty regular file (a raw block device is bind-mounted onto a
// file). Directories that already exist on the way are used as they are,
// symlinks included (an admin may have moved /var/lib/kubelet); every
// directory it creates is created inside a parent it holds open and is
// opened without following symlinks, and the final component must not be a
// symlink (ErrSymlink) nor of the wrong type (ErrWrongType). path must be
// absolute and clean.
func MakeMountPoint(path string, file bool) (MountPoint, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" {
		return MountPoint{}, fmt.Errorf("mount point %q: want an absolute, clean path other than /", path)
	}
	parent, base := filepath.Split(path)
	dfd, err := openDirs(filepath.Clean(parent))
	if err != nil {
		return MountPoint{}, err
	}
	defer unix.Close(dfd)
	real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(dfd))
	if err != nil {
		return MountPoint{}, fmt.Errorf("resolve %s: %w", parent, err)
	}
	mp := MountPoint{Real: filepath.Join(real, base)}
	var st unix.Stat_t
	err = unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		if file {
			fd, err := unix.Openat(dfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o640)
			if err != nil {
				return MountPoint{}, &fs.PathError{Op: "create", Path: path, Err: err}
			}
			unix.Close(fd)
		} else if err := unix.Mkdirat(dfd, base, 0o750); err != nil {
			return MountPoint{}, &fs.PathError{Op: "mkdir", Path: path, Err: err}
		}
		mp.Created = true
		return mp, nil
	case err != nil:
		return MountPoint{}, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return MountPoint{}, fmt.Errorf("%s %w", path, ErrSymlink)
	case unix.S_IFDIR:
		if file {
			return MountPoint{}, fmt.Errorf("%s %w: a directory, where a raw block volume needs a file", path, ErrWrongType)
		}
	case unix.S_IFREG:
		if !file {
			return MountPoint{}, fmt.Errorf("%s %w: a file, where a directory is needed", path, ErrWrongType)
		}
	default:
		return MountPoint{}, fmt.Errorf("%s %w: neither a directory nor a regular file", path, ErrWrongType)
	}
	return mp, nil
}

// openDirs opens dir, creating what is missing of it (mode 0750) without
// following a symlink in anything it creates, and returns an O_PATH
// descriptor of it.
func openDirs(dir string) (int, error) {
	// The deepest existing ancestor is opened as it is (following
	// symlinks the node's admin made); from there on, each component is
	// made and opened with O_NOFOLLOW.
	existing := dir
	var missing []string
	for {
		fd, err := unix.Open(existing, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			for _, c := range missing {
				if err := unix.Mkdirat(fd, c, 0o750); err != nil && !errors.Is(err, unix.EEXIST) {
					unix.Close(fd)
					return -1, &fs.PathError{Op: "mkdir", Path: filepath.Join(existing, c), Err: err}
				}
				next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				unix.Close(fd)
				if err != nil {
					if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
						return -1, fmt.Errorf("%s %w (or not a directory)", filepath.Join(existing, c), ErrSymlink)
					}
					return -1, &fs.PathError{Op: "open", Path: filepath.Join(existing, c), Err: err}
				}
				fd = next
				existing = filepath.Join(existing, c)
			}
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) || existing == "/" {
			return -1, &fs.PathError{Op: "open", Path: existing, Err: err}
		}
		missing = append([]string{filepath.Base(existing)}, missing...)
		existing = filepath.Dir(existing)
	}
}

// RemoveMountPoint removes what MakeMountPoint may have made at path once
// nothing is mounted there: an empty directory, or, with file, an empty
// regular file. Anything else (a directory with files in it, a file with
// data, a symlink, a device) is not hostvol's to remove and is left alone:
// it returns removed=false with the reason. A missing path is removed.
func RemoveMountPoint(path string, file bool) (removed bool, reason string, err error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return true, "", nil
		}
		return false, "", &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		err := unix.Rmdir(path)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return true, "", nil
		case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST):
			return false, "a directory that is not empty", nil
		case errors.Is(err, unix.EBUSY):
			return false, "a directory that is still a mount point", nil
		}
		return false, "", &fs.PathError{Op: "rmdir", Path: path, Err: err}
	case unix.S_IFREG:
		if !file {
			return false, "a file, where a directory was published", nil
		}
		if st.Size != 0 {
			return false, "a file that holds data", nil
		}
		if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
			if errors.Is(err, unix.EBUSY) {
				return false, "a file that is still a mount point", nil
			}
			return false, "", &fs.PathError{Op: "unlink", Path: path, Err: err}
		}
		return true, "", nil
	case unix.S_IFLNK:
		return false, "a symbolic link", nil
	default:
		return false, "neither a directory nor a regular file", nil
	}
}

// Within reports whether path is dir or below it (both clean and absolute).
func Within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// ResolvePath returns path with the symlinks of its deepest existing
// ancestor resolved and the rest (what MakeMountPoint would create)
// appended, without creating anything. A final component that exists is
// resolved too, so that a symlink there shows where it points.
func ResolvePath(path string) (string, error) {
	existing, rest := path, ""
	for {
		real, err := filepath.EvalSymlinks(existing)
		if err == nil {
			return filepath.Join(real, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) || existing == "/" {
			return "", err
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = filepath.Dir(existing)
	}
}
