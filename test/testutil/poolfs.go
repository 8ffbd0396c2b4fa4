package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
)

// PoolFS is a pool that is a filesystem of its own: an image file formatted
// and attached to a loop device, mounted at Path.
type PoolFS struct {
	Path   string // the mount point: the pool's path
	Image  string // the image file
	Device string // the loop device
	Type   string // ext4, xfs or btrfs
}

// PoolFSOptions shape a PoolFS.
type PoolFSOptions struct {
	Type string // ext4 (default), xfs or btrfs
	Size int64  // bytes
	// Mkfs are extra mkfs arguments (features, like ext4's project).
	Mkfs []string
	// MountData are mount options (prjquota).
	MountData string
}

// mkfsArgs are the arguments each mkfs gets before the caller's: quiet,
// force, and no discard of the sparse image.
var mkfsArgs = map[string][]string{
	"ext4":  {"-F", "-q", "-m", "0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"},
	"xfs":   {"-q", "-f", "-K"},
	"btrfs": {"-q", "-f"},
}

// NewPoolFS makes a filesystem in dir/pool-<type>.img, attaches it to a
// loop device and mounts it at dir/pool. It registers CleanupUnder(dir)
// first, so that when the test ends (however it ends, and after any driver
// started later has stopped) everything under dir is unmounted and
// detached: the pool, and the volumes staged from images inside it. Needs
// root and the filesystem's mkfs: without them the test skips, or fails
// when HOSTVOL_REQUIRE_ROOT_TESTS=1.
func NewPoolFS(t testing.TB, dir string, o PoolFSOptions) *PoolFS {
	t.Helper()
	if o.Type == "" {
		o.Type = "ext4"
	}
	base, ok := mkfsArgs[o.Type]
	if !ok {
		t.Fatalf("pool filesystem %q: want ext4, xfs or btrfs", o.Type)
	}
	RequireRootAndTools(t, "mkfs."+o.Type)
	CleanupUnder(t, dir)
	p := &PoolFS{Path: filepath.Join(dir, "pool"), Image: filepath.Join(dir, "pool-"+o.Type+".img"), Type: o.Type}
	f, err := os.OpenFile(p.Image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(o.Size); err != nil {
		t.Fatal(err)
	}
	Run(t, "mkfs."+o.Type, append(append(append([]string{}, base...), o.Mkfs...), p.Image)...)
	if p.Device, err = loop.New().Attach(f, loop.AttachOptions{}); err != nil {
		t.Fatalf("attach %s: %v", p.Image, err)
	}
	if err := os.MkdirAll(p.Path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(p.Device, p.Path, o.Type, 0, o.MountData); err != nil {
		t.Fatalf("mount %s (%s) at %s: %v", p.Device, p.Image, p.Path, err)
	}
	return p
}

// BtrfsPool makes a btrfs pool of size bytes (NewPoolFS in a new temporary
// directory) with quotas enabled, and returns its path. Needs root and
// btrfs-progs.
func BtrfsPool(t testing.TB, size int64) string {
	t.Helper()
	RequireRootAndTools(t, "mkfs.btrfs", "btrfs")
	p := NewPoolFS(t, t.TempDir(), PoolFSOptions{Type: "btrfs", Size: size})
	Run(t, "btrfs", "quota", "enable", p.Path)
	// Enabling starts a rescan; until it ends the kernel calls the
	// accounting inconsistent.
	Run(t, "btrfs", "quota", "rescan", "-w", p.Path)
	return p.Path
}

// Run runs a command with LC_ALL=C and fails the test with its output if
// it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// BtrfsQgroups lists the level-0 qgroups of the btrfs filesystem at path
// ("0/5", "0/256", ...), sorted by ID.
func BtrfsQgroups(t testing.TB, path string) []string {
	t.Helper()
	ids, err := quota.BtrfsQgroups(path)
	if err != nil {
		t.Fatalf("qgroups of %s: %v", path, err)
	}
	qs := make([]string, 0, len(ids))
	for _, id := range ids {
		qs = append(qs, fmt.Sprintf("0/%d", id))
	}
	return qs
}
