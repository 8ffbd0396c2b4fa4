package quota

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// btrfs ioctls (linux/btrfs.h). BTRFS_IOCTL_MAGIC is 0x94.
const (
	btrfsIocSync         = 0x00009408 // _IO(0x94, 8)
	btrfsIocSubvolCreate = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	btrfsIocInoLookup    = 0xd0009412 // _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args)
	btrfsIocFsInfo       = 0x8400941f // _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)
	btrfsIocQgroupCreate = 0x4010942a // _IOW(0x94, 42, struct btrfs_ioctl_qgroup_create_args)
	btrfsIocQgroupLimit  = 0x8030942b // _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)

	btrfsFirstFreeObjectID = 256    // BTRFS_FIRST_FREE_OBJECTID: a subvolume's root directory
	btrfsQgroupLimitMaxRfr = 1 << 0 // BTRFS_QGROUP_LIMIT_MAX_RFER
	btrfsPathNameMax       = 4087   // BTRFS_PATH_NAME_MAX
)

// btrfsVolArgs is struct btrfs_ioctl_vol_args, 4096 bytes.
type btrfsVolArgs struct {
	Fd   int64
	Name [btrfsPathNameMax + 1]byte
}

// btrfsInoLookupArgs is struct btrfs_ioctl_ino_lookup_args, 4096 bytes.
type btrfsInoLookupArgs struct {
	Treeid   uint64
	Objectid uint64
	Name     [4080]byte
}

// btrfsQgroupLimitArgs is struct btrfs_ioctl_qgroup_limit_args, 48 bytes.
type btrfsQgroupLimitArgs struct {
	Qgroupid uint64
	Flags    uint64 // struct btrfs_qgroup_limit from here
	MaxRfer  uint64
	MaxExcl  uint64
	RsvRfer  uint64
	RsvExcl  uint64
}

// btrfsQgroupCreateArgs is struct btrfs_ioctl_qgroup_create_args, 16 bytes.
type btrfsQgroupCreateArgs struct {
	Create   uint64
	Qgroupid uint64
}

// btrfsFsInfoArgs is struct btrfs_ioctl_fs_info_args, 1024 bytes.
type btrfsFsInfoArgs struct {
	MaxID          uint64
	NumDevices     uint64
	Fsid           [16]byte
	Nodesize       uint32
	Sectorsize     uint32
	CloneAlignment uint32
	CsumType       uint16
	CsumSize       uint16
	Flags          uint64
	Generation     uint64
	MetadataUUID   [16]byte
	Reserved       [944]byte
}

// btrfsEnforcer limits directories as subvolumes with qgroup limits.
type btrfsEnforcer struct {
	info Info
	pool *os.File // the pool directory: any descriptor on the filesystem serves the qgroup ioctls
	// qgroups is /sys/fs/btrfs/<fsid>/qgroups, where the kernel shows each
	// qgroup's usage.
	qgroups string
	// clearWait bounds how long Clear waits for the cleaner to drop a
	// deleted subvolume before its qgroup can go.
	clearWait time.Duration
}

// btrfsFsid returns the filesystem's UUID as sysfs names it.
func btrfsFsid(fd int) (string, error) {
	var fi btrfsFsInfoArgs
	if err := ioctlPtr(fd, btrfsIocFsInfo, unsafe.Pointer(&fi)); err != nil {
		return "", fmt.Errorf("BTRFS_IOC_FS_INFO: %w", err)
	}
	u := fi.Fsid
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}

// openBtrfs detects whether quotas are enabled: the kernel shows
// /sys/fs/btrfs/<fsid>/qgroups only then.
func openBtrfs(pool *os.File) (Enforcer, error) {
	fsid, err := btrfsFsid(int(pool.Fd()))
	if err != nil {
		pool.Close()
		return nil, err
	}
	fsDir := filepath.Join("/sys/fs/btrfs", fsid)
	if _, err := os.Stat(fsDir); err != nil {
		pool.Close()
		return Unenforced("btrfs", fmt.Sprintf("cannot read qgroup usage: %v (is /sys mounted?)", err)), nil
	}
	qgroups := filepath.Join(fsDir, "qgroups")
	if _, err := os.Stat(qgroups); err != nil {
		pool.Close()
		return Unenforced("btrfs", "quotas are disabled on this filesystem (btrfs quota enable "+pool.Name()+")"), nil
	}
	var notes []string
	if b, err := os.ReadFile(filepath.Join(qgroups, "mode")); err == nil {
		notes = append(notes, "mode "+strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile(filepath.Join(qgroups, "inconsistent")); err == nil && strings.TrimSpace(string(b)) == "1" {
		notes = append(notes, "qgroup accounting is inconsistent until a rescan (btrfs quota rescan)")
	}
	return &btrfsEnforcer{
		info:      Info{Method: BtrfsQgroup, Filesystem: "btrfs", Reason: strings.Join(notes, "; ")},
		pool:      pool,
		qgroups:   qgroups,
		clearWait: 10 * time.Second,
	}, nil
}

func (e *btrfsEnforcer) Info() Info { return e.info }

// Reserve needs nothing: the subvolume ID comes with the subvolume.
func (e *btrfsEnforcer) Reserve(string) (Handle, error) { return Handle{Method: BtrfsQgroup}, nil }

func (e *btrfsEnforcer) Adopt(_ string, h Handle) error { return checkMethod(BtrfsQgroup, h) }

func (e *btrfsEnforcer) Release(Handle) {}

// MakeDir creates a subvolume (BTRFS_IOC_SUBVOL_CREATE on the parent):
// any user may, so it needs no privilege beyond the parent's write
// permission. The kernel makes its root directory 0755; the caller sets
// the mode.
func (e *btrfsEnforcer) MakeDir(parent *os.File, name string, _ os.FileMode) error {
	var args btrfsVolArgs
	if len(name) == 0 || len(name) > btrfsPathNameMax || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("subvolume name %q is not a single path component", name)
	}
	copy(args.Name[:], name)
	if err := ioctlPtr(int(parent.Fd()), btrfsIocSubvolCreate, unsafe.Pointer(&args)); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return &os.PathError{Op: "BTRFS_IOC_SUBVOL_CREATE", Path: name, Err: os.ErrExist}
		}
		return &os.PathError{Op: "BTRFS_IOC_SUBVOL_CREATE", Path: name, Err: err}
	}
	return nil
}

// subvolumeID returns the ID of the subvolume whose root directory dir is,
// or 0 if dir is a plain directory.
func subvolumeID(dir *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		return 0, err
	}
	if st.Ino != btrfsFirstFreeObjectID {
		return 0, nil
	}
	// Tree 0 means the descriptor's own subvolume; looking up its root
	// directory needs no privilege.
	args := btrfsInoLookupArgs{Objectid: btrfsFirstFreeObjectID}
	if err := ioctlPtr(int(dir.Fd()), btrfsIocInoLookup, unsafe.Pointer(&args)); err != nil {
		return 0, fmt.Errorf("BTRFS_IOC_INO_LOOKUP: %w", err)
	}
	return args.Treeid, nil
}

func (e *btrfsEnforcer) Apply(dir *os.File, h Handle, l Limits) (Handle, error) {
	if err := checkMethod(BtrfsQgroup, h); err != nil {
		return Handle{}, err
	}
	id, err := subvolumeID(dir)
	if err != nil {
		return Handle{}, err
	}
	if id == 0 {
		return Handle{}, fmt.Errorf("%s is not a btrfs subvolume", dir.Name())
	}
	h.SubvolumeID = id
	if err := e.SetLimits(h, l); err != nil {
		return Handle{}, err
	}
	return h, nil
}

func (e *btrfsEnforcer) Identify(dir *os.File, h Handle) (Handle, error) {
	id, err := subvolumeID(dir)
	if err != nil {
		return h, err
	}
	if id != 0 {
		h.SubvolumeID = id
	}
	return h, nil
}

// SetLimits limits what the subvolume references (its data and metadata,
// shared or not: the size a user sees).
func (e *btrfsEnforcer) SetLimits(h Handle, l Limits) error {
	if err := checkMethod(BtrfsQgroup, h); err != nil {
		return err
	}
	if l.Inodes > 0 {
		return fmt.Errorf("%w: btrfs qgroups cannot limit inodes", ErrUnsupported)
	}
	if h.SubvolumeID == 0 || l.Bytes <= 0 {
		return fmt.Errorf("qgroup limit needs a subvolume and a positive size (handle %s, %d bytes)", h, l.Bytes)
	}
	args := btrfsQgroupLimitArgs{Qgroupid: h.SubvolumeID, Flags: btrfsQgroupLimitMaxRfr, MaxRfer: uint64(l.Bytes)}
	if err := ioctlPtr(int(e.pool.Fd()), btrfsIocQgroupLimit, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("BTRFS_IOC_QGROUP_LIMIT 0/%d: %w", h.SubvolumeID, err)
	}
	return nil
}

// Usage reads the qgroup's referenced bytes from sysfs: one read, no
// privilege (the quota tree needs CAP_SYS_ADMIN and a search). Both change
// at transaction commit, so usage follows writes within a commit interval.
func (e *btrfsEnforcer) Usage(h Handle) (Usage, error) {
	if err := checkMethod(BtrfsQgroup, h); err != nil {
		return Usage{}, err
	}
	p := filepath.Join(e.qgroups, fmt.Sprintf("0_%d", h.SubvolumeID), "referenced")
	b, err := os.ReadFile(p)
	if err != nil {
		return Usage{}, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return Usage{}, fmt.Errorf("%s: %w", p, err)
	}
	return Usage{Bytes: n}, nil
}

// Clear removes the qgroup of a deleted subvolume. The kernel refuses
// (EBUSY, Linux 6.8+) while the cleaner has not dropped the subvolume yet,
// and newer kernels remove the qgroup themselves once it has (ENOENT):
// BTRFS_IOC_SYNC commits and wakes the cleaner, then Clear retries until
// the qgroup is gone or clearWait has passed.
func (e *btrfsEnforcer) Clear(h Handle) error {
	if h.SubvolumeID == 0 {
		return nil
	}
	fd := int(e.pool.Fd())
	start := time.Now()
	deadline := start.Add(e.clearWait)
	delay := 5 * time.Millisecond
	lastSync := time.Time{}
	for attempt := 1; ; attempt++ {
		args := btrfsQgroupCreateArgs{Create: 0, Qgroupid: h.SubvolumeID}
		err := ioctlPtr(fd, btrfsIocQgroupCreate, unsafe.Pointer(&args))
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			klog.V(4).InfoS("Qgroup removed", "qgroup", fmt.Sprintf("0/%d", h.SubvolumeID), "attempts", attempt, "removedByKernel", err != nil, "duration", time.Since(start))
			return nil
		case errors.Is(err, unix.ENOTCONN):
			return nil // quotas were disabled since: no qgroup is left
		case !errors.Is(err, unix.EBUSY):
			return fmt.Errorf("remove qgroup 0/%d: %w", h.SubvolumeID, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: qgroup 0/%d: the deleted subvolume was not dropped within %v", ErrBusy, h.SubvolumeID, e.clearWait)
		}
		if time.Since(lastSync) > time.Second {
			if err := ioctlPtr(fd, btrfsIocSync, nil); err != nil {
				return fmt.Errorf("BTRFS_IOC_SYNC: %w", err)
			}
			lastSync = time.Now()
		}
		time.Sleep(delay)
		delay = min(delay*2, 200*time.Millisecond)
	}
}

func (e *btrfsEnforcer) Close() error { return e.pool.Close() }

// BtrfsQgroups lists the IDs of the level-0 qgroups (0/<id>) of the btrfs
// filesystem holding the directory path, in order, as sysfs shows them
// (for tests and diagnostics).
func BtrfsQgroups(path string) ([]uint64, error) {
	f, err := openDir(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fsid, err := btrfsFsid(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join("/sys/fs/btrfs", fsid, "qgroups"))
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, e := range ents {
		if n, ok := strings.CutPrefix(e.Name(), "0_"); ok {
			if id, err := strconv.ParseUint(n, 10, 64); err == nil {
				ids = append(ids, id)
			}
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}
