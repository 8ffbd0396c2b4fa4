package vmtests

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestVMEnvironment checks what the other tests take for granted: full
// root, the filesystems, loop devices and the userland tools.
func TestVMEnvironment(t *testing.T) {
	RequireVM(t)

	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s", unix.ByteSliceToString(uts.Release[:]))

	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		t.Fatalf("capget: %v", err)
	}
	for _, c := range []struct {
		name string
		bit  int
	}{{"CAP_SYS_ADMIN", unix.CAP_SYS_ADMIN}, {"CAP_SYS_RESOURCE", unix.CAP_SYS_RESOURCE}} {
		if caps[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			t.Errorf("%s is not in the effective capability set", c.name)
		}
	}

	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			have[f[len(f)-1]] = true
		}
	}
	for _, fs := range []string{"ext4", "xfs", "tmpfs"} {
		if !have[fs] {
			t.Errorf("/proc/filesystems lacks %s:\n%s", fs, b)
		}
	}

	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Errorf("loop devices: %v", err)
	}

	for _, tool := range []string{"mount", "umount", "losetup", "blkid", "blockdev", "mkfs.ext4", "e2fsck", "resize2fs", "mkfs.xfs", "xfs_growfs", "xfs_quota"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Errorf("%s: %v", tool, err)
		}
	}
	// k8s.io/mount-utils execs mount; busybox's applet would do for most
	// things, but the tests are meant to see what a node runs.
	for _, tool := range []string{"mount", "umount"} {
		out, err := exec.Command(tool, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "util-linux") {
			t.Errorf("%s is not util-linux's: %v %s", tool, err, out)
		}
	}
}
