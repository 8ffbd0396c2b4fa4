// Package needs holds hostvol's capability checks for tests: a test that
// needs root or a tool skips with the reason, and fails instead when
// HOSTVOL_REQUIRE_ROOT_TESTS=1 (CI), so nothing skips silently there. It
// imports nothing of hostvol, so that the tests of any package, including
// those testutil itself builds on (pkg/loop), can use it; testutil
// re-exports it.
package needs

import (
	"os"
	"os/exec"
	"testing"
)

// RequireRootEnv makes root-only tests fail instead of skip when set to 1.
const RequireRootEnv = "HOSTVOL_REQUIRE_ROOT_TESTS"

// Root skips a test that needs root when not root, or under go test
// -short (make unit: no real mounts or loop devices even as root), or fails
// it when HOSTVOL_REQUIRE_ROOT_TESTS=1.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 || testing.Short() {
		Missing(t, "root (real mounts, loop devices), without -short")
	}
}

// Tools is Root for commands the test runs (mkfs.ext4, mkfs.xfs, btrfs...):
// each must be on PATH. make deps installs them.
func Tools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Missing(t, tool+" (make deps installs it)")
		}
	}
}

// Missing skips t for lack of what, or fails it when
// HOSTVOL_REQUIRE_ROOT_TESTS=1.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv(RequireRootEnv) == "1" {
		t.Fatalf("%s needs %s and %s=1 is set", t.Name(), what, RequireRootEnv)
	}
	t.Skipf("skipping %s: needs %s (set %s=1 to make this a failure)", t.Name(), what, RequireRootEnv)
}
