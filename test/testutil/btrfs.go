package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/quota"
)

// BtrfsPool makes a btrfs filesystem of size bytes in an image file under
// t.TempDir(), mounts it through a loop device (mount -o loop, which
// detaches the device at unmount) with quotas enabled, and returns the
// mount point. t.Cleanup unmounts it, after whatever the test left mounted
// below it. Needs root and btrfs-progs (make deps installs them); without
// mkfs.btrfs the test skips, or fails when HOSTVOL_REQUIRE_ROOT_TESTS=1.
func BtrfsPool(t testing.TB, size int64) string {
	t.Helper()
	RequireRoot(t)
	for _, tool := range []string{"mkfs.btrfs", "btrfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(RequireRootEnv) == "1" {
				t.Fatalf("%s needs %s (btrfs-progs; make deps installs it)", t.Name(), tool)
			}
			t.Skipf("skipping %s: %s not installed (btrfs-progs; make deps installs it)", t.Name(), tool)
		}
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "btrfs.img"), filepath.Join(dir, "pool")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	Run(t, "mkfs.btrfs", "-q", "-f", img)
	Run(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() {
		// Whatever a failed test left mounted inside first, deepest first.
		for _, m := range MountsUnder(t, mnt) {
			if m == mnt {
				continue
			}
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				t.Errorf("cleanup: unmount %s: %v", m, err)
			}
		}
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("cleanup: unmount btrfs pool %s: %v", mnt, err)
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	Run(t, "btrfs", "quota", "enable", mnt)
	// Enabling starts a rescan; until it ends the kernel calls the
	// accounting inconsistent.
	Run(t, "btrfs", "quota", "rescan", "-w", mnt)
	return mnt
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
