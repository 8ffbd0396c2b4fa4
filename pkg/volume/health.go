package volume

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
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

// Health reports the conditions of a ready volume as this process sees
// them (ControllerGetVolumeHealth): controller and node are one process, so
// this includes what this node's staging of the volume looks like. Every
// check costs O(1) in the number of volumes. The caller holds the volume's
// lock, so no stage or unstage is half done while it looks.
func (m *Manager) Health(id string) ([]Condition, error) {
	if why, ok := m.Unreadable(id); ok {
		return recordUnreadable(id, why), nil
	}
	v, err := m.Get(id)
	if errors.Is(err, records.ErrCorrupt) {
		// A shared pool's record (List reads those anew), or one that
		// became unreadable after start-up.
		return recordUnreadable(id, err.Error()), nil
	}
	if err != nil {
		return nil, err
	}
	return m.check(v, "", "")
}

// recordUnreadable is the condition of a volume whose record cannot be
// read: nothing else about it can be checked.
func recordUnreadable(id, why string) []Condition {
	return []Condition{{Severity: Inaccessible, Reason: ReasonRecordUnreadable,
		Message: fmt.Sprintf("volume %s: %s; hostvol leaves the record and the data in place until an admin repairs or removes the record (and restarts hostvol)", id, why)}}
}

// NodeHealth reports the conditions of a volume of this node
// (NodeGetVolumeHealth). publishPath and stagingPath are optional and
// clean: a path where hostvol did not publish or stage the volume is
// reported as a condition (the CO may ask after a failed attempt), never
// looked at. A volume that does not live on this node is ErrNotFound. The
// caller holds the volume's lock.
func (m *Manager) NodeHealth(id, publishPath, stagingPath string) ([]Condition, error) {
	v, err := m.onThisNode(id)
	if err != nil {
		return nil, err
	}
	return m.check(v, publishPath, stagingPath)
}

// ListHealth pages through ready volumes and unreadable records in ID
// order (like List) and returns those with conditions, at most max of them
// (0: all), and the token for the next page: the last volume examined, ""
// at the end. A volume whose lock is held is skipped this time (an
// operation is changing it; ControllerGetVolumeHealth answers for one
// volume), a volume that cannot be checked is reported with
// ReasonHealthCheckFailed, and an unreadable record with
// ReasonRecordUnreadable.
func (m *Manager) ListHealth(after string, max int) ([]VolumeHealth, string, error) {
	vols, _, err := m.List(after, 0)
	if err != nil {
		return nil, "", err
	}
	var out []VolumeHealth
	for i, v := range vols {
		var cs []Condition
		ok := true
		if v.Unreadable != "" {
			cs = recordUnreadable(v.ID, v.Unreadable)
		} else {
			cs, ok = m.tryCheck(v.ID)
		}
		if !ok || len(cs) == 0 {
			continue
		}
		out = append(out, VolumeHealth{ID: v.ID, Conditions: cs})
		if max > 0 && len(out) == max && i < len(vols)-1 {
			return out, v.ID, nil
		}
	}
	return out, "", nil
}

// tryCheck checks one volume under its try-lock; ok is false when the lock
// is held or the volume went away.
func (m *Manager) tryCheck(id string) ([]Condition, bool) {
	unlock, ok := m.TryLock(id)
	if !ok {
		return nil, false
	}
	defer unlock()
	v, err := m.Get(id)
	if err != nil {
		return nil, false // deleted meanwhile
	}
	cs, err := m.check(v, "", "")
	if err != nil {
		klog.ErrorS(err, "Volume health check failed", "volumeID", id)
		return []Condition{{Severity: Degraded, Reason: ReasonHealthCheckFailed, Message: fmt.Sprintf("volume %s: health check failed: %v", id, err)}}, true
	}
	return cs, true
}

// check computes a volume's conditions, in a fixed order: pool, data, the
// paths asked about, staging (loop device, staging mount, its filesystem),
// then the directory volume's pool filesystem. Nothing here scans volumes;
// only a staged image whose recorded loop device is wrong costs a scan of
// the loop devices (as stage does), and that is already an abnormal case.
func (m *Manager) check(v Volume, publishPath, stagingPath string) ([]Condition, error) {
	var cs conditions
	p := m.pools[v.Pool]
	if p == nil {
		cs.add(Inaccessible, ReasonPoolUnavailable, "volume %s: pool %q is not configured on node %q", v.ID, v.Pool, m.nodeID)
		return cs, nil
	}
	pc := p.Check()
	if pc.Problem != "" {
		cs.add(Inaccessible, ReasonPoolUnavailable, "volume %s: %s", v.ID, pc.Problem)
	}
	dataOK := m.checkData(&cs, p, v)

	ns, err := m.getNodeState(v.ID)
	if err != nil {
		return nil, err
	}
	readOnlyExpected := v.ReaderOnly || allReadOnly(ns.Targets)
	if stagingPath != "" && stagingPath != ns.StagingPath {
		cs.add(Inaccessible, ReasonNotStagedAtPath, "volume %s is not staged at %s on node %q", v.ID, stagingPath, m.nodeID)
	}
	if publishPath != "" {
		if err := m.checkTarget(&cs, v, ns, publishPath); err != nil {
			return nil, err
		}
	}
	if v.Kind.HasImage() && pc.Problem == "" && dataOK {
		if err := m.checkImageBacked(&cs, p, v); err != nil {
			return nil, err
		}
	}
	switch {
	case v.Kind.HasImage() && ns.StagingPath != "":
		if err := m.checkStaging(&cs, p, v, ns, dataOK, readOnlyExpected); err != nil {
			return nil, err
		}
	case v.Kind == KindDir && pc.Problem == "" && dataOK:
		if pc.ReadOnly && !readOnlyExpected {
			cs.add(Degraded, ReasonFilesystemReadOnly, "volume %s: the filesystem of pool %q at %s is read-only", v.ID, p.Name, p.Path)
		}
		if msg, err := m.dirExhausted(p, v); err != nil {
			return nil, err
		} else if msg != "" {
			cs.add(Degraded, ReasonLimitExhausted, "volume %s: %s", v.ID, msg)
		}
	}
	return cs, nil
}

// checkImageBacked adds PoolTooFull when the pool has less space available
// than the volume's sparse image may still need: a write inside the volume
// that reaches the unallocated part then fails (an I/O error on the loop
// device, which ext4 may answer by remounting read-only), although nothing
// is wrong with the volume itself. Promised capacity keeps this from
// happening through hostvol; something else filling the pool does not.
func (m *Manager) checkImageBacked(cs *conditions, p *pool.Pool, v Volume) error {
	size, allocated, err := p.ImageUsage(v.ID)
	if err != nil {
		return err
	}
	st, err := p.Stats()
	if err != nil {
		return err
	}
	if need := size - allocated; need > st.AvailableBytes {
		cs.add(Degraded, ReasonPoolTooFull, "volume %s: its image may still need %s, but pool %q has %s available; writes inside the volume can fail with I/O errors until space is freed", v.ID, fmtBytes(need), p.Name, fmtBytes(st.AvailableBytes))
	}
	return nil
}

// checkData adds DataMissing when the volume's directory or image is gone
// (or is not a directory or regular file) and reports whether it is there.
func (m *Manager) checkData(cs *conditions, p *pool.Pool, v Volume) bool {
	if msg := dataProblem(p, v); msg != "" {
		cs.add(Inaccessible, ReasonDataMissing, "volume %s: %s", v.ID, msg)
		return false
	}
	return true
}

// checkTarget looks at a publish path the CO asked about: only one this
// node recorded for the volume is looked at (is it still a mount point, is
// it read-only when the publish was not).
func (m *Manager) checkTarget(cs *conditions, v Volume, ns nodeState, path string) error {
	t, ok := ns.Targets[path]
	if !ok {
		cs.add(Inaccessible, ReasonNotPublishedAtPath, "volume %s is not published at %s on node %q", v.ID, path, m.nodeID)
		return nil
	}
	src, err := m.source(v, ns)
	if err != nil {
		return err
	}
	mounted, err := m.showsTarget(v, path, src)
	if err != nil {
		return err
	}
	if !mounted {
		cs.add(Inaccessible, ReasonNotPublishedAtPath, "volume %s was published at %s, but nothing is mounted there any more", v.ID, path)
		return nil
	}
	if t.ReadOnly || v.Kind == KindBlock {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		cs.add(Degraded, ReasonFilesystemReadOnly, "volume %s: its filesystem is read-only at %s, which was published read-write", v.ID, path)
	}
	return nil
}

// checkStaging looks at a staged loop or block volume: a loop device must
// back its image, and a loop volume's filesystem must be mounted at the
// staging path, writable (unless every publish is read-only) and not full.
func (m *Manager) checkStaging(cs *conditions, p *pool.Pool, v Volume, ns nodeState, dataOK, readOnlyExpected bool) error {
	dev := ""
	if dataOK && m.loop != nil {
		var err error
		dev, err = m.findDevice(p, v, ns.Device)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if dev == "" {
			cs.add(Inaccessible, ReasonLoopDeviceDetached, "volume %s is staged at %s, but no loop device backs its image %s (detached, or the node rebooted); stage it again", v.ID, ns.StagingPath, p.ImagePath(v.ID))
		}
	}
	mounted := true
	if v.Kind == KindLoop {
		var err error
		if dataOK {
			mounted, err = m.shows(ns.StagingPath, dev)
		} else {
			// No image to identify the mount by: anything mounted there.
			mounted, err = m.mounter.MountRoot(ns.StagingPath)
		}
		if err != nil {
			return err
		}
		if !mounted {
			cs.add(Inaccessible, ReasonStagingMountMissing, "volume %s is staged at %s, but its filesystem is not mounted there (unmounted, or the node rebooted); stage it again", v.ID, ns.StagingPath)
		}
	}
	if v.Kind != KindLoop || !mounted {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(ns.StagingPath, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", ns.StagingPath, err)
	}
	if st.Flags&unix.ST_RDONLY != 0 && !readOnlyExpected {
		cs.add(Degraded, ReasonFilesystemReadOnly, "volume %s: its %s filesystem at %s is read-only (remounted read-only after an error?); no publish asked for read-only", v.ID, v.FsType, ns.StagingPath)
	}
	if msg := exhausted(pool.FSStatsOf(&st)); msg != "" {
		cs.add(Degraded, ReasonLimitExhausted, "volume %s: its filesystem at %s %s", v.ID, ns.StagingPath, msg)
	}
	return nil
}

// dirExhausted says why a directory volume can take no more data, or "":
// a limited volume's own usage against its limit (quota accounting, as
// NodeGetVolumeStats reports it), then its pool's filesystem (read inside
// the pool, without following symlinks), since a full pool stops writes
// below any limit.
func (m *Manager) dirExhausted(p *pool.Pool, v Volume) (string, error) {
	if msg, err := m.limitExhausted(p, v); err != nil || msg != "" {
		return msg, err
	}
	fs, err := p.DirStats(v.ID)
	if err != nil {
		return "", fmt.Errorf("stat data of %s: %w", v.ID, err)
	}
	if msg := exhausted(fs); msg != "" {
		return fmt.Sprintf("the filesystem of pool %q %s", p.Name, msg), nil
	}
	return "", nil
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

// PoolHealth reports the conditions of every pool of this node
// (NodeGetStorageHealth), in pool name order: missing (Inaccessible),
// read-only or nearly full (Degraded). It costs two stats and a statfs per
// pool, nothing per volume.
func (m *Manager) PoolHealth() []PoolHealth {
	names := make([]string, 0, len(m.pools))
	for n := range m.pools {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]PoolHealth, 0, len(names))
	for _, n := range names {
		p := m.pools[n]
		out = append(out, PoolHealth{Name: n, Conditions: poolConditions(p, p.Check())})
	}
	return out
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
