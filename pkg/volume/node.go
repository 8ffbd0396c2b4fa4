package volume

import (
	"errors"
	"fmt"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
)

// The node side: stage, publish, unpublish, unstage. A node's life is
// reboots (every mount and loop device gone), SIGKILLs between any two
// steps, and retries of every call. Three rules hold everywhere:
//
//   - The mount table, not a record, says what is mounted. A path counts
//     as this volume's staging or target only while the mount there shows
//     the volume's own data (mounter.Interface.Shows: its data directory,
//     or the loop device of its image), so a reboot, or another volume
//     mounted at a path a record names, never looks like "already done".
//   - hostvol unmounts, detaches and removes only what it can prove is the
//     volume's: a mount that shows its data, the loop device attached to
//     its image, an empty directory (or, for raw block, an empty file)
//     where it published.
//   - A step that fails undoes what the call did before it; a step a crash
//     interrupts is settled by the retry, by the opposite call, or at
//     start-up (reconcile.go), each of which finds the state from the
//     kernel.

// Node is the node side of a node's volume layer: it stages, publishes,
// unpublishes, unstages, measures and grows volumes on this node, makes
// and removes inline volumes, keeps what this node has staged and
// published (node states), and reports the health of what it mounted.
type Node struct {
	*catalog
	*quotas
	// ctrl makes and removes inline volumes and grows a volume's image
	// (NodeExpandVolume): the controller steps, under the lock the node
	// operation took.
	ctrl    *Controller
	mounter mounter.Interface
	// protected are the real paths of the pools and the state directory:
	// no target or staging path from a request may be at, inside or above
	// one of them.
	protected []protectedPath
	loop      loop.Manager
	fs        fsutil.Interface
	// nodeStates holds what this node has staged and published, per
	// volume.
	nodeStates *records.Store
	// ephemeralDir holds the staging mounts of inline loop volumes, which
	// the kubelet never stages (ephemeral.go).
	ephemeralDir string
	// inline keeps the bytes of this node's inline volumes against the
	// node's cap (ephemeral.go).
	inline *inlineBudget
}

// forget drops what this node keeps of a removed volume: its node state
// and its share of the inline budget.
func (n *Node) forget(id string) error {
	n.inline.release(id)
	return n.nodeStates.Delete(id)
}

// adopt counts a loaded inline volume against the node's inline budget.
func (n *Node) adopt(v Volume) {
	if v.Ephemeral {
		n.inline.set(v.ID, v.CapacityBytes)
	}
}

// nodeState is this node's durable view of one volume's use: where it is
// staged and published. A target is recorded before its mount is made and
// forgotten after it is removed (single-writer enforcement and delete
// protection survive restarts); a staging path is recorded once its mount
// is made. Entries whose mount is gone (a reboot) are dropped when next
// looked at.
type nodeState struct {
	ID          string `json:"id"`
	StagingPath string `json:"stagingPath,omitempty"`
	// Device is the loop device the image was last attached to: a hint
	// checked first, never trusted (after a reboot it names another image
	// or nothing).
	Device  string            `json:"device,omitempty"`
	Targets map[string]target `json:"targets,omitempty"`
}

type target struct {
	ReadOnly     bool `json:"readOnly"`
	SingleWriter bool `json:"singleWriter,omitempty"`
}

func (n *Node) getNodeState(id string) (nodeState, error) {
	var ns nodeState
	err := n.nodeStates.Get(id, &ns)
	if errors.Is(err, records.ErrNotFound) {
		return nodeState{ID: id, Targets: map[string]target{}}, nil
	}
	if ns.Targets == nil {
		ns.Targets = map[string]target{}
	}
	return ns, err
}

func (n *Node) putNodeState(ns nodeState) error {
	if ns.StagingPath == "" && len(ns.Targets) == 0 {
		return n.nodeStates.Delete(ns.ID)
	}
	return n.nodeStates.Put(ns.ID, ns)
}

// onThisNode returns the ready volume if this node may serve it: it lives
// here, or in a shared pool this node has.
func (n *Node) onThisNode(id string) (Volume, error) {
	v, err := n.Get(id)
	if err != nil {
		return Volume{}, err
	}
	if n.otherNode(v) {
		return Volume{}, fmt.Errorf("%w: %s lives on node %q, not %q", ErrNotFound, id, v.Node, n.nodeID)
	}
	if n.pools[v.Pool] == nil {
		return Volume{}, fmt.Errorf("%w: %s is in pool %q, which this node does not have", ErrNotFound, id, v.Pool)
	}
	return v, nil
}

// checkAccessType refuses a block request for a filesystem volume and the
// reverse.
func checkAccessType(v Volume, block bool) error {
	if block && v.Kind != KindBlock {
		return fmt.Errorf("%w: %s is a %s volume; block access needs a volume created for block access", ErrInvalid, v.ID, v.Kind)
	}
	if !block && v.Kind == KindBlock {
		return fmt.Errorf("%w: %s is a raw block volume; it has no filesystem to mount", ErrInvalid, v.ID)
	}
	return nil
}

// forCO returns a volume of this node that the CO may stage and publish
// itself (onThisNode); an inline volume belongs to the pod whose publish
// made it (ephemeral.go): ErrNotAllowed.
func (n *Node) forCO(id string) (Volume, error) {
	v, err := n.onThisNode(id)
	if err != nil {
		return Volume{}, err
	}
	if v.Ephemeral {
		return Volume{}, fmt.Errorf("%w: %s is the inline volume of pod %s/%s; only that pod's publish uses it", ErrNotAllowed, v.ID, v.PVCNamespace, v.PVCName)
	}
	return v, nil
}
