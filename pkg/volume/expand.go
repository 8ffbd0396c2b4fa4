package volume

import (
	"fmt"

	"k8s.io/klog/v2"
)

// Expand grows a volume to at least requiredBytes (controller side): the
// image file grows (sparse) and the record says the node must follow; a
// limited directory's limit is raised, online, with no node step. It
// returns the new capacity and whether node expansion is required. A volume
// already at least that large is left alone (idempotent); a limit below the
// current size would shrink it: ErrOutOfRange. It takes the volume's lock.
//
// Order: image (or limit) first, record second. A crash in between leaves
// an image or limit larger than its record; the CO retries and the retry
// finds the image already grown (truncate to the same size is a no-op) or
// sets the same limit again.
func (c *Controller) Expand(id string, requiredBytes, limitBytes int64) (size int64, nodeExpansion bool, err error) {
	err = c.locked(id, func() error {
		size, nodeExpansion, err = c.expand(id, requiredBytes, limitBytes)
		return err
	})
	return size, nodeExpansion, err
}

// expand is Expand under the lock.
func (c *Controller) expand(id string, requiredBytes, limitBytes int64) (int64, bool, error) {
	v, s, err := c.lookup(id)
	if err != nil {
		return 0, false, err
	}
	if v.State != StateReady {
		return 0, false, fmt.Errorf("%w: %s is %s", ErrNotFound, id, v.State)
	}
	if c.otherNode(v) {
		// As stage and publish see it (onThisNode): not a volume of this node.
		return 0, false, fmt.Errorf("%w: %s lives on node %q, not %q", ErrNotFound, id, v.Node, c.nodeID)
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
	p := c.pools[v.Pool]
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
	before := c.unallocated(p, v)
	// size > v.CapacityBytes >= before here, so size-v.CapacityBytes+before
	// cannot overflow (before+size can, for sizes near MaxInt64).
	if err := c.promises.reserve(id, v.Pool, st.AvailableBytes, size-v.CapacityBytes+before); err != nil {
		return 0, false, fmt.Errorf("expand %s: %w", id, err)
	}
	if v.Kind.HasImage() {
		if err := p.GrowImage(id, size); err != nil {
			c.promises.set(id, v.Pool, before)
			return 0, false, fmt.Errorf("grow image of %s: %w", id, err)
		}
		v.NodeExpandPending = true
	} else if err := c.setQuotaSize(v, size); err != nil {
		c.promises.set(id, v.Pool, before)
		return 0, false, err
	}
	old := v.CapacityBytes
	v.CapacityBytes = size
	if err := s.Put(id, v); err != nil {
		return 0, false, err
	}
	if s == c.local {
		c.setIndex(v)
	}
	klog.V(2).InfoS("Volume expanded", "volumeID", id, "fromBytes", old, "toBytes", size, "nodeExpansionRequired", v.NodeExpandPending)
	return size, v.NodeExpandPending, nil
}
