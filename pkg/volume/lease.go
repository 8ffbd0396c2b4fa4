package volume

import (
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

// A loop filesystem in a shared pool is an image file every node can open;
// two kernels mounting it at once corrupt it. The node that stages it holds
// a lease in the pool (pool.AcquireLease) from before it attaches the image
// until after it detached it, and a node that finds another's lease does
// not attach: its stage is FAILED_PRECONDITION, which the kubelet retries
// until the other node has unstaged. Volumes created for several nodes
// (raw block with allowBlockRWX) are meant to be attached on several
// nodes, and take no lease.
// leased reports whether staging the volume takes the pool's lease.
func (n *Node) leased(v Volume) bool {
	p := n.pools[v.Pool]
	return p != nil && p.Shared && v.Kind.HasImage() && !v.MultiNode
}

// takeLease takes the volume's lease for this node; acquired says whether
// it was taken now (false: not needed, or held already).
func (n *Node) takeLease(v Volume) (acquired bool, err error) {
	if !n.leased(v) {
		return false, nil
	}
	acquired, err = n.pools[v.Pool].AcquireLease(v.ID, n.nodeID)
	if errors.Is(err, pool.ErrLeaseHeld) {
		return false, fmt.Errorf("%w: %v; a filesystem image is attached on one node at a time, this one waits until that node unstages it", ErrInUse, err)
	}
	if acquired {
		klog.V(2).InfoS("Lease taken", "volumeID", v.ID, "lease", n.pools[v.Pool].LeasePath(v.ID))
	}
	return acquired, err
}

// releaseLease gives back this node's lease of the volume, if it has one.
func (n *Node) releaseLease(v Volume) error {
	if !n.leased(v) {
		return nil
	}
	return n.pools[v.Pool].ReleaseLease(v.ID, n.nodeID)
}

// leaseHolder returns the node holding the volume's lease, or "".
func (n *Node) leaseHolder(v Volume) (string, error) {
	if !n.leased(v) {
		return "", nil
	}
	return n.pools[v.Pool].LeaseHolder(v.ID)
}
