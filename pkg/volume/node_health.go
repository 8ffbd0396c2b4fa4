package volume

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

// NodeHealth reports the conditions of a volume of this node
// (NodeGetVolumeHealth). publishPath and stagingPath are optional and
// clean: a path where hostvol did not publish or stage the volume is
// reported as a condition (the CO may ask after a failed attempt), never
// looked at. A volume that does not live on this node is ErrNotFound. It
// takes the volume's lock, so no stage or unstage is half done while it
// looks.
func (n *Node) NodeHealth(id, publishPath, stagingPath string) (cs []Condition, err error) {
	err = n.locked(id, func() error {
		v, err := n.onThisNode(id)
		if err != nil {
			return err
		}
		cs, err = n.check(v, publishPath, stagingPath)
		return err
	})
	return cs, err
}

// conditions are a volume's conditions as this node sees them, for
// Controller.Health, which holds the volume's lock.
func (n *Node) conditions(v Volume) ([]Condition, error) {
	return n.check(v, "", "")
}

// check computes a volume's conditions, in a fixed order: pool, data, the
// paths asked about, staging (loop device, staging mount, its filesystem),
// then the directory volume's pool filesystem. Nothing here scans volumes;
// only a staged image whose recorded loop device is wrong costs a scan of
// the loop devices (as stage does), and that is already an abnormal case.
func (n *Node) check(v Volume, publishPath, stagingPath string) ([]Condition, error) {
	var cs conditions
	p := n.pools[v.Pool]
	if p == nil {
		cs.add(Inaccessible, ReasonPoolUnavailable, "volume %s: pool %q is not configured on node %q", v.ID, v.Pool, n.nodeID)
		return cs, nil
	}
	pc := p.Check()
	if pc.Problem != "" {
		cs.add(Inaccessible, ReasonPoolUnavailable, "volume %s: %s", v.ID, pc.Problem)
	}
	dataOK := n.checkData(&cs, p, v)

	ns, err := n.getNodeState(v.ID)
	if err != nil {
		return nil, err
	}
	readOnlyExpected := v.ReaderOnly || allReadOnly(ns.Targets)
	if stagingPath != "" && stagingPath != ns.StagingPath {
		cs.add(Inaccessible, ReasonNotStagedAtPath, "volume %s is not staged at %s on node %q", v.ID, stagingPath, n.nodeID)
	}
	if publishPath != "" {
		if err := n.checkTarget(&cs, v, ns, publishPath); err != nil {
			return nil, err
		}
	}
	if v.Kind.HasImage() && pc.Problem == "" && dataOK {
		if err := n.checkImageBacked(&cs, p, v); err != nil {
			return nil, err
		}
	}
	switch {
	case v.Kind.HasImage() && ns.StagingPath != "":
		err = n.checkStaging(&cs, p, v, ns, dataOK, readOnlyExpected)
	case v.Kind == KindDir && pc.Problem == "" && dataOK:
		err = n.checkDir(&cs, p, pc, v, readOnlyExpected)
	}
	if err != nil {
		return nil, err
	}
	return cs, nil
}

// checkDir looks at a directory volume's filesystem (the pool's): read-only
// when no publish asked for that, its limit exhausted.
func (n *Node) checkDir(cs *conditions, p *pool.Pool, pc pool.Check, v Volume, readOnlyExpected bool) error {
	if pc.ReadOnly && !readOnlyExpected {
		cs.add(Degraded, ReasonFilesystemReadOnly, "volume %s: the filesystem of pool %q at %s is read-only", v.ID, p.Name, p.Path)
	}
	msg, err := n.dirExhausted(p, v)
	if msg != "" {
		cs.add(Degraded, ReasonLimitExhausted, "volume %s: %s", v.ID, msg)
	}
	return err
}

// checkImageBacked adds PoolTooFull when the pool has less space available
// than the volume's sparse image may still need: a write inside the volume
// that reaches the unallocated part then fails (an I/O error on the loop
// device, which ext4 may answer by remounting read-only), although nothing
// is wrong with the volume itself. Promised capacity keeps this from
// happening through hostvol; something else filling the pool does not.
func (n *Node) checkImageBacked(cs *conditions, p *pool.Pool, v Volume) error {
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
func (n *Node) checkData(cs *conditions, p *pool.Pool, v Volume) bool {
	if msg := dataProblem(p, v); msg != "" {
		cs.add(Inaccessible, ReasonDataMissing, "volume %s: %s", v.ID, msg)
		return false
	}
	return true
}

// checkTarget looks at a publish path the CO asked about: only one this
// node recorded for the volume is looked at (is it still a mount point, is
// it read-only when the publish was not).
func (n *Node) checkTarget(cs *conditions, v Volume, ns nodeState, path string) error {
	t, ok := ns.Targets[path]
	if !ok {
		cs.add(Inaccessible, ReasonNotPublishedAtPath, "volume %s is not published at %s on node %q", v.ID, path, n.nodeID)
		return nil
	}
	src, err := n.source(v, ns)
	if err != nil {
		return err
	}
	mounted, err := n.showsTarget(v, path, src)
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
func (n *Node) checkStaging(cs *conditions, p *pool.Pool, v Volume, ns nodeState, dataOK, readOnlyExpected bool) error {
	dev := ""
	if dataOK && n.loop != nil {
		var err error
		dev, err = n.findDevice(p, v, ns.Device)
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
			mounted, err = n.shows(ns.StagingPath, dev)
		} else {
			// No image to identify the mount by: anything mounted there.
			mounted, err = n.mounter.MountRoot(ns.StagingPath)
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
func (n *Node) dirExhausted(p *pool.Pool, v Volume) (string, error) {
	if msg, err := n.limitExhausted(p, v); err != nil || msg != "" {
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

// PoolHealth reports the conditions of every pool of this node
// (NodeGetStorageHealth), in pool name order: missing (Inaccessible),
// read-only or nearly full (Degraded). It costs two stats and a statfs per
// pool, nothing per volume.
func (n *Node) PoolHealth() []PoolHealth {
	names := n.poolNames()
	out := make([]PoolHealth, 0, len(names))
	for _, name := range names {
		p := n.pools[name]
		out = append(out, PoolHealth{Name: name, Conditions: poolConditions(p, p.Check())})
	}
	return out
}
