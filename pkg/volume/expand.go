package volume

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
)

// Expand grows a volume to at least requiredBytes (controller side): the
// image file grows (sparse) and the record says the node must follow; a
// limited directory's limit is raised, online, with no node step. It
// returns the new capacity and whether node expansion is required. A volume
// already at least that large is left alone (idempotent); a limit below the
// current size would shrink it: ErrOutOfRange. The caller holds the lock.
//
// Order: image (or limit) first, record second. A crash in between leaves
// an image or limit larger than its record; the CO retries and the retry
// finds the image already grown (truncate to the same size is a no-op) or
// sets the same limit again.
func (m *Manager) Expand(id string, requiredBytes, limitBytes int64) (int64, bool, error) {
	v, s, err := m.lookup(id)
	if err != nil {
		return 0, false, err
	}
	if v.State != StateReady {
		return 0, false, fmt.Errorf("%w: %s is %s", ErrNotFound, id, v.State)
	}
	if m.otherNode(v) {
		// As stage and publish see it (onThisNode): not a volume of this node.
		return 0, false, fmt.Errorf("%w: %s lives on node %q, not %q", ErrNotFound, id, v.Node, m.nodeID)
	}
	if limitBytes > 0 && requiredBytes > limitBytes {
		return 0, false, fmt.Errorf("%w: required %d bytes exceeds limit %d", ErrOutOfRange, requiredBytes, limitBytes)
	}
	if v.Ephemeral && requiredBytes > v.CapacityBytes {
		// Its pod did not ask, and the node's inline caps would not hold.
		return 0, false, fmt.Errorf("%w: %s is the inline volume of pod %s/%s; inline volumes keep the size their pod asked for", ErrNotAllowed, id, v.PVCNamespace, v.PVCName)
	}
	if limitBytes > 0 && v.CapacityBytes > limitBytes {
		return 0, false, fmt.Errorf("%w: %s has %d bytes; shrinking to %d is not supported", ErrOutOfRange, id, v.CapacityBytes, limitBytes)
	}
	if requiredBytes <= v.CapacityBytes {
		return v.CapacityBytes, v.NodeExpandPending, nil
	}
	p := m.pools[v.Pool]
	if p == nil {
		return 0, false, fmt.Errorf("%w: %q", ErrPoolUnavailable, v.Pool)
	}
	size := requiredBytes
	if v.Kind.HasImage() {
		var ok bool
		if size, ok = roundImageSize(requiredBytes); !ok {
			// CSI: "Unsupported capacity" is OUT_OF_RANGE, which the
			// resizer and the kubelet treat as infeasible: no retry can
			// ever grow an image to this size.
			return 0, false, fmt.Errorf("%w: %s cannot grow to %d bytes: an image holds at most %d bytes (whole 4 KiB blocks in a signed 64-bit size)", ErrOutOfRange, id, requiredBytes, maxImageSize)
		}
		if limitBytes > 0 && size > limitBytes {
			return 0, false, fmt.Errorf("%w: %s grows in whole 4 KiB blocks; %d bytes exceed the limit %d", ErrOutOfRange, id, size, limitBytes)
		}
	}
	st, err := p.Stats()
	if err != nil {
		return 0, false, err
	}
	before := m.unallocated(p, v)
	// size > v.CapacityBytes >= before here, so size-v.CapacityBytes+before
	// cannot overflow (before+size can, for sizes near MaxInt64).
	if err := m.promises.reserve(id, v.Pool, st.AvailableBytes, size-v.CapacityBytes+before); err != nil {
		return 0, false, fmt.Errorf("expand %s: %w", id, err)
	}
	if v.Kind.HasImage() {
		if err := p.GrowImage(id, size); err != nil {
			m.promises.set(id, v.Pool, before)
			return 0, false, fmt.Errorf("grow image of %s: %w", id, err)
		}
		v.NodeExpandPending = true
	} else if err := m.setQuotaSize(v, size); err != nil {
		m.promises.set(id, v.Pool, before)
		return 0, false, err
	}
	old := v.CapacityBytes
	v.CapacityBytes = size
	if err := s.Put(id, v); err != nil {
		return 0, false, err
	}
	if s == m.local {
		m.setIndex(v)
	}
	klog.V(2).InfoS("Volume expanded", "volumeID", id, "fromBytes", old, "toBytes", size, "nodeExpansionRequired", v.NodeExpandPending)
	return size, v.NodeExpandPending, nil
}

// NodeExpand makes the node follow a grown image: refresh the loop
// device's size and grow the mounted filesystem online. path must be where
// the volume is published or staged. A volume that is not attached right
// now is grown at its next stage.
func (m *Manager) NodeExpand(ctx context.Context, id, path string) (int64, error) {
	v, ns, _, err := m.usedAt(id, path)
	if err != nil {
		return 0, err
	}
	if !v.Kind.HasImage() || !v.NodeExpandPending {
		return v.CapacityBytes, nil
	}
	p := m.pools[v.Pool]
	dev, err := m.findDevice(p, v, ns.Device)
	if err != nil {
		return 0, err
	}
	if dev == "" {
		return v.CapacityBytes, nil
	}
	if err := m.loop.Refresh(dev); err != nil {
		return 0, fmt.Errorf("refresh size of %s: %w", dev, err)
	}
	if v.Kind == KindLoop {
		// Grow only the filesystem that is this volume's, mounted where it
		// was staged; otherwise the next stage grows it.
		if staged, err := m.shows(ns.StagingPath, dev); err != nil {
			return 0, err
		} else if ns.StagingPath == "" || !staged {
			return 0, fmt.Errorf("%w: %s is attached but its filesystem is not mounted at its staging path; it grows when it is next staged", ErrNotStaged, id)
		}
		if err := m.fs.Grow(ctx, v.FsType, dev, ns.StagingPath); err != nil {
			if errors.Is(err, fsutil.ErrOnlineGrowUnavailable) {
				return 0, fmt.Errorf("%w: %v; it grows when the volume is next staged (restart the pod)", ErrNotAllowed, err)
			}
			return 0, err
		}
	}
	if err := m.clearExpandPending(v); err != nil {
		return 0, err
	}
	klog.V(2).InfoS("Volume expanded on the node", "volumeID", id, "device", dev, "capacityBytes", v.CapacityBytes)
	return v.CapacityBytes, nil
}

// clearExpandPending records that the node has caught up with the image.
func (m *Manager) clearExpandPending(v Volume) error {
	cur, s, err := m.lookup(v.ID)
	if err != nil {
		return err
	}
	cur.NodeExpandPending = false
	if err := s.Put(v.ID, cur); err != nil {
		return err
	}
	if s == m.local {
		m.setIndex(cur)
	}
	return nil
}
