// Package fsutil formats and grows the filesystems of loop-file volumes. It
// runs mkfs through an injected k8s.io/utils/exec interface (a FakeExec in
// unit tests), with a context, LC_ALL=C and stderr in the error; growing a
// mounted filesystem is mount-utils' ResizeFs (resize2fs, xfs_growfs).
package fsutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
)

// Supported filesystem types.
const (
	Ext4 = "ext4"
	XFS  = "xfs"
)

// ErrUnsupported marks a filesystem type hostvol does not make.
var ErrUnsupported = errors.New("unsupported filesystem type")

// ErrOnlineGrowUnavailable marks an online grow this process cannot do:
// ext4 grows a mounted filesystem only for a caller with CAP_SYS_RESOURCE
// (EXT4_IOC_RESIZE_FS), which some hosts drop from the bounding set. The
// filesystem is then grown offline at the next stage.
var ErrOnlineGrowUnavailable = errors.New("online growth unavailable")

// ErrNoSpace marks a command that failed because a write hit ENOSPC: the
// filesystem holding the image (or device) being formatted or grown is
// full. See run for how it is recognised.
var ErrNoSpace = errors.New("no space left on the filesystem holding the image")

// MinSize is the smallest volume each filesystem can be made on: mkfs.xfs
// refuses filesystems under 300 MiB; ext4 needs room for its journal.
var MinSize = map[string]int64{
	Ext4: 16 << 20,
	XFS:  300 << 20,
}

// Check returns nil for a supported type ("" means ext4) and the type to use.
func Check(fsType string) (string, error) {
	switch fsType {
	case "", Ext4:
		return Ext4, nil
	case XFS:
		return XFS, nil
	default:
		return "", fmt.Errorf("%w %s (supported: ext4, xfs)", ErrUnsupported, untrusted.Quote(fsType))
	}
}

// Interface formats and grows filesystems.
type Interface interface {
	// Format makes a new filesystem on path (an image file or a device).
	Format(ctx context.Context, fsType, path string) error
	// Grow grows the filesystem mounted at mountPath from device to the
	// device's size, online.
	Grow(ctx context.Context, fsType, device, mountPath string) error
	// GrowOffline grows the filesystem on an unmounted device, if the
	// type can (ext4: check, then resize); it reports whether it did. XFS
	// grows only mounted: the caller mounts, then calls Grow.
	GrowOffline(ctx context.Context, fsType, device string) (bool, error)
}

// FS is the real Interface.
type FS struct {
	exec utilexec.Interface
}

// New returns an FS running commands through exec.
func New(exec utilexec.Interface) *FS { return &FS{exec: exec} }

// MkfsArgs are the mkfs command and arguments for a type. Exported so that
// the benchmark floor formats exactly as hostvol does.
func MkfsArgs(fsType, path string) (string, []string, error) {
	t, err := Check(fsType)
	if err != nil {
		return "", nil, err
	}
	switch t {
	case XFS:
		// -K: do not discard blocks of a sparse file (pointless, slow).
		return "mkfs.xfs", []string{"-f", "-q", "-K", path}, nil
	default:
		// -m 0: no blocks reserved for root, the user gets the size asked
		// for; lazy init and nodiscard keep mkfs of a sparse image fast.
		return "mkfs.ext4", []string{"-F", "-q", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", path}, nil
	}
}

// Format makes a filesystem of fsType on path.
func (f *FS) Format(ctx context.Context, fsType, path string) error {
	name, args, err := MkfsArgs(fsType, path)
	if err != nil {
		return err
	}
	return f.run(ctx, name, args...)
}

// Grow grows the mounted filesystem to its device's size.
func (f *FS) Grow(_ context.Context, fsType, device, mountPath string) error {
	if t, _ := Check(fsType); t == Ext4 && !HasCapSysResource() {
		return fmt.Errorf("%w: growing mounted ext4 on %s needs CAP_SYS_RESOURCE, which this process lacks", ErrOnlineGrowUnavailable, device)
	}
	if _, err := mount.NewResizeFs(f.exec).Resize(device, mountPath); err != nil {
		return fmt.Errorf("grow filesystem on %s at %s: %w", device, mountPath, err)
	}
	return nil
}

// GrowOffline checks and grows an unmounted ext4 filesystem.
func (f *FS) GrowOffline(ctx context.Context, fsType, device string) (bool, error) {
	if t, _ := Check(fsType); t != Ext4 {
		return false, nil
	}
	// e2fsck -f -p: replay the journal and check, fixing what is safe;
	// resize2fs refuses a filesystem not checked since its last mount.
	// Exit 1 means "errors corrected", which is fine.
	if err := f.run(ctx, "e2fsck", "-f", "-p", device); err != nil {
		var ee utilexec.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() != 1 {
			return false, err
		}
	}
	if err := f.run(ctx, "resize2fs", device); err != nil {
		return false, err
	}
	return true, nil
}

func (f *FS) run(ctx context.Context, name string, args ...string) error {
	cmd := f.exec.CommandContext(ctx, name, args...)
	cmd.SetEnv(append(os.Environ(), "LC_ALL=C"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if reportsNoSpace(msg) {
			return fmt.Errorf("%s %s: %w: %w: %s", name, strings.Join(args, " "), ErrNoSpace, err, msg)
		}
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return nil
}

// reportsNoSpace reports whether a tool's output names ENOSPC. The tools
// report a failed write with strerror(3) of its errno ("mkfs.ext4: No
// space left on device while writing out and closing file system",
// "mkfs.xfs: libxfs_device_zero write failed: No space left on device"),
// and run sets LC_ALL=C, so the text is the C library's English one
// whatever the node's locale. The exit status cannot tell (mkfs exits 1
// for every failure). Go's own text for the errno is the same words in
// lower case, so the comparison ignores case and no literal is repeated
// here. pkg/volume also checks the pool's free space after a failed
// format, for a tool that words it otherwise.
func reportsNoSpace(out string) bool {
	return strings.Contains(strings.ToLower(out), unix.ENOSPC.Error())
}

// HasCapSysResource reports whether this thread has CAP_SYS_RESOURCE in
// its effective set: it may exceed quota limits, and grow a mounted ext4.
func HasCapSysResource() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0
}
