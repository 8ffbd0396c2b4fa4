package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
)

// Stage prepares a volume on this node: for a loop volume, attach its image
// and mount the filesystem at the staging path; for a block volume, attach
// it; for a directory, only remember the staging path (each publish binds
// the data directory directly). After a reboot (no loop device, no mount)
// staging again re-attaches and re-mounts from the record.
func (n *Node) Stage(req StageRequest) error {
	return n.locked(req.ID, func() error {
		v, err := n.forCO(req.ID)
		if err != nil {
			return err
		}
		if err := n.checkRequestPath("staging target path", req.StagingPath); err != nil {
			return err
		}
		return n.stage(v, req)
	})
}

// stage is Stage of a volume whose request was checked.
func (n *Node) stage(v Volume, req StageRequest) error {
	if err := checkAccessType(v, req.Block); err != nil {
		return err
	}
	if v.Kind == KindLoop && req.FsType != "" && req.FsType != v.FsType {
		return fmt.Errorf("%w: %s has a %s filesystem, %s was asked", ErrInvalid, v.ID, v.FsType, req.FsType)
	}
	ns, err := n.getNodeState(v.ID)
	if err != nil {
		return err
	}
	if !v.Kind.HasImage() {
		if ns.StagingPath == req.StagingPath {
			return nil // CSI: already staged at this path, reply OK
		}
		if ns.StagingPath != "" {
			return fmt.Errorf("%w: %s is already staged at %s", ErrAlreadyExists, v.ID, ns.StagingPath)
		}
		ns.StagingPath = req.StagingPath
		return n.putNodeState(ns)
	}

	p := n.pools[v.Pool]
	f, err := p.OpenImage(v.ID)
	if err != nil {
		return fmt.Errorf("open image of %s: %w", v.ID, err)
	}
	defer f.Close()
	img, err := loop.ImageOf(f)
	if err != nil {
		return err
	}
	dev, err := n.loop.Find(img, ns.Device)
	if err != nil {
		return err
	}
	done, err := n.stagedAlready(v, ns, req.StagingPath, dev)
	if err != nil {
		return err
	}
	if done {
		return n.finishStage(v, ns, req.StagingPath, dev)
	}
	return n.stageImage(v, ns, req, f, dev)
}

// undoStack holds the steps a half-done operation took; fail undoes them,
// last first, when a later step fails.
type undoStack []func()

func (u *undoStack) push(f func()) { *u = append(*u, f) }

func (u undoStack) fail(err error) error {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
	return err
}

// stageImage stages an image volume that is not staged yet: take the
// shared pool's lease, attach the image (unless dev is already its
// device), mount a loop volume's filesystem, and record it. Every step is
// undone, last first, if a later one fails.
func (n *Node) stageImage(v Volume, ns nodeState, req StageRequest, f *os.File, dev string) error {
	var undo undoStack
	if acquired, err := n.takeLease(v); err != nil {
		return err
	} else if acquired {
		undo.push(func() {
			if err := n.releaseLease(v); err != nil {
				klog.ErrorS(err, "Could not give back the lease of a failed stage", "volumeID", v.ID)
			}
		})
	}
	if dev == "" {
		var err error
		if dev, err = n.loop.Attach(f, loop.AttachOptions{DirectIO: true}); err != nil {
			return undo.fail(fmt.Errorf("attach image of %s: %w", v.ID, err))
		}
		klog.V(2).InfoS("Image attached", "volumeID", v.ID, "device", dev)
		attached := dev
		undo.push(func() {
			if err := n.loop.Detach(attached); err != nil {
				klog.ErrorS(err, "Could not detach the loop device of a failed stage; unstage or start-up detaches it", "volumeID", v.ID, "device", attached)
			}
		})
	}
	failpoint.Hit("stage-after-attach")
	if v.NodeExpandPending {
		if err := n.loop.Refresh(dev); err != nil {
			return undo.fail(fmt.Errorf("refresh size of %s: %w", dev, err))
		}
	}
	grown := false
	if v.Kind == KindLoop {
		var err error
		if grown, err = n.mountStaging(v, req, dev, &undo); err != nil {
			return undo.fail(err)
		}
	}
	// Record last: a record names a staging path only once it holds.
	ns.StagingPath, ns.Device = req.StagingPath, dev
	if err := n.putNodeState(ns); err != nil {
		return undo.fail(err)
	}
	klog.V(2).InfoS("Volume staged", "volumeID", v.ID, "device", dev, "stagingPath", req.StagingPath)
	return n.growStaged(v, dev, req.StagingPath, grown)
}

// mountStaging mounts a loop volume's filesystem at the staging path,
// growing it first (unmounted) when its image grew; grown says whether it
// did. The unmount is pushed on undo.
func (n *Node) mountStaging(v Volume, req StageRequest, dev string, undo *undoStack) (grown bool, err error) {
	if _, err := mounter.MakeMountPoint(req.StagingPath, false); err != nil {
		return false, mountPointErr("staging target path", err)
	}
	if v.NodeExpandPending {
		// ext4 grows best unmounted (no CAP_SYS_RESOURCE needed).
		if grown, err = n.fs.GrowOffline(context.Background(), v.FsType, dev); err != nil {
			return false, fmt.Errorf("grow filesystem of %s: %w", v.ID, err)
		}
	}
	// Without systemd-run: ext4 and xfs leave no helper process (as
	// FUSE does) for a systemd scope to keep alive. Mount would also
	// race: mount-utils' Mounter detects systemd on its first Mount
	// and caches the answer without synchronization, and different
	// volumes stage in parallel.
	opts := append([]string{}, req.MountFlags...)
	if v.FsType == fsutil.XFS {
		// A snapshot, its restores and clones are copies of one XFS
		// filesystem: the same UUID, which XFS refuses to mount twice.
		// The staging rules already keep an image from being mounted
		// twice, which is what the check guards against.
		opts = append(opts, "nouuid")
	}
	if err := n.mounter.MountSensitiveWithoutSystemd(dev, req.StagingPath, v.FsType, opts, nil); err != nil {
		return false, fmt.Errorf("mount %s (%s) at %s: %w", dev, v.ID, req.StagingPath, err)
	}
	undo.push(func() {
		if _, err := n.unmountOwn(v, req.StagingPath, dev, false); err != nil {
			klog.ErrorS(err, "Could not unmount the staging of a failed stage", "volumeID", v.ID, "stagingPath", req.StagingPath)
		}
	})
	failpoint.Hit("stage-after-mount")
	return grown, nil
}

// stagedAlready reports whether the image volume is staged at path
// already (its filesystem mounted there, or for a block volume its device
// attached and recorded there), and refuses a path where something else
// is mounted or a volume staged (and still mounted) elsewhere.
func (n *Node) stagedAlready(v Volume, ns nodeState, path, dev string) (bool, error) {
	if v.Kind == KindBlock {
		if dev != "" && ns.StagingPath == path {
			return true, nil
		}
		if dev != "" && ns.StagingPath != "" {
			return false, fmt.Errorf("%w: %s is already staged at %s", ErrAlreadyExists, v.ID, ns.StagingPath)
		}
		return false, nil
	}
	here, err := n.shows(path, dev)
	if err != nil || here {
		return here, err
	}
	if ns.StagingPath != "" && ns.StagingPath != path {
		if live, err := n.shows(ns.StagingPath, dev); err != nil {
			return false, err
		} else if live {
			return false, fmt.Errorf("%w: %s is already staged at %s", ErrAlreadyExists, v.ID, ns.StagingPath)
		}
	}
	if mounted, err := n.mounter.MountRoot(path); err != nil {
		return false, err
	} else if mounted {
		return false, fmt.Errorf("%w: something other than volume %s is mounted at %s", ErrAlreadyExists, v.ID, path)
	}
	return false, nil
}

// finishStage answers a stage that is done already ("MUST reply 0 OK"):
// the record is brought up to date and pending growth finished.
func (n *Node) finishStage(v Volume, ns nodeState, path, dev string) error {
	if ns.StagingPath != path || ns.Device != dev {
		ns.StagingPath, ns.Device = path, dev
		if err := n.putNodeState(ns); err != nil {
			return err
		}
	}
	if !v.NodeExpandPending {
		return nil
	}
	if err := n.loop.Refresh(dev); err != nil {
		return fmt.Errorf("refresh size of %s: %w", dev, err)
	}
	return n.growStaged(v, dev, path, false)
}

// growStaged finishes an expansion the node had pending, once the volume
// is staged: the mounted filesystem grows online (unless it just grew
// offline), and the record stops saying pending.
func (n *Node) growStaged(v Volume, dev, stagingPath string, grown bool) error {
	if !v.NodeExpandPending {
		return nil
	}
	if v.Kind == KindLoop && !grown {
		err := n.fs.Grow(context.Background(), v.FsType, dev, stagingPath)
		if errors.Is(err, fsutil.ErrOnlineGrowUnavailable) {
			// Already mounted here (ext4 without CAP_SYS_RESOURCE): CSI
			// says an already staged volume "MUST reply 0 OK". The growth
			// stays pending for the next stage that mounts it;
			// NodeExpandVolume says so meanwhile.
			klog.V(2).InfoS("Filesystem growth deferred to the next stage", "volumeID", v.ID, "device", dev, "err", err)
			return nil
		}
		if err != nil {
			return err
		}
	}
	return n.clearExpandPending(v)
}

// maxStacked bounds how many mounts of a volume, one over the other, an
// unmount takes away at one path (a retried mount can stack a second).
const maxStacked = 8

// unmountOwn unmounts every mount of the volume's source at path; a mount
// of anything else stays. recorded says path is a target this node
// recorded for the volume (showsTarget). It reports whether something else
// is mounted there at the end.
func (n *Node) unmountOwn(v Volume, path, source string, recorded bool) (foreign bool, err error) {
	for range maxStacked {
		mounted, err := n.mounter.MountRoot(path)
		if err != nil || !mounted {
			return false, err
		}
		var ours bool
		if recorded {
			ours, err = n.showsTarget(v, path, source)
		} else {
			ours, err = n.shows(path, source)
		}
		if err != nil {
			return false, err
		}
		if !ours {
			return true, nil
		}
		if err := n.mounter.Unmount(path); err != nil {
			return false, fmt.Errorf("unmount %s: %w", path, err)
		}
		klog.V(4).InfoS("Unmounted", "volumeID", v.ID, "path", path)
	}
	return false, fmt.Errorf("unmount %s: still mounted after %d unmounts", path, maxStacked)
}

// Unstage undoes Stage: unmount the staging path and detach the image's
// loop device. It works from what is mounted and attached, not from the
// record alone: after a reboot (nothing mounted or attached) it only
// forgets the staging; after a crash that left the device attached or the
// filesystem mounted without a record, it still unmounts and detaches
// them. A staging path where this volume is not staged succeeds without
// touching anything (CSI: idempotent); another volume mounted there is
// never unmounted. It takes the volume's lock.
func (n *Node) Unstage(id, stagingPath string) error {
	return n.locked(id, func() error { return n.unstage(id, stagingPath) })
}

// unstage is Unstage under the lock.
func (n *Node) unstage(id, stagingPath string) error {
	v, err := n.Get(id)
	if err != nil {
		return err
	}
	ns, err := n.getNodeState(id)
	if err != nil {
		return err
	}
	if !v.Kind.HasImage() {
		if ns.StagingPath != stagingPath {
			return nil
		}
		ns.StagingPath = ""
		return n.putNodeState(ns)
	}
	src, err := n.source(v, ns)
	if err != nil {
		return err
	}
	changed, err := n.liveTargets(v, &ns, src)
	if err != nil {
		return err
	}
	if ns.StagingPath != "" && ns.StagingPath != stagingPath {
		if elsewhere, err := n.unstageStray(v, ns, src, stagingPath, changed); err != nil || elsewhere {
			return err
		}
	}
	if err := stillPublished(v, ns); err != nil {
		return err
	}
	if err := n.release(v, src, stagingPath); err != nil {
		return err
	}
	if ns.StagingPath != "" || ns.Device != "" || changed {
		ns.StagingPath, ns.Device = "", ""
		if err := n.putNodeState(ns); err != nil {
			return err
		}
	}
	klog.V(2).InfoS("Volume unstaged", "volumeID", id, "stagingPath", stagingPath)
	return nil
}

// unstageStray handles an unstage at a path other than the recorded
// staging. When the volume is live at its recorded staging (elsewhere is
// true), nothing of it is staged here, but a stray mount of it here (a
// crashed stage) goes; otherwise the record is stale and unstage goes on.
func (n *Node) unstageStray(v Volume, ns nodeState, src, stagingPath string, changed bool) (elsewhere bool, err error) {
	live, err := n.staged(v, ns, src)
	if err != nil || !live {
		return false, err
	}
	if v.Kind == KindLoop {
		if _, err := n.unmountOwn(v, stagingPath, src, false); err != nil {
			return true, err
		}
	}
	if changed {
		return true, n.putNodeState(ns)
	}
	return true, nil
}

// stillPublished refuses to unstage a volume that is published somewhere.
func stillPublished(v Volume, ns nodeState) error {
	if len(ns.Targets) == 0 {
		return nil
	}
	t := make([]string, 0, len(ns.Targets))
	for p := range ns.Targets {
		t = append(t, p)
	}
	sort.Strings(t)
	return fmt.Errorf("%w: %s is still published at %s; unpublish it before unstaging", ErrInUse, v.ID, strings.Join(t, ", "))
}

// release takes an image volume off this node: unmount a loop volume's
// filesystem at the staging path (only a mount of its own), detach its
// device, give back the shared pool's lease.
func (n *Node) release(v Volume, src, stagingPath string) error {
	if v.Kind == KindLoop && src != "" {
		foreign, err := n.unmountOwn(v, stagingPath, src, false)
		if err != nil {
			return err
		}
		if foreign {
			klog.InfoS("Something other than the volume is mounted at its staging path; leaving it alone", "volumeID", v.ID, "stagingPath", stagingPath)
		}
		failpoint.Hit("unstage-after-unmount")
	}
	if src != "" {
		if err := n.loop.Detach(src); err != nil {
			return fmt.Errorf("detach %s: %w", src, err)
		}
		klog.V(2).InfoS("Image detached", "volumeID", v.ID, "device", src)
		failpoint.Hit("unstage-after-detach")
	}
	return n.releaseLease(v)
}
