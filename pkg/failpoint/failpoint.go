// Package failpoint lets crash tests kill the driver at a named point in the
// middle of an operation. The driver calls Hit("create-after-intent") and so
// on at the steps that matter for crash consistency; when the environment
// variable HOSTVOL_FAILPOINT names that point, the process sends itself
// SIGKILL there, exactly as an OOM kill or a power cut would end it. When
// the variable is unset (always, in production) Hit is a string comparison.
package failpoint

import (
	"os"
	"syscall"

	"k8s.io/klog/v2"
)

// EnvVar names the failpoint that kills the process.
const EnvVar = "HOSTVOL_FAILPOINT"

var armed = os.Getenv(EnvVar)

// NodePoints lists the failpoints of the node's stage, unstage, publish and
// unpublish, and of an inline volume's publish and unpublish, for
// test/crash's node tests to iterate.
var NodePoints = []string{
	"stage-after-attach",
	"stage-after-mount",
	"unstage-after-unmount",
	"unstage-after-detach",
	"publish-after-mount",
	"unpublish-after-unmount",
	"inline-after-create",
	"inline-after-unstage",
}

// Points lists the failpoints of CreateVolume and DeleteVolume, for tests
// to iterate.
var Points = []string{
	"create-after-intent",
	"create-after-data",
	"create-after-ready",
	"delete-after-intent",
	"delete-mid-data",
	"delete-after-data",
	"delete-after-quota",
}

// SnapshotPoints lists the failpoints of CreateSnapshot, DeleteSnapshot
// and of the copies behind snapshots, restores and clones, for
// test/crash's snapshot tests to iterate. "snapshot-frozen" is hit with
// the source's filesystem frozen (a snapshot's or a clone's reflink).
var SnapshotPoints = []string{
	"snapshot-after-intent",
	"snapshot-frozen",
	"snapshot-mid-copy",
	"snapshot-after-data",
	"snapshot-delete-after-intent",
	"snapshot-delete-after-data",
}

// Hit kills the process with SIGKILL if name is the armed failpoint.
func Hit(name string) {
	if armed == "" || armed != name {
		return
	}
	klog.InfoS("Failpoint hit, killing the process", "failpoint", name)
	klog.Flush()
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL is not deliverable late; never return into the operation
}
