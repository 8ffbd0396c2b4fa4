package testutil

import (
	"testing"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/test/testutil/needs"
)

// RequireRootEnv makes root-only tests fail instead of skip when set to 1.
const RequireRootEnv = needs.RequireRootEnv

// RequireRoot skips a test that needs root when not root, or under
// go test -short (make unit: no real mounts or loop devices even as root),
// or fails it when HOSTVOL_REQUIRE_ROOT_TESTS=1 (CI), so root tests never
// skip silently.
func RequireRoot(t testing.TB) { t.Helper(); needs.Root(t) }

// RequireTools is RequireRoot for commands the test runs (mkfs.ext4,
// mkfs.xfs, btrfs...): each must be on PATH. make deps installs them.
func RequireTools(t testing.TB, tools ...string) { t.Helper(); needs.Tools(t, tools...) }

// RequireRootAndTools is RequireRoot followed by RequireTools.
func RequireRootAndTools(t testing.TB, tools ...string) {
	t.Helper()
	needs.Root(t)
	needs.Tools(t, tools...)
}

// HasCapSysResource is fsutil.HasCapSysResource, for tests that choose
// what to expect by it.
func HasCapSysResource() bool { return fsutil.HasCapSysResource() }
