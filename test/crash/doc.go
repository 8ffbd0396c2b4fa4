// Package crash holds hostvol's crash-consistency acceptance tests: they run
// the real hostvol binary, kill it with SIGKILL in the middle of
// CreateVolume and DeleteVolume (at each failpoint of pkg/failpoint, and
// from outside while many operations are in flight), restart it, and check
// that the records, the pool and ListVolumes agree. driverproc_test.go runs
// the binary and reads what it left on disk; the *_crash_test.go files
// crash it in controller, node, loop and inline-volume operations.
//
// The controller tests of directory volumes need no root; the others do.
package crash
