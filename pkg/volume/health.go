package volume

import (
	"fmt"
	"strings"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

// Severity is how bad a condition is. The driver maps it to the CSI health
// types: Degraded to DEGRADED (volumes) and STORAGE_DEGRADED (pools),
// Inaccessible to INACCESSIBLE and STORAGE_UNREACHABLE.
type Severity int

// Severities.
const (
	// Degraded: usable, but not as it should be (full, read-only).
	Degraded Severity = iota + 1
	// Inaccessible: not usable until someone acts (data, device, mount or
	// pool gone).
	Inaccessible
)

func (s Severity) String() string {
	switch s {
	case Degraded:
		return "Degraded"
	case Inaccessible:
		return "Inaccessible"
	default:
		return fmt.Sprintf("Severity(%d)", int(s))
	}
}

// Reasons of volume conditions: short CamelCase strings for machines (CSI
// VolumeHealthEntry.reason). They are part of hostvol's interface; do not
// rename them.
const (
	// ReasonPoolUnavailable: the volume's pool is not configured on this
	// node, or its path no longer serves as the pool (see pool.Check).
	ReasonPoolUnavailable = "PoolUnavailable"
	// ReasonDataMissing: the data directory or image file is gone, or is
	// not a directory or regular file any more.
	ReasonDataMissing = "DataMissing"
	// ReasonLimitExhausted: the volume can take no more data: its
	// filesystem has (almost) no bytes or no inodes left.
	ReasonLimitExhausted = "LimitExhausted"
	// ReasonLoopDeviceDetached: the node state says the volume is staged,
	// but no loop device backs its image.
	ReasonLoopDeviceDetached = "LoopDeviceDetached"
	// ReasonStagingMountMissing: a loop volume is staged, but nothing is
	// mounted at its staging path.
	ReasonStagingMountMissing = "StagingMountMissing"
	// ReasonFilesystemReadOnly: the filesystem is read-only although no
	// publish asked for that (remounted read-only after an error, or by an
	// admin).
	ReasonFilesystemReadOnly = "FilesystemReadOnly"
	// ReasonNotStagedAtPath: NodeGetVolumeHealth named a staging path where
	// the volume is not staged.
	ReasonNotStagedAtPath = "NotStagedAtPath"
	// ReasonNotPublishedAtPath: NodeGetVolumeHealth named a publish path
	// where the volume is not published (never was, or its mount is gone).
	ReasonNotPublishedAtPath = "NotPublishedAtPath"
	// ReasonPoolTooFull: a loop or block volume's pool has less space
	// available than its sparse image may still need, so writes inside the
	// volume can fail.
	ReasonPoolTooFull = "PoolTooFull"
	// ReasonHealthCheckFailed: ControllerListVolumeHealth could not check
	// the volume (its node state is unreadable, the loop devices could not
	// be searched).
	ReasonHealthCheckFailed = "HealthCheckFailed"
	// ReasonRecordUnreadable: the volume's record cannot be read (it does
	// not decode, or reading it fails); hostvol leaves it, and the data,
	// in place for an admin.
	ReasonRecordUnreadable = "RecordUnreadable"
)

// Reasons of pool conditions (CSI StorageBackendHealth.reason).
const (
	// ReasonPoolMissing: the pool's path is missing, not a directory, or no
	// longer the directory opened at start-up.
	ReasonPoolMissing = "PoolMissing"
	// ReasonPoolReadOnly: the pool's filesystem is read-only.
	ReasonPoolReadOnly = "PoolReadOnly"
	// ReasonPoolNearlyFull: the pool's filesystem is nearly out of bytes
	// or inodes.
	ReasonPoolNearlyFull = "PoolNearlyFull"
)

// Thresholds. A volume's limit is exhausted when its filesystem has less
// than exhaustedBytes available or no free inode: ext4 and XFS refuse
// writes with ENOSPC while statfs still shows some tens of KiB available
// (ext4's reserved clusters, XFS's set-aside blocks). A pool is nearly full
// when less than nearlyFullPercent of its bytes are available, capped at
// nearlyFullMaxBytes (10 GiB free on a 10 TiB pool is nearly full; 400 GiB
// is not), or less than nearlyFullPercent of its inodes are free, capped
// at nearlyFullMaxInodes.
const (
	exhaustedBytes      = 1 << 20
	nearlyFullPercent   = 5
	nearlyFullMaxBytes  = 10 << 30
	nearlyFullMaxInodes = 1 << 20
)

// Condition is one adverse condition of a volume or pool. No condition at
// all means healthy.
type Condition struct {
	Severity Severity
	Reason   string
	Message  string
}

// conditions collects Conditions, at most one per (severity, reason): CSI
// forbids two health entries with the same pair.
type conditions []Condition

func (cs *conditions) add(sev Severity, reason, format string, args ...any) {
	for _, c := range *cs {
		if c.Severity == sev && c.Reason == reason {
			return
		}
	}
	*cs = append(*cs, Condition{Severity: sev, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// VolumeHealth is one volume's conditions; none means healthy.
type VolumeHealth struct {
	ID         string
	Conditions []Condition
}

// recordUnreadable is the condition of a volume whose record cannot be
// read: nothing else about it can be checked.
func recordUnreadable(id, why string) []Condition {
	return []Condition{{Severity: Inaccessible, Reason: ReasonRecordUnreadable,
		Message: fmt.Sprintf("volume %s: %s; hostvol leaves the record and the data in place until an admin repairs or removes the record (and restarts hostvol)", id, why)}}
}

// exhausted says what a filesystem has run out of ("has 12 KiB available
// of 64 MiB", "has no free inodes of 16384"), or "".
func exhausted(fs pool.FSStats) string {
	var out []string
	if fs.AvailableBytes < exhaustedBytes {
		out = append(out, fmt.Sprintf("has %s available of %s", fmtBytes(fs.AvailableBytes), fmtBytes(fs.TotalBytes)))
	}
	if fs.TotalInodes > 0 && fs.FreeInodes == 0 {
		out = append(out, fmt.Sprintf("has no free inodes of %d", fs.TotalInodes))
	}
	return strings.Join(out, " and ")
}

// allReadOnly reports whether there are targets and every one of them was
// published read-only: then a read-only filesystem is what they asked for.
func allReadOnly(targets map[string]target) bool {
	for _, t := range targets {
		if !t.ReadOnly {
			return false
		}
	}
	return len(targets) > 0
}

// PoolHealth is one pool's conditions; none means healthy.
type PoolHealth struct {
	Name       string
	Conditions []Condition
}

// poolConditions turns a pool check into conditions.
func poolConditions(p *pool.Pool, c pool.Check) []Condition {
	var cs conditions
	if c.Problem != "" {
		cs.add(Inaccessible, ReasonPoolMissing, "%s", c.Problem)
		return cs
	}
	if c.ReadOnly {
		cs.add(Degraded, ReasonPoolReadOnly, "pool %q: the filesystem at %s is read-only", p.Name, p.Path)
	}
	if msg := nearlyFull(c.FS); msg != "" {
		cs.add(Degraded, ReasonPoolNearlyFull, "pool %q at %s %s", p.Name, p.Path, msg)
	}
	return cs
}

// nearlyFull says what a pool's filesystem is nearly out of, or "": less
// than 5% of its bytes available, or less than 10 GiB on a filesystem over
// 200 GiB; less than 5% of its inodes free, or less than 2^20 on a
// filesystem with over 20 million (filesystems that report no inode count,
// like btrfs, are judged on bytes alone).
func nearlyFull(fs pool.FSStats) string {
	var out []string
	if fs.TotalBytes > 0 && fs.AvailableBytes < min(fs.TotalBytes*nearlyFullPercent/100, nearlyFullMaxBytes) {
		out = append(out, fmt.Sprintf("has %s available of %s", fmtBytes(fs.AvailableBytes), fmtBytes(fs.TotalBytes)))
	}
	if fs.TotalInodes > 0 && fs.FreeInodes < min(fs.TotalInodes*nearlyFullPercent/100, nearlyFullMaxInodes) {
		out = append(out, fmt.Sprintf("has %d free inodes of %d", fs.FreeInodes, fs.TotalInodes))
	}
	return strings.Join(out, " and ")
}

// fmtBytes formats a byte count for messages: "12.0 KiB", "64.0 MiB".
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
