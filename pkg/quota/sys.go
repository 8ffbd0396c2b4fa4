package quota

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel interfaces below are not in golang.org/x/sys: neither the
// constants nor the structs. Layouts are from the UAPI headers named at each;
// TestStructSizes pins their sizes.

// ---- project ID of a directory: FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR ----

// fsxattr is struct fsxattr (linux/fs.h), 28 bytes.
type fsxattr struct {
	Xflags     uint32
	Extsize    uint32
	Nextents   uint32
	Projid     uint32
	Cowextsize uint32
	Pad        [8]byte
}

const (
	fsIocFsgetxattr    = 0x801c581f // _IOR('X', 31, struct fsxattr)
	fsIocFssetxattr    = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsXflagProjinherit = 0x00000200 // FS_XFLAG_PROJINHERIT
)

func getFsxattr(fd int) (fsxattr, error) {
	var fa fsxattr
	if err := ioctlPtr(fd, fsIocFsgetxattr, unsafe.Pointer(&fa)); err != nil {
		return fsxattr{}, fmt.Errorf("FS_IOC_FSGETXATTR: %w", err)
	}
	return fa, nil
}

// setProject gives the directory fd the project ID and the inherit flag, so
// that everything created below it belongs to the project too.
func setProject(fd int, projid uint32) error {
	fa, err := getFsxattr(fd)
	if err != nil {
		return err
	}
	if fa.Projid == projid && fa.Xflags&fsXflagProjinherit != 0 {
		return nil
	}
	fa.Projid = projid
	fa.Xflags |= fsXflagProjinherit
	if err := ioctlPtr(fd, fsIocFssetxattr, unsafe.Pointer(&fa)); err != nil {
		return fmt.Errorf("FS_IOC_FSSETXATTR project %d: %w", projid, err)
	}
	return nil
}

// ---- quotactl ----

const (
	prjQuota = 2 // PRJQUOTA == XQM_PRJQUOTA

	// XFS-style commands (linux/dqblk_xfs.h): XQM_CMD(n) = ('X'<<8)+n.
	qXGetQuota  = 0x5803 // Q_XGETQUOTA
	qXSetQLim   = 0x5804 // Q_XSETQLIM
	qXGetQStatV = 0x5808 // Q_XGETQSTATV
	// VFS commands (linux/quota.h), used for ext4.
	qGetQuota = 0x800007 // Q_GETQUOTA
	qSetQuota = 0x800008 // Q_SETQUOTA

	fsDquotVersion   = 1      // FS_DQUOT_VERSION
	fsProjQuota      = 2      // FS_PROJ_QUOTA (d_flags)
	fsDqISoft        = 1 << 0 // FS_DQ_ISOFT
	fsDqIHard        = 1 << 1 // FS_DQ_IHARD
	fsDqBSoft        = 1 << 2 // FS_DQ_BSOFT
	fsDqBHard        = 1 << 3 // FS_DQ_BHARD
	fsQuotaPdqAcct   = 1 << 4 // FS_QUOTA_PDQ_ACCT
	fsQuotaPdqEnfd   = 1 << 5 // FS_QUOTA_PDQ_ENFD
	fsQStatVVersion1 = 1      // FS_QSTATV_VERSION1

	qifBLimits = 1 // QIF_BLIMITS
	qifILimits = 4 // QIF_ILIMITS
	qifLimits  = qifBLimits | qifILimits

	basicBlock = 512  // fs_disk_quota block unit (BB)
	vfsBlock   = 1024 // if_dqblk limit unit (QIF_DQBLKSIZE)
)

// prjCmd is the kernel's QCMD(cmd, PRJQUOTA): hostvol only uses project quotas.
func prjCmd(cmd uint32) uint32 { return cmd<<8 | prjQuota&0xff }

// fsDiskQuota is struct fs_disk_quota (linux/dqblk_xfs.h), 112 bytes.
// Block figures are in 512-byte basic blocks.
type fsDiskQuota struct {
	Version      int8
	Flags        int8
	Fieldmask    uint16
	ID           uint32
	BlkHardlimit uint64
	BlkSoftlimit uint64
	InoHardlimit uint64
	InoSoftlimit uint64
	Bcount       uint64
	Icount       uint64
	Itimer       int32
	Btimer       int32
	Iwarns       uint16
	Bwarns       uint16
	ItimerHi     int8
	BtimerHi     int8
	RtbtimerHi   int8
	Padding2     int8
	RtbHardlimit uint64
	RtbSoftlimit uint64
	Rtbcount     uint64
	Rtbtimer     int32
	Rtbwarns     uint16
	Padding3     int16
	Padding4     [8]byte
}

// ifDqblk is struct if_dqblk (linux/quota.h), 72 bytes. Block limits are in
// 1 KiB units, CurSpace in bytes.
type ifDqblk struct {
	BHardlimit uint64
	BSoftlimit uint64
	CurSpace   uint64
	IHardlimit uint64
	ISoftlimit uint64
	CurInodes  uint64
	BTime      uint64
	ITime      uint64
	Valid      uint32
	_          uint32
}

// fsQfilestatv is struct fs_qfilestatv, 24 bytes.
type fsQfilestatv struct {
	Ino      uint64
	Nblks    uint64
	Nextents uint32
	Pad      uint32
}

// fsQuotaStatv is struct fs_quota_statv (linux/dqblk_xfs.h), 160 bytes.
type fsQuotaStatv struct {
	Version      int8
	Pad1         uint8
	Flags        uint16
	Incoredqs    uint32
	UQuota       fsQfilestatv
	GQuota       fsQfilestatv
	PQuota       fsQfilestatv
	BTimelimit   int32
	ITimelimit   int32
	RtbTimelimit int32
	BWarnlimit   uint16
	IWarnlimit   uint16
	RtbWarnlimit uint16
	Pad3         uint16
	Pad4         uint32
	Pad2         [7]uint64
}

// quotactlTarget is how quotactl reaches a filesystem: quotactl_fd(2) on a
// descriptor of the pool (Linux 5.14+: no device node needed, which a
// container may not have), else quotactl(2) on the block device.
type quotactlTarget struct {
	fd     int    // an open directory of the filesystem
	device string // the block device, when quotactl_fd is unavailable
}

func (q quotactlTarget) call(cmd uint32, id uint32, addr unsafe.Pointer) error {
	if q.device == "" {
		_, _, e := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(q.fd), uintptr(cmd), uintptr(id), uintptr(addr), 0, 0)
		if e != 0 {
			return e
		}
		return nil
	}
	p, err := unix.BytePtrFromString(q.device)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(unix.SYS_QUOTACTL, uintptr(cmd), uintptr(unsafe.Pointer(p)), uintptr(id), uintptr(addr), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// projectState returns the project quota flags of the filesystem
// (Q_XGETQSTATV, which XFS and the VFS quota code of ext4 both answer).
func (q quotactlTarget) projectState() (accounting, enforcing bool, err error) {
	st := fsQuotaStatv{Version: fsQStatVVersion1}
	if err := q.call(prjCmd(qXGetQStatV), 0, unsafe.Pointer(&st)); err != nil {
		return false, false, err
	}
	return st.Flags&fsQuotaPdqAcct != 0, st.Flags&fsQuotaPdqEnfd != 0, nil
}

// ioctlPtr is ioctl(fd, req, arg) with a pointer argument.
func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// openDir opens a directory without following a symlink at its last
// component.
func openDir(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// isENOSYS reports whether err says the kernel lacks a syscall.
func isENOSYS(err error) bool { return errors.Is(err, unix.ENOSYS) }
