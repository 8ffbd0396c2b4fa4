package volume

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
)

// Expand grows a volume on its node (NodeExpandVolume) and returns its
// capacity. With requiredBytes > 0 the controller step runs first, here on
// the volume's node (Controller.Expand: the image, or a directory's
// limit); a size at or below the current one changes nothing, so repeated
// calls, and the kubelet of every node using a shared volume, are
// idempotent. Then the node follows the grown image (followImage). It
// takes the volume's lock; limitBytes > 0 below the resulting capacity is
// ErrOutOfRange.
func (n *Node) Expand(ctx context.Context, id, path string, requiredBytes, limitBytes int64) (size int64, err error) {
	err = n.locked(id, func() error {
		if requiredBytes > 0 {
			if _, _, err := n.ctrl.expand(id, requiredBytes, limitBytes); err != nil {
				return err
			}
		}
		if size, err = n.followImage(ctx, id, path); err != nil {
			return err
		}
		if limitBytes > 0 && size > limitBytes {
			return fmt.Errorf("%w: volume %s has %d bytes, more than the limit %d", ErrOutOfRange, id, size, limitBytes)
		}
		return nil
	})
	return size, err
}

// followImage makes the node follow a grown image: refresh the loop
// device's size and grow the mounted filesystem online. path must be where
// the volume is published or staged. A volume that is not attached right
// now is grown at its next stage.
func (n *Node) followImage(ctx context.Context, id, path string) (int64, error) {
	v, ns, _, err := n.usedAt(id, path)
	if err != nil {
		return 0, err
	}
	if !v.Kind.HasImage() || !v.NodeExpandPending {
		return v.CapacityBytes, nil
	}
	p := n.pools[v.Pool]
	dev, err := n.findDevice(p, v, ns.Device)
	if err != nil {
		return 0, err
	}
	if dev == "" {
		return v.CapacityBytes, nil
	}
	if err := n.loop.Refresh(dev); err != nil {
		return 0, fmt.Errorf("refresh size of %s: %w", dev, err)
	}
	if v.Kind == KindLoop {
		// Grow only the filesystem that is this volume's, mounted where it
		// was staged; otherwise the next stage grows it.
		if staged, err := n.shows(ns.StagingPath, dev); err != nil {
			return 0, err
		} else if ns.StagingPath == "" || !staged {
			return 0, fmt.Errorf("%w: %s is attached but its filesystem is not mounted at its staging path; it grows when it is next staged", ErrNotStaged, id)
		}
		if err := n.fs.Grow(ctx, v.FsType, dev, ns.StagingPath); err != nil {
			if errors.Is(err, fsutil.ErrOnlineGrowUnavailable) {
				return 0, fmt.Errorf("%w: %v; it grows when the volume is next staged (restart the pod)", ErrNotAllowed, err)
			}
			return 0, err
		}
	}
	if err := n.clearExpandPending(v); err != nil {
		return 0, err
	}
	klog.V(2).InfoS("Volume expanded on the node", "volumeID", id, "device", dev, "capacityBytes", v.CapacityBytes)
	return v.CapacityBytes, nil
}
