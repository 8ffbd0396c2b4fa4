package volume

import (
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
)

// Delete removes a volume and its data. A missing volume is not an error
// (CSI: DeleteVolume is idempotent). It takes the volume's lock.
//
// Order of durable steps: record "deleting" -> data removed -> record
// removed. Load finishes a deletion a crash interrupted.
func (c *Controller) Delete(id string) error {
	return c.locked(id, func() error { return c.delete(id) })
}

// delete is Delete under the lock.
func (c *Controller) delete(id string) error {
	v, s, err := c.lookup(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.otherNode(v) {
		// Not OK either: the provisioner would believe the volume gone
		// while its data stays on the node that owns it.
		return fmt.Errorf("%w: volume %s lives on node %q (its record in %s says so), and this driver runs as node %q: refusing to delete another node's data; run hostvol with --node-id=%s to delete it", ErrOtherNode, id, v.Node, s.Dir(), c.nodeID, v.Node)
	}
	p := c.pools[v.Pool]
	if p == nil {
		return fmt.Errorf("%w: volume %s is in pool %q", ErrPoolUnavailable, id, v.Pool)
	}
	if v.State == StateCreating && v.CreatedBy != c.nodeID {
		return fmt.Errorf("%w: %s is being created by node %q", ErrBusy, id, v.CreatedBy)
	}
	if c.copying(id) {
		return fmt.Errorf("%w: a snapshot of %s is being copied from it", ErrBusy, id)
	}
	if where, err := c.node.inUse(v); err != nil {
		return err
	} else if where != "" {
		return fmt.Errorf("%w: %s is still published or staged at %s", ErrInUse, id, where)
	}
	if v.State != StateDeleting {
		v.State = StateDeleting
		if err := s.Put(id, v); err != nil {
			return err
		}
		c.deleteIndex(id)
	}
	failpoint.Hit("delete-after-intent")
	if err := c.removeVolume(s, p, v); err != nil {
		return err
	}
	klog.V(2).InfoS("Volume deleted", "volumeID", id, "name", v.Name)
	return nil
}
