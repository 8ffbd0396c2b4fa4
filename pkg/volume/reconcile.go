package volume

import (
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// Start-up reconciliation of what the kernel holds with the records. A
// SIGKILL between a stage's attach and its record, or an unstage cut short,
// leaves a loop device attached to a pool image that no staging owns;
// nothing else would ever detach it (DeleteVolume would refuse the volume
// as "attached" forever). Load calls reconcileDevices before it settles
// the records, so that an image whose creation or deletion it rolls back
// is not held by a device.
// reconcileDevices detaches every loop device attached to an image of this
// node's pools that no staging or publish of this node holds and that is
// not mounted anywhere. Devices are matched to images by the backing
// file's device and inode (LOOP_GET_STATUS64), never by path: a device
// whose image is not in a pool of ours is not ours and is left alone, as
// is one whose volume's record cannot be read. It costs one read of every
// attached loop device and, only if some are attached, one stat of every
// image; nothing when none is attached (after a reboot).
//
// Nothing here stops start-up: what cannot be read is logged and left as
// it is (never detached on doubt), and a later unstage or delete of the
// volume still detaches its device.
func (n *Node) reconcileDevices() {
	if n.loop == nil {
		return
	}
	attached, err := n.loop.List()
	if err != nil {
		klog.ErrorS(err, "Some loop devices could not be read at start-up; they are left as they are")
	}
	if len(attached) == 0 {
		return
	}
	type imageRef struct {
		pool *pool.Pool
		id   string
	}
	images := map[[2]uint64]imageRef{}
	for _, p := range n.pools {
		ids, err := p.Images()
		if err != nil {
			klog.ErrorS(err, "Cannot list a pool's images; loop devices attached to them are left alone", "pool", p.Name)
			continue
		}
		for _, id := range validIDs(ids) {
			dev, ino, err := p.ImageFileID(id)
			if err != nil {
				klog.ErrorS(err, "Cannot identify an image; a loop device attached to it is left alone", "pool", p.Name, "volumeID", id)
				continue
			}
			images[[2]uint64{dev, ino}] = imageRef{pool: p, id: id}
		}
	}
	var mountedDevs map[string]bool
	for _, a := range attached {
		ref, ok := images[[2]uint64{a.Image.Dev, a.Image.Ino}]
		if !ok {
			continue
		}
		owned, err := n.deviceOwned(ref.pool, ref.id, a.Device)
		if err != nil {
			klog.ErrorS(err, "Cannot tell whether a loop device is in use; leaving it attached", "volumeID", ref.id, "device", a.Device)
			continue
		}
		if owned {
			continue
		}
		if mountedDevs == nil {
			if mountedDevs, err = n.mountedDevices(); err != nil {
				klog.ErrorS(err, "Cannot read the mount table; loop devices are left as they are")
				return
			}
		}
		if mountedDevs[a.Device] {
			klog.InfoS("A loop device of a volume is mounted where no record says; leaving it to the CO's next stage or unstage", "volumeID", ref.id, "device", a.Device)
			continue
		}
		if err := n.loop.Detach(a.Device); err != nil {
			klog.ErrorS(err, "Could not detach a loop device that no staging holds", "volumeID", ref.id, "device", a.Device)
			continue
		}
		klog.InfoS("Detached a loop device that no staging holds (left by an interrupted stage or unstage)", "volumeID", ref.id, "device", a.Device, "image", ref.pool.ImagePath(ref.id))
	}
}

// deviceOwned reports whether this node's record of a volume holds the
// loop device: a ready volume staged here (for a loop volume, with its
// filesystem mounted at the staging path), or published at a target that
// shows the device. An unreadable record owns it: hostvol never acts on
// what it cannot read.
func (n *Node) deviceOwned(p *pool.Pool, id, dev string) (bool, error) {
	var v Volume
	err := n.store(p.Name).Get(id, &v)
	if errors.Is(err, records.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	ns, err := n.getNodeState(id)
	if err != nil {
		return true, err
	}
	if v.State == StateReady && ns.StagingPath != "" {
		if v.Kind == KindBlock {
			return true, nil
		}
		if ok, err := n.shows(ns.StagingPath, dev); err != nil || ok {
			return true, err
		}
	}
	for t := range ns.Targets {
		if ok, err := n.shows(t, dev); err != nil || ok {
			return true, err
		}
	}
	return false, nil
}

// mountedDevices returns the sources of every mount (one read of the mount
// table, at start-up only).
func (n *Node) mountedDevices() (map[string]bool, error) {
	mps, err := n.mounter.List()
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	out := make(map[string]bool, len(mps))
	for _, mp := range mps {
		out[mp.Device] = true
	}
	return out, nil
}

// reconcileLeases gives back the leases this node holds in shared pools
// for volumes it has not staged (a stage that failed or was killed after
// taking the lease): another node may need them. Errors are logged: a
// shared pool that cannot be read must not keep the node from starting.
func (n *Node) reconcileLeases() {
	for _, p := range n.pools {
		if !p.Shared {
			continue
		}
		ids, err := p.Leases()
		if err != nil {
			klog.ErrorS(err, "Cannot list a shared pool's leases", "pool", p.Name)
			continue
		}
		for _, id := range validIDs(ids) {
			holder, err := p.LeaseHolder(id)
			if err != nil || holder != n.nodeID {
				continue
			}
			ns, err := n.getNodeState(id)
			if err != nil || ns.StagingPath != "" || len(ns.Targets) > 0 {
				continue
			}
			if err := p.ReleaseLease(id, n.nodeID); err != nil {
				klog.ErrorS(err, "Cannot give back a lease", "volumeID", id, "pool", p.Name)
				continue
			}
			klog.InfoS("Gave back the lease of a volume this node has not staged", "volumeID", id, "pool", p.Name)
		}
	}
}

// validIDs are the names among names that are volume IDs; anything else
// in a pool's directories is not hostvol's to act on.
func validIDs(names []string) []string {
	var out []string
	for _, n := range names {
		if volumeid.Validate(n) == nil {
			out = append(out, n)
		}
	}
	return out
}
