package volume

import (
	"fmt"
	"path/filepath"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// Controller is the controller side of a node's volume layer: it creates,
// deletes, lists and expands volumes, keeps their records and what they
// promise of each pool's capacity, and sets their size limits. A fourth
// kind of object, snapshots, will be a type of its own beside Controller
// and Node over the same catalog.
type Controller struct {
	*catalog
	*quotas
	promises *promises
	// images is false when the node has no loop devices or filesystem
	// tools: loop and block volumes are then refused. fs formats a loop
	// volume's image when it is made.
	images bool
	fs     fsutil.Interface
	// node is the node side of the same process.
	node nodeSide
}

// nodeSide is what the controller side needs of this node's: whether a
// volume is in use here, to forget a volume it removed, to count an inline
// volume it loaded, and how this node's staging of a volume looks (health).
type nodeSide interface {
	inUse(v Volume) (string, error)
	forget(id string) error
	adopt(v Volume)
	conditions(v Volume) ([]Condition, error)
	snapshotUse(v Volume) (snapshotUse, error)
}

// load reads every record, finishes or rolls back operations a crash
// interrupted, and reports data without a record (Manager.Load).
func (c *Controller) load() error {
	stores := map[string]*records.Store{"": c.local}
	for name, s := range c.shared {
		stores[name] = s
	}
	known := make(map[string]bool)
	for sharedPool, s := range stores {
		keys, err := s.Keys()
		if err != nil {
			return err
		}
		for _, id := range keys {
			if err := volumeid.Validate(id); err != nil {
				klog.InfoS("Ignoring file in record directory that is not a volume record", "dir", s.Dir(), "name", id)
				continue
			}
			var v Volume
			if err := s.Get(id, &v); err != nil {
				// Never delete what we cannot read: an admin must look.
				// Node-local ones are kept in memory, so that listing
				// and health report them without reading them again;
				// List reads a shared pool's records anyway.
				klog.ErrorS(err, "Unreadable volume record left in place", "volumeID", id, "dir", s.Dir())
				if sharedPool == "" {
					c.mu.Lock()
					c.unreadable[id] = unreadableReason(s, id, err)
					c.mu.Unlock()
				}
				known[id] = true
				continue
			}
			known[id] = true
			if err := c.reconcile(s, sharedPool != "", v); err != nil {
				return fmt.Errorf("reconcile volume %s: %w", id, err)
			}
		}
	}
	return c.reportStrays(known)
}

// reportStrays logs the data in the pools that no record names. Nothing is
// lost: such data is reported, not removed.
func (c *Controller) reportStrays(known map[string]bool) error {
	for _, p := range c.pools {
		names, err := p.Entries()
		if err != nil {
			return fmt.Errorf("list pool %q: %w", p.Name, err)
		}
		for _, n := range names {
			if !known[n] {
				klog.InfoS("Data in pool has no volume record; leaving it in place", "pool", p.Name, "path", filepath.Join(p.Path, "volumes", n))
			}
		}
	}
	return nil
}

func (c *Controller) reconcile(s *records.Store, shared bool, v Volume) error {
	if c.otherNode(v) && v.State == StateReady {
		// Once per volume, at start-up: delete and expand refuse it, and
		// stage, publish and stats treat it as not on this node. (A
		// creation or deletion it left half done is still finished below:
		// it was this machine's, under its old name, and nobody else can.)
		klog.InfoS("Volume record names another node; this node will not delete, expand, stage or publish it (was hostvol restarted with another --node-id?)", "volumeID", v.ID, "recordNode", v.Node, "nodeID", c.nodeID, "state", v.State)
	}
	p := c.pools[v.Pool]
	if p != nil {
		c.adoptQuota(v)
	}
	if v.Frozen != "" {
		// A clone's reflink a crash cut short: its source stays frozen
		// until thawed.
		if err := thaw(v.Frozen); err != nil {
			klog.ErrorS(err, "Thawing a filesystem a clone left frozen failed", "volumeID", v.ID, "path", v.Frozen)
		} else {
			klog.InfoS("Thawed a filesystem a clone interrupted by a restart had frozen", "volumeID", v.ID, "path", v.Frozen)
		}
	}
	switch v.State {
	case StateReady:
		if !shared {
			c.setIndex(v)
		}
		if p == nil {
			klog.InfoS("Volume's pool is not configured on this node", "volumeID", v.ID, "pool", v.Pool)
			return nil
		}
		if ok, err := dataExists(p, v); err != nil || !ok {
			klog.ErrorS(err, "Volume data is missing", "volumeID", v.ID, "pool", v.Pool, "kind", v.Kind)
		}
		c.promises.set(v.ID, v.Pool, c.unallocated(p, v))
		c.node.adopt(v)
		return nil
	case StateCreating:
		if shared && v.CreatedBy != c.nodeID {
			return nil // another node may still be creating it
		}
		if p == nil {
			return fmt.Errorf("%w: %q", ErrPoolUnavailable, v.Pool)
		}
		klog.InfoS("Rolling back a volume creation interrupted by a restart", "volumeID", v.ID, "name", v.Name)
		return c.removeVolume(s, p, v)
	case StateDeleting:
		if shared && v.CreatedBy != c.nodeID {
			return nil
		}
		if p == nil {
			return fmt.Errorf("%w: %q", ErrPoolUnavailable, v.Pool)
		}
		klog.InfoS("Finishing a volume deletion interrupted by a restart", "volumeID", v.ID, "name", v.Name)
		return c.removeVolume(s, p, v)
	default:
		return fmt.Errorf("unknown state %q", v.State)
	}
}

// removeVolume removes the data, then what limited its size, then the
// record: never a record pointing at data that is gone without saying so
// (it says "deleting" or "creating" until the data is gone), and never a
// project limit or qgroup without the record that names it.
func (c *Controller) removeVolume(s *records.Store, p *pool.Pool, v Volume) error {
	var err error
	if v.Kind.HasImage() {
		err = p.RemoveImage(v.ID)
	} else {
		v, err = c.removeDir(s, p, v)
	}
	if err != nil {
		return fmt.Errorf("remove data of %s: %w", v.ID, err)
	}
	failpoint.Hit("delete-after-data")
	if err := c.clearQuota(v); err != nil {
		return err
	}
	failpoint.Hit("delete-after-quota")
	if err := s.Delete(v.ID); err != nil {
		return err
	}
	c.releaseQuota(v)
	c.deleteIndex(v.ID)
	c.promises.drop(v.ID)
	return c.node.forget(v.ID)
}
