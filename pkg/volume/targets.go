package volume

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

// shows reports whether the mount at path is of source ("" shows nothing).
func (n *Node) shows(path, source string) (bool, error) {
	if source == "" {
		return false, nil
	}
	return n.mounter.Shows(path, source)
}

// stateOf reads a volume's node state and its source.
func (n *Node) stateOf(v Volume) (nodeState, string, error) {
	ns, err := n.getNodeState(v.ID)
	if err != nil {
		return nodeState{}, "", err
	}
	src, err := n.source(v, ns)
	return ns, src, err
}

// source is what proves that a mount is this volume's: its data directory,
// or the loop device its image is attached to; "" when its image is not
// attached (then nothing mounted anywhere can be this volume's).
func (n *Node) source(v Volume, ns nodeState) (string, error) {
	p := n.pools[v.Pool]
	if p == nil {
		return "", nil
	}
	if !v.Kind.HasImage() {
		return p.DirPath(v.ID), nil
	}
	if n.loop == nil {
		return "", nil
	}
	dev, err := n.findDevice(p, v, ns.Device)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil // no image: nothing to attach
	}
	return dev, err
}

// showsTarget reports whether the mount at a target this node recorded
// for the volume is the volume's: it shows the volume's source, or, for a
// directory volume whose data directory was removed while published, the
// removed directory (nothing else can be bind-mounted from a directory
// that no longer exists, and the record says this node mounted it there).
func (n *Node) showsTarget(v Volume, path, source string) (bool, error) {
	ok, err := n.shows(path, source)
	if ok || err != nil || v.Kind.HasImage() {
		return ok, err
	}
	if p := n.pools[v.Pool]; p != nil {
		if exists, err := p.DirExists(v.ID); err != nil || exists {
			return false, err
		}
	}
	return n.mounter.ShowsDeletedDir(path)
}

// liveTargets drops recorded targets whose mount is gone or no longer
// shows the volume (after a reboot, or a crash before the mount was made).
func (n *Node) liveTargets(v Volume, ns *nodeState, source string) (changed bool, err error) {
	for t := range ns.Targets {
		ok, err := n.showsTarget(v, t, source)
		if err != nil {
			return changed, err
		}
		if !ok {
			delete(ns.Targets, t)
			changed = true
		}
	}
	return changed, nil
}

// staged reports whether the recorded staging still holds: a loop
// volume's filesystem mounted at its staging path, a block volume's image
// attached. A directory volume stages without a mount: its record is all
// there is.
func (n *Node) staged(v Volume, ns nodeState, source string) (bool, error) {
	if ns.StagingPath == "" {
		return false, nil
	}
	switch v.Kind {
	case KindLoop:
		return n.shows(ns.StagingPath, source)
	case KindBlock:
		return source != "", nil
	default:
		return true, nil
	}
}

// inUse returns where a volume is still published, staged or attached on
// this node (or attached on another node, for a shared pool), or "". A
// loop device attached to its image that nothing holds (left by a stage
// that a crash cut short) is detached on the way.
func (n *Node) inUse(v Volume) (string, error) {
	ns, src, err := n.stateOf(v)
	if err != nil {
		return "", err
	}
	changed, err := n.liveTargets(v, &ns, src)
	if err != nil {
		return "", err
	}
	var where []string
	for t := range ns.Targets {
		where = append(where, t)
	}
	sort.Strings(where)
	if v.Kind.HasImage() {
		live, err := n.staged(v, ns, src)
		if err != nil {
			return "", err
		}
		switch {
		case live:
			where = append(where, ns.StagingPath+" (staged)")
		case ns.StagingPath != "":
			ns.StagingPath, ns.Device = "", ""
			changed = true
		}
		holder, err := n.leaseHolder(v)
		if err != nil {
			return "", err
		}
		if holder != "" && holder != n.nodeID {
			where = append(where, fmt.Sprintf("node %q (its lease %s)", holder, n.pools[v.Pool].LeasePath(v.ID)))
		} else if src != "" && !live && len(ns.Targets) == 0 {
			if err := n.detachLeftover(v, src); errors.Is(err, loop.ErrBusy) {
				where = append(where, src+" (attached, and open elsewhere)")
			} else if err != nil {
				return "", err
			}
		}
	}
	if changed {
		if err := n.putNodeState(ns); err != nil {
			return "", err
		}
	}
	return strings.Join(where, ", "), nil
}

// detachLeftover detaches a loop device attached to the volume's image
// that no staging or publish holds, and gives back a shared pool's lease.
func (n *Node) detachLeftover(v Volume, dev string) error {
	if err := n.loop.Detach(dev); err != nil {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	klog.InfoS("Detached a loop device that no staging of its volume holds", "volumeID", v.ID, "device", dev)
	return n.releaseLease(v)
}

// findDevice returns the loop device the volume's image is attached to, or
// "". An image that does not exist is an error wrapping os.ErrNotExist.
func (n *Node) findDevice(p *pool.Pool, v Volume, hint string) (string, error) {
	f, err := p.OpenImage(v.ID)
	if err != nil {
		return "", err
	}
	defer f.Close()
	img, err := loop.ImageOf(f)
	if err != nil {
		return "", err
	}
	return n.loop.Find(img, hint)
}
