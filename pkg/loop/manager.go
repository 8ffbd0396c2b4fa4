package loop

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

const (
	devDir      = "/dev"
	loopControl = "/dev/loop-control"
	sysBlock    = "/sys/block"
	// loopMajor is LOOP_MAJOR, fixed in linux/major.h.
	loopMajor = 7

	// attachAttempts bounds Attach's retries when another attacher takes
	// the free device LOOP_CTL_GET_FREE returned before we configure it
	// (EBUSY). Every round of a race has a winner, so n concurrent
	// attachers need at most n rounds; the margin covers other processes.
	attachAttempts = 64
	// defaultDetachWait bounds how long Detach waits for a device held open
	// elsewhere to go (a udev probe after the last close of a writer is
	// typical) before it reports ErrBusy.
	defaultDetachWait = time.Second
)

// manager is the real Manager: ioctls on /dev/loop-control and /dev/loopN,
// sysfs under /sys/block. It keeps no state: the kernel is the record.
type manager struct {
	// configure is LOOP_CONFIGURE; tests replace it to see how Attach
	// handles the errors of kernels and filesystems this machine lacks.
	configure func(fd, backingFD int, name string, directIO bool) error
	// detachWait bounds Detach's wait for other openers to close.
	detachWait time.Duration
}

// New returns the Manager that works on the kernel's loop devices. It needs
// root (CAP_SYS_ADMIN) and /dev/loop-control.
func New() Manager { return newManager() }

func newManager() *manager {
	return &manager{configure: configure, detachWait: defaultDetachWait}
}

// Find checks hint with one LOOP_GET_STATUS64, then scans the attached loop
// devices. /sys/block/loopN/loop/backing_file exists only for an attached
// device, so unattached ones cost a failed stat and are never opened. The
// path it holds is the attacher's view and may differ from img.Path (another
// mount namespace, a hard link), so it only orders the candidates (same path,
// then same base name, then the rest) and every candidate is confirmed by
// LOOP_GET_STATUS64 lo_device/lo_inode until one matches. Devices are opened
// read-only: a close after a write open would make udev re-probe them.
func (m *manager) Find(img Image, hint string) (string, error) {
	if hint != "" {
		// A hint that is gone, detached, reused or not a loop device is
		// merely stale: the scan settles it (and reports a real error on
		// the hint device, if any, as part of the scan).
		if ok, err := backedBy(hint, img); err == nil && ok {
			return hint, nil
		}
	}
	return scan(img)
}

func scan(img Image) (string, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("find %s: list loop devices: %w", img, err)
	}
	type candidate struct {
		name      string
		rank, num int
	}
	var cands []candidate
	for _, e := range entries {
		n, ok := loopNumber(e.Name())
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "loop", "backing_file"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // not attached (or detached meanwhile)
		}
		rank := 2 // also when unreadable: the ioctl below decides
		if err == nil {
			p := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), " (deleted)")
			switch {
			case p == img.Path:
				rank = 0
			case filepath.Base(p) == filepath.Base(img.Path):
				rank = 1
			}
		}
		cands = append(cands, candidate{name: e.Name(), rank: rank, num: n})
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].rank != cands[j].rank {
			return cands[i].rank < cands[j].rank
		}
		return cands[i].num < cands[j].num
	})
	var errs []error
	for _, c := range cands {
		dev := filepath.Join(devDir, c.name)
		ok, err := backedBy(dev, img)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			return dev, nil
		}
	}
	if len(errs) > 0 {
		// "" would tell the caller to attach a second time.
		return "", fmt.Errorf("find %s: cannot check every loop device: %w", img, errors.Join(errs...))
	}
	return "", nil
}

// backedBy reports whether dev is attached to img. A device that does not
// exist or is not attached is not an error.
func backedBy(dev string, img Image) (bool, error) {
	info, err := status(dev)
	if errors.Is(err, ErrNotAttached) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return info.Device == img.Dev && info.Inode == img.Ino, nil
}

// status returns dev's LOOP_GET_STATUS64, or ErrNotAttached.
func status(dev string) (*unix.LoopInfo64, error) {
	fd, err := openLoop(dev, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return statusFD(dev, fd)
}

func statusFD(dev string, fd int) (*unix.LoopInfo64, error) {
	info, err := unix.IoctlLoopGetStatus64(fd)
	if errors.Is(err, unix.ENXIO) {
		return nil, fmt.Errorf("%s: %w", dev, ErrNotAttached)
	}
	if err != nil {
		return nil, fmt.Errorf("LOOP_GET_STATUS64 %s: %w", dev, err)
	}
	return info, nil
}

// List reads LOOP_GET_STATUS64 of every device that sysfs shows attached.
// A device detached meanwhile is skipped; one that cannot be read is left
// out and named in the error, which comes with the devices that could be
// read: a caller that reconciles must not take "not listed" for "not
// attached", but may act on the others.
func (m *manager) List() ([]Attachment, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	type dev struct {
		name string
		num  int
	}
	var devs []dev
	for _, e := range entries {
		if n, ok := loopNumber(e.Name()); ok {
			devs = append(devs, dev{e.Name(), n})
		}
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].num < devs[j].num })
	var out []Attachment
	var errs []error
	for _, d := range devs {
		b, err := os.ReadFile(filepath.Join(sysBlock, d.name, "loop", "backing_file"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // not attached
		}
		path := filepath.Join(devDir, d.name)
		info, serr := status(path)
		if errors.Is(serr, ErrNotAttached) {
			continue // detached meanwhile
		}
		if serr != nil {
			errs = append(errs, serr)
			continue
		}
		name := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), " (deleted)")
		if err != nil {
			name = path
		}
		out = append(out, Attachment{Device: path, Image: Image{Dev: info.Device, Ino: info.Inode, Path: name}})
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("list loop devices: %w", errors.Join(errs...))
	}
	return out, nil
}

// Attach takes a free device with LOOP_CTL_GET_FREE (the kernel creates one
// when none is free) and configures it in one LOOP_CONFIGURE (Linux 5.8+):
// with LO_FLAGS_DIRECT_IO when asked, again without it if the kernel refuses
// direct I/O for this file (EINVAL), and with LOOP_SET_FD +
// LOOP_SET_STATUS64 (+ LOOP_SET_DIRECT_IO) when LOOP_CONFIGURE itself is
// unknown (ENOTTY or EINVAL). GET_FREE only proposes a device: another
// attacher, in this process or not, may configure it first, and then ours
// fails with EBUSY and Attach asks again. No autoclear (the device outlives
// this process and any mount), no partition scan.
func (m *manager) Attach(backing *os.File, opts AttachOptions) (string, error) {
	ctl, err := unix.Open(loopControl, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("attach %s: open %s: %w", backing.Name(), loopControl, err)
	}
	defer unix.Close(ctl)
	var lastErr error
	for attempt := range attachAttempts {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("attach %s: LOOP_CTL_GET_FREE: %w", backing.Name(), err)
		}
		dev := filepath.Join(devDir, "loop"+strconv.Itoa(n))
		err = m.attachTo(dev, backing, opts)
		if err == nil {
			return dev, nil
		}
		// EBUSY: someone configured dev first. ErrNotAttached or ENXIO:
		// someone removed it (LOOP_CTL_REMOVE) meanwhile. Ask again.
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, ErrNotAttached) && !errors.Is(err, unix.ENXIO) {
			return "", fmt.Errorf("attach %s: %w", backing.Name(), err)
		}
		lastErr = err
		time.Sleep(rand.N(time.Duration(min(attempt+1, 10)) * time.Millisecond))
	}
	return "", fmt.Errorf("attach %s: lost the race for a free loop device %d times: %w", backing.Name(), attachAttempts, lastErr)
}

func (m *manager) attachTo(dev string, backing *os.File, opts AttachOptions) error {
	// Read-write: LOOP_CONFIGURE makes the device read-only when the loop
	// device itself was opened read-only, whatever the backing file allows.
	fd, err := openLoop(dev, unix.O_RDWR)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	defer runtime.KeepAlive(backing) // the kernel takes its own reference in the ioctl
	bfd := int(backing.Fd())
	name := backing.Name()
	err = m.configure(fd, bfd, name, opts.DirectIO)
	if err != nil && opts.DirectIO && errors.Is(err, unix.EINVAL) {
		// Some kernels refuse LO_FLAGS_DIRECT_IO for a file without
		// O_DIRECT support; others (6.18) attach buffered silently.
		if err = m.configure(fd, bfd, name, false); err == nil {
			klog.V(2).InfoS("Loop device refused direct I/O, attached with buffered I/O", "device", dev, "image", name)
		}
	}
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("LOOP_CONFIGURE %s: %w", dev, err)
	}
	klog.V(2).InfoS("LOOP_CONFIGURE unsupported, falling back to LOOP_SET_FD", "device", dev, "err", err)
	return setFD(dev, fd, bfd, name, opts.DirectIO)
}

// configure is LOOP_CONFIGURE: backing file, name and flags in one ioctl, so
// no other process sees a half-configured device.
func configure(fd, backingFD int, name string, directIO bool) error {
	// cfg.Size is the logical block size. Always 512, never 0 (the
	// kernel's choice): for direct I/O the kernel would pick the backing
	// file's DIO alignment, which on XFS becomes the filesystem block
	// (4096) once the image shares blocks with a reflinked snapshot or
	// clone, and a filesystem made with smaller blocks (mkfs.ext4 makes
	// 1 KiB blocks below 512 MiB) then no longer mounts from it. With 512
	// the kernel uses direct I/O only where the file allows it.
	cfg := unix.LoopConfig{Fd: uint32(backingFD), Size: 512}
	setFileName(&cfg.Info, name)
	if directIO {
		cfg.Info.Flags = unix.LO_FLAGS_DIRECT_IO
	}
	return unix.IoctlLoopConfigure(fd, &cfg)
}

// setFD is the pre-5.8 attach. A failure after LOOP_SET_FD detaches again.
func setFD(dev string, fd, backingFD int, name string, directIO bool) error {
	if err := unix.IoctlSetInt(fd, unix.LOOP_SET_FD, backingFD); err != nil {
		return fmt.Errorf("LOOP_SET_FD %s: %w", dev, err)
	}
	var info unix.LoopInfo64
	setFileName(&info, name)
	if err := unix.IoctlLoopSetStatus64(fd, &info); err != nil {
		if cerr := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); cerr != nil {
			return fmt.Errorf("LOOP_SET_STATUS64 %s: %w (and LOOP_CLR_FD: %v)", dev, err, cerr)
		}
		return fmt.Errorf("LOOP_SET_STATUS64 %s: %w", dev, err)
	}
	if directIO {
		if err := unix.IoctlSetInt(fd, unix.LOOP_SET_DIRECT_IO, 1); err != nil {
			klog.V(2).InfoS("Loop device refused direct I/O, attached with buffered I/O", "device", dev, "image", name, "err", err)
		}
	}
	return nil
}

// setFileName sets lo_file_name, which losetup shows when sysfs does not
// give the backing file: the path, cut to LO_NAME_SIZE-1 bytes (the last
// byte stays NUL).
func setFileName(info *unix.LoopInfo64, path string) {
	copy(info.File_name[:unix.LO_NAME_SIZE-1], path)
}

// Detach is LOOP_CLR_FD. The kernel detaches at the last close of the
// device: at once when our descriptor is the only one, otherwise it sets
// autoclear and the last holder's close detaches. Detach waits a little for
// that (transient openers such as udev) and reports ErrBusy if the device is
// still attached to the same file then (mounted, or held by a process).
func (m *manager) Detach(dev string) error {
	fd, err := openLoop(dev, unix.O_RDONLY)
	if errors.Is(err, ErrNotAttached) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	info, err := statusFD(dev, fd)
	if err == nil {
		err = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
		if err != nil {
			err = fmt.Errorf("LOOP_CLR_FD %s: %w", dev, err)
		}
	}
	unix.Close(fd)
	if errors.Is(err, ErrNotAttached) || errors.Is(err, unix.ENXIO) {
		return nil // not attached: nothing to do
	}
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	img := Image{Dev: info.Device, Ino: info.Inode}
	deadline := time.Now().Add(m.detachWait)
	for {
		still, err := backedBy(dev, img)
		if err != nil {
			return fmt.Errorf("detach: %w", err)
		}
		if !still {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("detach %s: %w: still open elsewhere (mounted or held by a process); the kernel detaches it at the last close", dev, ErrBusy)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Refresh is LOOP_SET_CAPACITY: the device size follows the backing file's.
func (m *manager) Refresh(dev string) error {
	// Read-write: LOOP_SET_CAPACITY on a read-only descriptor needs
	// CAP_SYS_ADMIN.
	fd, err := openLoop(dev, unix.O_RDWR)
	if err != nil {
		return fmt.Errorf("refresh: %w", err)
	}
	defer unix.Close(fd)
	err = unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0)
	if errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("refresh %s: %w", dev, ErrNotAttached)
	}
	if err != nil {
		return fmt.Errorf("refresh: LOOP_SET_CAPACITY %s: %w", dev, err)
	}
	return nil
}

// Size is BLKGETSIZE64 on an attached device.
func (m *manager) Size(dev string) (int64, error) {
	fd, err := openLoop(dev, unix.O_RDONLY)
	if err != nil {
		return 0, fmt.Errorf("size: %w", err)
	}
	defer unix.Close(fd)
	// An unattached loop device has size 0: say why instead.
	if _, err := statusFD(dev, fd); err != nil {
		return 0, fmt.Errorf("size: %w", err)
	}
	var size uint64
	// x/sys/unix has no BLKGETSIZE64 helper; IoctlGetInt would write a u64
	// into a 32-bit int on 32-bit platforms.
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); errno != 0 {
		return 0, fmt.Errorf("size: BLKGETSIZE64 %s: %w", dev, errno)
	}
	return int64(size), nil
}

// sysfsDir is dev's directory in sysfs, found by device number so that any
// path to the node works.
func sysfsDir(dev string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		if n, ok := loopPath(dev); ok && errors.Is(err, unix.ENOENT) {
			return filepath.Join(sysBlock, "loop"+strconv.Itoa(n)), nil
		}
		return "", &fs.PathError{Op: "stat", Path: dev, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(uint64(st.Rdev)) != loopMajor {
		return "", fmt.Errorf("%s is not a loop device", dev)
	}
	return fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))), nil
}

// openLoop opens a loop device node. When a /dev/loopN node is missing but
// the kernel has device N, it creates the node first: in a container /dev is
// often a tmpfs that the kernel does not populate, so LOOP_CTL_GET_FREE can
// hand out (and create) a device whose node this container lacks. When the
// kernel has no device N either, the error wraps ErrNotAttached.
func openLoop(dev string, mode int) (int, error) {
	fd, err := unix.Open(dev, mode|unix.O_CLOEXEC, 0)
	if n, ok := loopPath(dev); ok && errors.Is(err, unix.ENOENT) {
		if err := mknodLoop(dev, n); err != nil {
			return -1, err
		}
		fd, err = unix.Open(dev, mode|unix.O_CLOEXEC, 0)
	}
	if errors.Is(err, unix.ENXIO) {
		// The kernel refuses to open a device being detached (LOOP_CLR_FD
		// done, last close pending) or removed, and a node without a
		// device behind it.
		return -1, fmt.Errorf("open %s: %w: %w", dev, ErrNotAttached, err)
	}
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: dev, Err: err}
	}
	return fd, nil
}

// mknodLoop creates the block device node dev for loop device n, with the
// device number sysfs gives (major 7; minor n unless the loop module's
// max_part reserves minors for partitions).
func mknodLoop(dev string, n int) error {
	name := "loop" + strconv.Itoa(n)
	maj, mnr := uint32(loopMajor), uint32(n)
	b, err := os.ReadFile(filepath.Join(sysBlock, name, "dev"))
	switch {
	case err == nil:
		if _, err := fmt.Sscanf(string(b), "%d:%d", &maj, &mnr); err != nil {
			return fmt.Errorf("parse %s/%s/dev %q: %w", sysBlock, name, b, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(sysBlock); serr == nil {
			return fmt.Errorf("%s: no such loop device: %w", dev, ErrNotAttached)
		}
		// No sysfs: assume 7:n (max_part=0, the default).
	default:
		return err
	}
	err = unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(maj, mnr)))
	if errors.Is(err, unix.EEXIST) { // devtmpfs or a racer made it meanwhile
		return nil
	}
	if err != nil {
		return &fs.PathError{Op: "mknod", Path: dev, Err: err}
	}
	klog.V(4).InfoS("Created missing loop device node", "device", dev, "major", maj, "minor", mnr)
	return nil
}

// loopPath returns n for "/dev/loopN".
func loopPath(dev string) (int, bool) {
	if filepath.Dir(dev) != devDir {
		return 0, false
	}
	return loopNumber(filepath.Base(dev))
}

// loopNumber returns n for "loopN".
func loopNumber(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "loop")
	if !ok || s == "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || strconv.Itoa(n) != s {
		return 0, false
	}
	return n, true
}
