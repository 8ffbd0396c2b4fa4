package volume

import (
	"fmt"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
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
	if err := c.checkExpand(v, requiredBytes, limitBytes); err != nil {
		return 0, false, err
	}
	if requiredBytes <= v.CapacityBytes {
		return v.CapacityBytes, v.NodeExpandPending, nil
	}
	p := c.pools[v.Pool]
	if p == nil {
		return 0, false, fmt.Errorf("%w: %q", ErrPoolUnavailable, v.Pool)
	}
	size, err := expandedSize(v, requiredBytes, limitBytes)
	if err != nil {
		return 0, false, err
	}
	if err := c.grow(p, v, size); err != nil {
		return 0, false, err
	}
	old := v.CapacityBytes
	v.CapacityBytes, v.NodeExpandPending = size, v.NodeExpandPending || v.Kind.HasImage()
	if err := s.Put(id, v); err != nil {
		return 0, false, err
	}
	if s == c.local {
		c.setIndex(v)
	}
	klog.V(2).InfoS("Volume expanded", "volumeID", id, "fromBytes", old, "toBytes", size, "nodeExpansionRequired", v.NodeExpandPending)
	return size, v.NodeExpandPending, nil
}

// checkExpand refuses an expansion the volume cannot have: not ready, not
// this node's, a range that contradicts itself, an inline volume growing,
// or a limit below its size (shrinking).
func (c *Controller) checkExpand(v Volume, requiredBytes, limitBytes int64) error {
	switch {
	case v.State != StateReady:
		return fmt.Errorf("%w: %s is %s", ErrNotFound, v.ID, v.State)
	case c.otherNode(v):
		// As stage and publish see it (onThisNode): not a volume of this node.
		return fmt.Errorf("%w: %s lives on node %q, not %q", ErrNotFound, v.ID, v.Node, c.nodeID)
	case limitBytes > 0 && requiredBytes > limitBytes:
		return fmt.Errorf("%w: required %d bytes exceeds limit %d", ErrOutOfRange, requiredBytes, limitBytes)
	case v.Ephemeral && requiredBytes > v.CapacityBytes:
		// Its pod did not ask, and the node's inline caps would not hold.
		return fmt.Errorf("%w: %s is the inline volume of pod %s/%s; inline volumes keep the size their pod asked for", ErrNotAllowed, v.ID, v.PVCNamespace, v.PVCName)
	case limitBytes > 0 && v.CapacityBytes > limitBytes:
		return fmt.Errorf("%w: %s has %d bytes; shrinking to %d is not supported", ErrOutOfRange, v.ID, v.CapacityBytes, limitBytes)
	}
	return nil
}

// expandedSize is the size a volume grows to: an image's in whole 4 KiB
// blocks (roundImageSize), within the limit.
func expandedSize(v Volume, requiredBytes, limitBytes int64) (int64, error) {
	if !v.Kind.HasImage() {
		return requiredBytes, nil
	}
	size, ok := roundImageSize(requiredBytes)
	if !ok {
		// CSI: "Unsupported capacity" is OUT_OF_RANGE, which the resizer
		// and the kubelet treat as infeasible: no retry can ever grow an
		// image to this size.
		return 0, fmt.Errorf("%w: %s cannot grow to %d bytes: an image holds at most %d bytes (whole 4 KiB blocks in a signed 64-bit size)", ErrOutOfRange, v.ID, requiredBytes, maxImageSize)
	}
	if limitBytes > 0 && size > limitBytes {
		return 0, fmt.Errorf("%w: %s grows in whole 4 KiB blocks; %d bytes exceed the limit %d", ErrOutOfRange, v.ID, size, limitBytes)
	}
	return size, nil
}

// grow reserves the growth in the pool's promises, then grows the image
// (sparse) or raises the directory's limit; a failure gives the promise
// back.
func (c *Controller) grow(p *pool.Pool, v Volume, size int64) error {
	st, err := p.Stats()
	if err != nil {
		return err
	}
	before := c.unallocated(p, v)
	// size > v.CapacityBytes >= before here, so size-v.CapacityBytes+before
	// cannot overflow (before+size can, for sizes near MaxInt64).
	if err := c.promises.reserve(v.ID, v.Pool, st.AvailableBytes, size-v.CapacityBytes+before); err != nil {
		return fmt.Errorf("expand %s: %w", v.ID, err)
	}
	if v.Kind.HasImage() {
		err = p.GrowImage(v.ID, size)
		if err != nil {
			err = fmt.Errorf("grow image of %s: %w", v.ID, err)
		}
	} else {
		err = c.setQuotaSize(v, size)
	}
	if err != nil {
		c.promises.set(v.ID, v.Pool, before)
	}
	return err
}
