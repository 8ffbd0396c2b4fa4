package quota

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// system is the real System. Pools on one filesystem share its project IDs.
type system struct {
	mu  sync.Mutex
	ids map[uint64]*projectIDs // by the filesystem's device number
}

// New returns the System that detects and uses the kernel's quotas.
func New() System { return &system{ids: map[uint64]*projectIDs{}} }

// Filesystem magic numbers (statfs f_type) of filesystems pools are likely
// on, for messages; XFS, ext4 and btrfs decide the method.
var fsNames = map[int64]string{
	unix.XFS_SUPER_MAGIC:       "xfs",
	unix.EXT4_SUPER_MAGIC:      "ext4",
	unix.BTRFS_SUPER_MAGIC:     "btrfs",
	unix.TMPFS_MAGIC:           "tmpfs",
	unix.OVERLAYFS_SUPER_MAGIC: "overlay",
	unix.NFS_SUPER_MAGIC:       "nfs",
	unix.CEPH_SUPER_MAGIC:      "ceph",
	unix.FUSE_SUPER_MAGIC:      "fuse",
	unix.F2FS_SUPER_MAGIC:      "f2fs",
	0x2fc12fc1:                 "zfs",
	unix.V9FS_MAGIC:            "9p",
	unix.CIFS_SUPER_MAGIC:      "cifs",
}

// FilesystemName names a statfs f_type.
func FilesystemName(fsType int64) string {
	if n, ok := fsNames[fsType]; ok {
		return n
	}
	return fmt.Sprintf("0x%x", fsType)
}

// Open detects the pool's method from its filesystem type and quota state.
func (s *system) Open(path string) (Enforcer, error) {
	dir, err := openDir(path)
	if err != nil {
		return nil, err
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(dir.Fd()), &sfs); err != nil {
		dir.Close()
		return nil, fmt.Errorf("statfs %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		dir.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	fsType := int64(sfs.Type) // int32 on some architectures
	switch fsType {
	case unix.XFS_SUPER_MAGIC:
		return s.openProject(dir, uint64(st.Dev), XFSProject, "xfs")
	case unix.EXT4_SUPER_MAGIC:
		return s.openProject(dir, uint64(st.Dev), Ext4Project, "ext4")
	case unix.BTRFS_SUPER_MAGIC:
		return openBtrfs(dir)
	}
	dir.Close()
	name := FilesystemName(fsType)
	return Unenforced(name, name+" has neither project quotas nor btrfs qgroups (use XFS or ext4 mounted with prjquota, or btrfs with quotas enabled)"), nil
}

// openProject checks that project quotas are enforced on the filesystem:
// Q_XGETQSTATV through quotactl_fd, or through quotactl on the block device
// on kernels before 5.14.
func (s *system) openProject(dir *os.File, dev uint64, m Method, fs string) (Enforcer, error) {
	q := quotactlTarget{fd: int(dir.Fd())}
	var note string
	if !haveQuotactlFd() {
		if !haveQuotactl() {
			dir.Close()
			return Unenforced(fs, "this kernel has no quotactl (CONFIG_QUOTACTL)"), nil
		}
		source, err := mountSource(dev)
		if err != nil {
			dir.Close()
			return Unenforced(fs, fmt.Sprintf("no quotactl_fd (Linux < 5.14) and no block device found for quotactl: %v", err)), nil
		}
		q.device = source
		note = "quotactl on " + source
	}
	_, enforcing, err := q.projectState()
	if isENOSYS(err) {
		// The syscall exists: ENOSYS is the kernel's answer for a
		// filesystem with no quota on at all.
		enforcing, err = false, nil
	}
	if err != nil {
		dir.Close()
		return Unenforced(fs, fmt.Sprintf("reading the project quota state failed: %v", err)), nil
	}
	if !enforcing {
		dir.Close()
		how := "mount it with -o prjquota, on a kernel with XFS quota support (CONFIG_XFS_QUOTA)"
		if m == Ext4Project {
			how = "it needs the project and quota features (mkfs.ext4 -O project,quota, or tune2fs -O project,quota unmounted), mounting with -o prjquota, and a kernel with the quota format (CONFIG_QFMT_V2)"
		}
		return Unenforced(fs, fmt.Sprintf("project quotas are not enforced on this %s filesystem (%s)", fs, how)), nil
	}
	s.mu.Lock()
	ids, ok := s.ids[dev]
	if !ok {
		ids = newProjectIDs(FirstProjectID, LastProjectID)
		s.ids[dev] = ids
	}
	s.mu.Unlock()
	return &projectEnforcer{
		info: Info{Method: m, Filesystem: fs, InodeLimits: true, Reason: note},
		pool: dir,
		q:    q,
		ids:  ids,
		ext4: m == Ext4Project,
	}, nil
}

// haveQuotactlFd reports whether the kernel has quotactl_fd(2): with a bad
// descriptor it answers EBADF, without the syscall ENOSYS.
func haveQuotactlFd() bool {
	_, _, e := unix.Syscall6(unix.SYS_QUOTACTL_FD, ^uintptr(0), uintptr(prjCmd(qXGetQStatV)), 0, 0, 0, 0)
	return e != unix.ENOSYS
}

// haveQuotactl reports whether the kernel has quotactl(2) (CONFIG_QUOTACTL):
// for an empty device path it answers ENOENT, without the syscall ENOSYS.
func haveQuotactl() bool {
	empty := []byte{0}
	_, _, e := unix.Syscall6(unix.SYS_QUOTACTL, uintptr(prjCmd(qXGetQStatV)), uintptr(unsafe.Pointer(&empty[0])), 0, 0, 0, 0)
	return e != unix.ENOSYS
}

// mountSource finds the source (block device) of the mount whose device
// number is dev, in /proc/self/mountinfo.
func mountSource(dev uint64) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[2] != want {
			continue
		}
		_, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		rest := strings.Fields(after)
		if len(rest) >= 2 && strings.HasPrefix(rest[1], "/dev/") {
			return rest[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no mount of device %s with a /dev source in /proc/self/mountinfo", want)
}
