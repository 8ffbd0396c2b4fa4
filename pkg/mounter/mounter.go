// Package mounter adapts k8s.io/mount-utils for hostvol's hot path: bind
// mounts, mounts of the ext4 and xfs filesystems hostvol makes, and
// unmounts are made with the mount(2) and umount2(2) system calls instead of
// running mount(8) and umount(8) (mount(8) twice for a read-only bind),
// which costs milliseconds per stage and publish. Anything else (other
// filesystems or options, listing, mount-point checks) goes to the wrapped
// mount.Interface unchanged.
package mounter

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"
)

// Mounter is a mount.Interface whose bind mounts and unmounts are syscalls.
type Mounter struct {
	mount.Interface
}

// New wraps m.
func New(m mount.Interface) *Mounter { return &Mounter{Interface: m} }

// perMount maps the per-mount options hostvol accepts to mount flags.
var perMount = map[string]uintptr{
	"ro":          unix.MS_RDONLY,
	"rw":          0,
	"nosuid":      unix.MS_NOSUID,
	"nodev":       unix.MS_NODEV,
	"noexec":      unix.MS_NOEXEC,
	"exec":        0,
	"noatime":     unix.MS_NOATIME,
	"nodiratime":  unix.MS_NODIRATIME,
	"relatime":    unix.MS_RELATIME,
	"strictatime": unix.MS_STRICTATIME,
	"nosymfollow": unix.MS_NOSYMFOLLOW,
}

// statfsFlags maps the flags statfs reports for a mount to mount flags, to
// keep what a bind mount inherited from its source when it is remounted.
var statfsFlags = map[int64]uintptr{
	unix.ST_RDONLY:     unix.MS_RDONLY,
	unix.ST_NOSUID:     unix.MS_NOSUID,
	unix.ST_NODEV:      unix.MS_NODEV,
	unix.ST_NOEXEC:     unix.MS_NOEXEC,
	unix.ST_NOATIME:    unix.MS_NOATIME,
	unix.ST_NODIRATIME: unix.MS_NODIRATIME,
	unix.ST_RELATIME:   unix.MS_RELATIME,
	0x2000:             unix.MS_NOSYMFOLLOW, // ST_NOSYMFOLLOW (linux/statfs.h), not in x/sys
}

// bindFlags returns the flags of a bind mount with only per-mount options,
// or ok=false if options hold anything else (then mount(8) handles it).
func bindFlags(options []string) (flags uintptr, ok bool) {
	bind := false
	for _, o := range options {
		if o == "bind" {
			bind = true
			continue
		}
		f, known := perMount[o]
		if !known {
			return 0, false
		}
		flags |= f
	}
	return flags, bind
}

// fsFlags are filesystem mount options that are mount flags too.
var fsFlags = map[string]uintptr{
	"lazytime": unix.MS_LAZYTIME, "nolazytime": 0,
	"sync": unix.MS_SYNCHRONOUS, "dirsync": unix.MS_DIRSYNC,
}

// fsData are options passed to the filesystem itself.
var fsData = map[string]bool{"discard": true, "nodiscard": true, "nouuid": true}

// syscallFS are the filesystems mounted with mount(2).
var syscallFS = map[string]bool{"ext4": true, "xfs": true}

// fsMountArgs returns mount(2) flags and data for options, or ok=false if
// an option is not one this package knows.
func fsMountArgs(options []string) (flags uintptr, data string, ok bool) {
	var d []string
	for _, o := range options {
		if f, known := perMount[o]; known {
			flags |= f
			continue
		}
		if f, known := fsFlags[o]; known {
			flags |= f
			continue
		}
		if fsData[o] {
			d = append(d, o)
			continue
		}
		return 0, "", false
	}
	return flags, strings.Join(d, ","), true
}

// mountFS mounts an ext4 or xfs filesystem with mount(2). handled is false
// when the filesystem or an option is not one it knows.
func mountFS(source, target, fstype string, options []string) (handled bool, err error) {
	if !syscallFS[fstype] {
		return false, nil
	}
	flags, data, ok := fsMountArgs(options)
	if !ok {
		return false, nil
	}
	t, err := openTarget(target)
	if err != nil {
		return true, err
	}
	defer t.close()
	if err := unix.Mount(source, t.proc, fstype, flags, data); err != nil {
		return true, fmt.Errorf("mount %s (%s) at %s with %v: %w", source, fstype, target, options, err)
	}
	return true, nil
}

// target is a mount target held open (O_PATH, not following a final
// symlink): mounting on it through /proc/self/fd/N, or move_mount on the
// descriptor, mounts exactly on what was checked, even if the path changes
// meanwhile.
type target struct {
	fd   int
	proc string
}

// openTarget opens a mount target; a symlink is refused (ErrSymlink).
func openTarget(path string) (target, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return target{}, &fs.PathError{Op: "open mount target", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return target{}, &fs.PathError{Op: "stat mount target", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		unix.Close(fd)
		return target{}, fmt.Errorf("mount target %s %w", path, ErrSymlink)
	}
	return target{fd: fd, proc: "/proc/self/fd/" + strconv.Itoa(fd)}, nil
}

func (t target) close() { unix.Close(t.fd) }

// MountSensitiveWithoutSystemd mounts ext4 and xfs with mount(2) (no
// systemd scope is needed for them either); anything else goes to the
// wrapped mounter.
func (m *Mounter) MountSensitiveWithoutSystemd(source, target, fstype string, options, sensitive []string) error {
	if len(sensitive) == 0 {
		if handled, err := mountFS(source, target, fstype, options); handled {
			return err
		}
	}
	return m.Interface.MountSensitiveWithoutSystemd(source, target, fstype, options, sensitive)
}

// Mount makes plain bind mounts and ext4/xfs mounts with mount(2);
// anything else goes to the wrapped mounter.
func (m *Mounter) Mount(source, target, fstype string, options []string) error {
	if fstype != "" {
		if handled, err := mountFS(source, target, fstype, options); handled {
			return err
		}
		return m.Interface.Mount(source, target, fstype, options)
	}
	flags, ok := bindFlags(options)
	if !ok {
		return m.Interface.Mount(source, target, fstype, options)
	}
	t, err := openTarget(target)
	if err != nil {
		return err
	}
	defer t.close()
	if flags != 0 {
		// Attach the bind mount with its flags already set: a bind then a
		// remount would leave a window, and a remount does not propagate,
		// so under Bidirectional propagation the kubelet's copy of the
		// target (what the pod gets) would stay read-write.
		if err := bindWithAttrs(source, target, t.fd, flags); err == nil {
			return nil
		} else if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
			return err
		}
		// Kernels before 5.12 have no mount_setattr: bind, then remount.
	}
	if err := unix.Mount(source, t.proc, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", source, target, err)
	}
	if flags == 0 {
		return nil
	}
	// Per-mount flags take a remount of the new bind mount. A remount sets
	// the flags it is given and clears the others, so keep what the bind
	// inherited from its source (nosuid, nodev, ...): a publish must never
	// be more permissive than the filesystem it shows.
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		_ = unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		return fmt.Errorf("statfs %s: %w", target, err)
	}
	for sf, mf := range statfsFlags {
		if st.Flags&sf != 0 {
			flags |= mf
		}
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
		_ = unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		return fmt.Errorf("remount bind mount at %s with %v: %w", target, options, err)
	}
	return nil
}

// mountAttrs maps mount flags to mount_setattr(2) attributes.
var mountAttrs = map[uintptr]uint64{
	unix.MS_RDONLY:      unix.MOUNT_ATTR_RDONLY,
	unix.MS_NOSUID:      unix.MOUNT_ATTR_NOSUID,
	unix.MS_NODEV:       unix.MOUNT_ATTR_NODEV,
	unix.MS_NOEXEC:      unix.MOUNT_ATTR_NOEXEC,
	unix.MS_NODIRATIME:  unix.MOUNT_ATTR_NODIRATIME,
	unix.MS_NOSYMFOLLOW: unix.MOUNT_ATTR_NOSYMFOLLOW,
}

// bindWithAttrs clones source's mount (open_tree), sets the attributes on
// the detached clone (mount_setattr) and only then attaches it at target
// (move_mount), so every peer that receives the mount through propagation
// gets it with those attributes. The attributes only add restrictions to
// what the clone inherited from source. targetFD is target held open
// (openTarget).
func bindWithAttrs(source, target string, targetFD int, flags uintptr) error {
	var attr unix.MountAttr
	for f, a := range mountAttrs {
		if flags&f != 0 {
			attr.Attr_set |= a
		}
	}
	switch {
	case flags&unix.MS_NOATIME != 0:
		attr.Attr_set |= unix.MOUNT_ATTR_NOATIME
		attr.Attr_clr |= unix.MOUNT_ATTR__ATIME
	case flags&unix.MS_STRICTATIME != 0:
		attr.Attr_set |= unix.MOUNT_ATTR_STRICTATIME
		attr.Attr_clr |= unix.MOUNT_ATTR__ATIME
	case flags&unix.MS_RELATIME != 0:
		attr.Attr_set |= unix.MOUNT_ATTR_RELATIME
		attr.Attr_clr |= unix.MOUNT_ATTR__ATIME
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("clone mount of %s: %w", source, err)
	}
	defer unix.Close(fd)
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("set attributes on the bind mount of %s: %w", source, err)
	}
	if err := unix.MoveMount(fd, "", targetFD, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach bind mount of %s at %s: %w", source, target, err)
	}
	return nil
}

// Unmount unmounts target with umount2(2), never following a symlink at
// target (UMOUNT_NOFOLLOW): a link planted there must not make hostvol
// unmount what it points to.
func (m *Mounter) Unmount(target string) error {
	if err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}
