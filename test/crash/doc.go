// Package crash holds hostvol's crash-consistency acceptance tests: they run
// the real hostvol binary, kill it with SIGKILL in the middle of
// CreateVolume and DeleteVolume (at each failpoint of pkg/failpoint, and
// from outside while many operations are in flight), restart it, and check
// that the records, the pool and ListVolumes agree. See crash_test.go.
//
// The tests need no root: they use create and delete only, never a mount.
package crash
