package testutil

import (
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireRootEnv makes root-only tests fail instead of skip when set to 1.
const RequireRootEnv = "HOSTVOL_REQUIRE_ROOT_TESTS"

// RequireRoot skips a test that needs root when not root, or fails it when
// HOSTVOL_REQUIRE_ROOT_TESTS=1 (CI), so root tests never skip silently.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	missing(t, "root (real mounts, loop devices)")
}

// RequireTools is RequireRoot for commands the test runs (mkfs.ext4,
// mkfs.xfs, btrfs...): each must be on PATH. make deps installs them.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, tool+" (make deps installs it)")
		}
	}
}

// RequireRootAndTools is RequireRoot followed by RequireTools.
func RequireRootAndTools(t testing.TB, tools ...string) {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, tools...)
}

// missing skips t for lack of what, or fails it when
// HOSTVOL_REQUIRE_ROOT_TESTS=1.
func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv(RequireRootEnv) == "1" {
		t.Fatalf("%s needs %s and %s=1 is set", t.Name(), what, RequireRootEnv)
	}
	t.Skipf("skipping %s: needs %s (set %s=1 to make this a failure)", t.Name(), what, RequireRootEnv)
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
