// Package testutil is hostvol's one test harness, used by the unit tests
// under pkg/ and by every suite under test/:
//
//   - driver.go: a driver served in-process on a socket under t.TempDir(),
//     on a volume manager and pools, with fakes (any user) or with the
//     adapters cmd/hostvol builds (root); Node restarts one on the same
//     state directory and pool, the way a reboot does.
//   - client.go: a gRPC client of the three CSI services, and a context
//     that bounds one RPC.
//   - volume.go: the kinds of volume the suites use and a Volume to
//     create, stage, publish and delete through the client.
//   - layout.go: where a volume's record, node state, data and image live,
//     asked of pkg/pool rather than spelled out.
//   - poolfs.go: pools that are filesystems of their own (ext4, XFS,
//     btrfs in an image on a loop device).
//   - release.go: the release of every mount and loop device a test made,
//     registered with t.Cleanup so that it also runs when the test fails.
//   - caps.go: the capability checks of the subpackage needs: a test that
//     needs root or a tool skips with the reason, and fails instead when
//     HOSTVOL_REQUIRE_ROOT_TESTS=1 (CI), so nothing skips silently there.
//     needs imports nothing of hostvol, for tests of packages testutil
//     itself imports (pkg/loop).
//   - fill.go: writing until the kernel refuses, and capability helpers
//     for quota tests.
//
// It stays where the suites and the pkg/ tests already import it, under
// test/ with the suites that use it most, rather than moving to internal/:
// it is test code only, nothing outside this module's tests imports it,
// and a move would touch every test of the module for no gain. Calls into
// volume.Manager stay in driver.go (Load, Record, Enforcement) so that the
// manager's API can change in one place.
package testutil
