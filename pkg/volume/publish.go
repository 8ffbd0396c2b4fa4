package volume

import (
	"fmt"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
)

// Publish bind-mounts a volume at the target path, enforcing its access mode:
// a directory's data, a loop volume's staging mount, or a block volume's
// loop device (onto a file at the target path).
func (n *Node) Publish(req PublishRequest) error {
	return n.locked(req.ID, func() error {
		v, err := n.forCO(req.ID)
		if err != nil {
			return err
		}
		return n.publish(v, req)
	})
}

// publish is Publish of a volume the caller may publish.
func (n *Node) publish(v Volume, req PublishRequest) error {
	if err := checkAccessType(v, req.Block); err != nil {
		return err
	}
	if v.ReaderOnly && req.Writer {
		return fmt.Errorf("%w: %s was created read-only; a writer access mode cannot publish it", ErrNotAllowed, req.ID)
	}
	if err := n.checkRequestPath("target path", req.TargetPath); err != nil {
		return err
	}
	readOnly := req.ReadOnly || v.ReaderOnly || !req.Writer
	want := target{ReadOnly: readOnly, SingleWriter: req.SingleWriter || v.SingleWriter}
	if !readOnly && n.copying(v.ID) {
		// A snapshot's file-by-file copy is consistent only while nothing
		// writes the volume; the kubelet retries.
		return fmt.Errorf("%w: a snapshot of %s is being copied; it can be published read-write once the copy is done", ErrBusy, req.ID)
	}

	ns, src, err := n.stateOf(v)
	if err != nil {
		return err
	}
	if _, err := n.liveTargets(v, &ns, src); err != nil {
		return err
	}
	if done, err := n.admit(ns, req, want); err != nil || done {
		return err
	}
	bind, err := n.publishSource(v, ns, src, req.StagingPath)
	if err != nil {
		return err
	}
	return n.bindTarget(v, ns, req, bind, want)
}

// admit decides whether a publish may go on: done when the volume is
// published at the target as asked already (CSI: reply OK); an error when
// it is published there otherwise, something else is mounted there, or a
// single-writer volume is published elsewhere.
func (n *Node) admit(ns nodeState, req PublishRequest, want target) (done bool, err error) {
	if have, ok := ns.Targets[req.TargetPath]; ok {
		if have != want {
			return false, fmt.Errorf("%w: %s is already published at %s with read-only=%v", ErrAlreadyExists, req.ID, req.TargetPath, have.ReadOnly)
		}
		return true, nil
	}
	if mounted, err := n.mounter.MountRoot(req.TargetPath); err != nil {
		return false, err
	} else if mounted {
		return false, fmt.Errorf("%w: something is mounted at %s already, and it is not a publish of %s this node made", ErrAlreadyExists, req.TargetPath, req.ID)
	}
	for t, have := range ns.Targets {
		if want.SingleWriter || have.SingleWriter {
			return false, fmt.Errorf("%w: %s uses single-writer access (ReadWriteOncePod) and is already published at %s", ErrInUse, req.ID, t)
		}
	}
	return false, nil
}

// bindTarget records the target, then bind-mounts bind at it: a crash in
// between leaves an entry that liveTargets drops, never a mount this node
// does not know about. A failed mount takes back the record and a target
// it made.
func (n *Node) bindTarget(v Volume, ns nodeState, req PublishRequest, bind string, want target) error {
	ns.Targets[req.TargetPath] = want
	if err := n.putNodeState(ns); err != nil {
		return err
	}
	undo := func() {
		delete(ns.Targets, req.TargetPath)
		if err := n.putNodeState(ns); err != nil {
			klog.ErrorS(err, "Could not drop the record of a failed publish", "volumeID", req.ID)
		}
	}
	mp, err := mounter.MakeMountPoint(req.TargetPath, v.Kind == KindBlock)
	if err != nil {
		undo()
		return mountPointErr("target path", err)
	}
	opts := append([]string{"bind"}, req.MountFlags...)
	if want.ReadOnly {
		opts = append(opts, "ro")
	}
	if err := n.mounter.Mount(bind, req.TargetPath, "", opts); err != nil {
		if mp.Created {
			if _, _, rerr := mounter.RemoveMountPoint(req.TargetPath, v.Kind == KindBlock); rerr != nil {
				klog.ErrorS(rerr, "Could not remove the target of a failed publish", "volumeID", req.ID, "targetPath", req.TargetPath)
			}
		}
		undo()
		return fmt.Errorf("bind mount %s at %s: %w", bind, req.TargetPath, err)
	}
	failpoint.Hit("publish-after-mount")
	klog.V(2).InfoS("Volume published", "volumeID", req.ID, "targetPath", req.TargetPath, "readOnly", want.ReadOnly)
	return nil
}

// publishSource is what a publish binds at the target: the data directory,
// the staging mount, or the loop device. Loop and block volumes must be
// staged first (at stagingPath, when the CO names one).
func (n *Node) publishSource(v Volume, ns nodeState, src, stagingPath string) (string, error) {
	p := n.pools[v.Pool]
	switch v.Kind {
	case KindLoop:
		if ns.StagingPath == "" {
			return "", fmt.Errorf("%w: %s must be staged before it is published", ErrNotStaged, v.ID)
		}
		if stagingPath != "" && stagingPath != ns.StagingPath {
			return "", fmt.Errorf("%w: %s is staged at %s, not at %s", ErrNotStaged, v.ID, ns.StagingPath, stagingPath)
		}
		live, err := n.shows(ns.StagingPath, src)
		if err != nil {
			return "", err
		}
		if !live {
			return "", fmt.Errorf("%w: %s is not mounted at its staging path %s (stage it again)", ErrNotStaged, v.ID, ns.StagingPath)
		}
		return ns.StagingPath, nil
	case KindBlock:
		if src == "" {
			return "", fmt.Errorf("%w: %s has no loop device attached (stage it again)", ErrNotStaged, v.ID)
		}
		return src, nil
	default:
		if ok, err := p.DirExists(v.ID); err != nil || !ok {
			return "", fmt.Errorf("data of %s is missing at %s: %v", v.ID, p.DirPath(v.ID), err)
		}
		return p.DirPath(v.ID), nil
	}
}

// Unpublish unmounts the volume from the target path and removes the
// target. Only mounts that show the volume's data are unmounted (another
// volume's mount at the path is FAILED_PRECONDITION, left alone), and only
// an empty directory (for a raw block volume, an empty file) is removed:
// a target that is no longer mounted (a reboot) succeeds, and so does one
// that is gone (CSI: idempotent). It takes the volume's lock.
func (n *Node) Unpublish(id, targetPath string) error {
	return n.locked(id, func() error { return n.unpublish(id, targetPath) })
}

// unpublish is Unpublish under the lock.
func (n *Node) unpublish(id, targetPath string) error {
	v, err := n.Get(id)
	if err != nil {
		return err
	}
	ns, src, err := n.stateOf(v)
	if err != nil {
		return err
	}
	_, recorded := ns.Targets[targetPath]
	foreign, err := n.unmountOwn(v, targetPath, src, recorded)
	if err != nil {
		return err
	}
	if foreign {
		return fmt.Errorf("%w: %s is a mount of something other than volume %s; leaving it alone", ErrInUse, targetPath, id)
	}
	failpoint.Hit("unpublish-after-unmount")
	if err := n.removeTarget(v, targetPath); err != nil {
		return err
	}
	if recorded {
		delete(ns.Targets, targetPath)
		if err := n.putNodeState(ns); err != nil {
			return err
		}
	}
	klog.V(2).InfoS("Volume unpublished", "volumeID", id, "targetPath", targetPath)
	return nil
}

// removeTarget removes an unmounted target if it is what a publish makes.
func (n *Node) removeTarget(v Volume, targetPath string) error {
	removed, reason, err := mounter.RemoveMountPoint(targetPath, v.Kind == KindBlock)
	if err != nil {
		return fmt.Errorf("remove target %s: %w", targetPath, err)
	}
	if !removed {
		klog.InfoS("Target path left in place: hostvol removes only what a publish makes", "volumeID", v.ID, "targetPath", targetPath, "found", reason)
	}
	return nil
}
