package quota

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// btrfs subvolume snapshots and their deletion (linux/btrfs.h).
const (
	btrfsIocSnapDestroy    = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	btrfsIocSnapCreateV2   = 0x50009417 // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
	btrfsSubvolRdonly      = 1 << 1     // BTRFS_SUBVOL_RDONLY
	btrfsSubvolNameMax     = 4039       // BTRFS_SUBVOL_NAME_MAX
	btrfsVolArgsV2Reserved = 4          // the union of size/qgroup_inherit and unused[4]
)

// btrfsVolArgsV2 is struct btrfs_ioctl_vol_args_v2, 4096 bytes.
type btrfsVolArgsV2 struct {
	Fd      int64
	Transid uint64
	Flags   uint64
	Unused  [btrfsVolArgsV2Reserved]uint64 // size and qgroup_inherit: never set, see BtrfsSnapshot
	Name    [btrfsSubvolNameMax + 1]byte
}

func checkSubvolName(name string, max int) error {
	if name == "" || name == "." || name == ".." || len(name) > max || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("subvolume name %q is not a single path component", name)
	}
	return nil
}

// BtrfsSnapshot makes a snapshot of the subvolume whose root directory src
// is, as name in the directory parent (BTRFS_IOC_SNAP_CREATE_V2), read-only
// when readOnly is set. It asks for no qgroup inheritance: inheriting marks
// the qgroup accounting inconsistent until a rescan, and limits stop
// working; with quotas on, the kernel gives the new subvolume a level-0
// qgroup of its own (0/<its ID>), with no limit. The kernel commits the
// transaction that makes the snapshot before the ioctl returns, so the
// snapshot is durable on return. An existing name is an error wrapping
// os.ErrExist; src not a subvolume is EINVAL.
func BtrfsSnapshot(src, parent *os.File, name string, readOnly bool) error {
	if err := checkSubvolName(name, btrfsSubvolNameMax); err != nil {
		return err
	}
	args := btrfsVolArgsV2{Fd: int64(src.Fd())}
	if readOnly {
		args.Flags = btrfsSubvolRdonly
	}
	copy(args.Name[:], name)
	if err := ioctlPtr(int(parent.Fd()), btrfsIocSnapCreateV2, unsafe.Pointer(&args)); err != nil {
		if errors.Is(err, unix.EEXIST) {
			err = os.ErrExist
		}
		return &os.PathError{Op: "BTRFS_IOC_SNAP_CREATE_V2", Path: filepath.Join(parent.Name(), name), Err: err}
	}
	return nil
}

// BtrfsDeleteSubvolume deletes the subvolume name in the directory parent
// (BTRFS_IOC_SNAP_DESTROY), read-only or not, with what it holds: as root
// it needs no other privilege or mount option. The kernel frees its blocks
// later (the cleaner); the caller makes the removal durable by fsyncing
// parent, which btrfs turns into a transaction commit for a deleted
// subvolume. A missing name is an error wrapping os.ErrNotExist.
func BtrfsDeleteSubvolume(parent *os.File, name string) error {
	if err := checkSubvolName(name, btrfsPathNameMax); err != nil {
		return err
	}
	var args btrfsVolArgs
	copy(args.Name[:], name)
	if err := ioctlPtr(int(parent.Fd()), btrfsIocSnapDestroy, unsafe.Pointer(&args)); err != nil {
		if errors.Is(err, unix.ENOENT) {
			err = os.ErrNotExist
		}
		return &os.PathError{Op: "BTRFS_IOC_SNAP_DESTROY", Path: filepath.Join(parent.Name(), name), Err: err}
	}
	return nil
}

// BtrfsSubvolumeID returns the ID of the btrfs subvolume whose root
// directory dir is (its qgroup is 0/<ID>), or 0 when dir is not one: a
// plain directory, or any directory on another filesystem.
func BtrfsSubvolumeID(dir *os.File) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(dir.Fd()), &st); err != nil {
		return 0, &os.PathError{Op: "fstatfs", Path: dir.Name(), Err: err}
	}
	if st.Type != unix.BTRFS_SUPER_MAGIC {
		return 0, nil
	}
	return subvolumeID(dir)
}

// BtrfsQgroupsInconsistent reports whether the kernel calls the qgroup
// accounting of the btrfs filesystem holding the directory path
// inconsistent (until a rescan, limits are not to be trusted). Quotas must
// be enabled.
func BtrfsQgroupsInconsistent(path string) (bool, error) {
	f, err := openDir(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fsid, err := btrfsFsid(int(f.Fd()))
	if err != nil {
		return false, err
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/btrfs", fsid, "qgroups", "inconsistent"))
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) != "0", nil
}
