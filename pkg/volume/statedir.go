package volume

import (
	"fmt"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Reasons of state directory conditions (NodeGetStorageHealth).
const (
	// ReasonStateDirReadOnly: the state directory is on a read-only
	// filesystem or mount: no operation can record anything.
	ReasonStateDirReadOnly = "StateDirReadOnly"
	// ReasonStateDirUnavailable: the state directory cannot be examined
	// (removed, an I/O error).
	ReasonStateDirUnavailable = "StateDirUnavailable"
)

// StateDirHealth reports whether this node can write its records: the
// directories of the node-local records and of the node state must be on
// a writable filesystem. It is what Probe (and so /healthz) and
// NodeGetStorageHealth answer from, so it must stay cheap: one statfs per
// directory, no write. statfs's ST_RDONLY is the kernel's own answer for
// both a filesystem remounted read-only (ext4 errors=remount-ro) and a
// read-only (bind) mount, and it is exactly when every record write fails
// with EROFS. A write probe (create, write, remove a file) would catch more
// (a full disk, a dying one) but dirties the filesystem every few seconds
// on every node, and without an fsync most of its failures would not show
// anyway. No condition: writable.
func (c *catalog) StateDirHealth() []Condition {
	var cs conditions
	for _, dir := range c.stateDirs {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			cs.add(Inaccessible, ReasonStateDirUnavailable, "%s (state directory): %v: hostvol can record no change (create, delete, stage, publish all fail)", dir, err)
			continue
		}
		if st.Flags&unix.ST_RDONLY != 0 {
			cs.add(Degraded, ReasonStateDirReadOnly, "%s (state directory) is on a read-only filesystem: hostvol can record no change (create, delete, stage, publish all fail); mounted volumes keep working", dir)
		}
	}
	c.logStateDir(cs)
	return cs
}

// logStateDir logs when the state directory's condition changes (Probe
// asks every few seconds; the log says it once).
func (c *catalog) logStateDir(cs []Condition) {
	msg := ""
	if len(cs) > 0 {
		msg = cs[0].Message
	}
	c.stateDirMu.Lock()
	prev := c.stateDirMsg
	c.stateDirMsg = msg
	c.stateDirMu.Unlock()
	switch {
	case msg == prev:
	case msg != "":
		klog.ErrorS(fmt.Errorf("%s", msg), "State directory cannot be written; Probe and /healthz answer not ready")
	default:
		klog.InfoS("State directory is writable again", "previously", prev)
	}
}
