package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
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

func (m *Manager) getNodeState(id string) (nodeState, error) {
	var ns nodeState
	err := m.nodeStates.Get(id, &ns)
	if errors.Is(err, records.ErrNotFound) {
		return nodeState{ID: id, Targets: map[string]target{}}, nil
	}
	if ns.Targets == nil {
		ns.Targets = map[string]target{}
	}
	return ns, err
}

func (m *Manager) putNodeState(ns nodeState) error {
	if ns.StagingPath == "" && len(ns.Targets) == 0 {
		return m.nodeStates.Delete(ns.ID)
	}
	return m.nodeStates.Put(ns.ID, ns)
}

// shows reports whether the mount at path is of source ("" shows nothing).
func (m *Manager) shows(path, source string) (bool, error) {
	if source == "" {
		return false, nil
	}
	return m.mounter.Shows(path, source)
}

// source is what proves that a mount is this volume's: its data directory,
// or the loop device its image is attached to; "" when its image is not
// attached (then nothing mounted anywhere can be this volume's).
func (m *Manager) source(v Volume, ns nodeState) (string, error) {
	p := m.pools[v.Pool]
	if p == nil {
		return "", nil
	}
	if !v.Kind.HasImage() {
		return p.DirPath(v.ID), nil
	}
	if m.loop == nil {
		return "", nil
	}
	dev, err := m.findDevice(p, v, ns.Device)
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
func (m *Manager) showsTarget(v Volume, path, source string) (bool, error) {
	ok, err := m.shows(path, source)
	if ok || err != nil || v.Kind.HasImage() {
		return ok, err
	}
	if p := m.pools[v.Pool]; p != nil {
		if exists, err := p.DirExists(v.ID); err != nil || exists {
			return false, err
		}
	}
	return m.mounter.ShowsDeletedDir(path)
}

// liveTargets drops recorded targets whose mount is gone or no longer
// shows the volume (after a reboot, or a crash before the mount was made).
func (m *Manager) liveTargets(v Volume, ns *nodeState, source string) (changed bool, err error) {
	for t := range ns.Targets {
		ok, err := m.showsTarget(v, t, source)
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
func (m *Manager) staged(v Volume, ns nodeState, source string) (bool, error) {
	if ns.StagingPath == "" {
		return false, nil
	}
	switch v.Kind {
	case KindLoop:
		return m.shows(ns.StagingPath, source)
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
func (m *Manager) inUse(v Volume) (string, error) {
	ns, err := m.getNodeState(v.ID)
	if err != nil {
		return "", err
	}
	src, err := m.source(v, ns)
	if err != nil {
		return "", err
	}
	changed, err := m.liveTargets(v, &ns, src)
	if err != nil {
		return "", err
	}
	var where []string
	for t := range ns.Targets {
		where = append(where, t)
	}
	sort.Strings(where)
	if v.Kind.HasImage() {
		live, err := m.staged(v, ns, src)
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
		holder, err := m.leaseHolder(v)
		if err != nil {
			return "", err
		}
		if holder != "" && holder != m.nodeID {
			where = append(where, fmt.Sprintf("node %q (its lease %s)", holder, m.pools[v.Pool].LeasePath(v.ID)))
		} else if src != "" && !live && len(ns.Targets) == 0 {
			if err := m.detachLeftover(v, src); errors.Is(err, loop.ErrBusy) {
				where = append(where, src+" (attached, and open elsewhere)")
			} else if err != nil {
				return "", err
			}
		}
	}
	if changed {
		if err := m.putNodeState(ns); err != nil {
			return "", err
		}
	}
	return strings.Join(where, ", "), nil
}

// detachLeftover detaches a loop device attached to the volume's image
// that no staging or publish holds, and gives back a shared pool's lease.
func (m *Manager) detachLeftover(v Volume, dev string) error {
	if err := m.loop.Detach(dev); err != nil {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	klog.InfoS("Detached a loop device that no staging of its volume holds", "volumeID", v.ID, "device", dev)
	return m.releaseLease(v)
}

// findDevice returns the loop device the volume's image is attached to, or
// "". An image that does not exist is an error wrapping os.ErrNotExist.
func (m *Manager) findDevice(p *pool.Pool, v Volume, hint string) (string, error) {
	f, err := p.OpenImage(v.ID)
	if err != nil {
		return "", err
	}
	defer f.Close()
	img, err := loop.ImageOf(f)
	if err != nil {
		return "", err
	}
	return m.loop.Find(img, hint)
}

// onThisNode returns the ready volume if this node may serve it: it lives
// here, or in a shared pool this node has.
func (m *Manager) onThisNode(id string) (Volume, error) {
	v, err := m.Get(id)
	if err != nil {
		return Volume{}, err
	}
	if m.otherNode(v) {
		return Volume{}, fmt.Errorf("%w: %s lives on node %q, not %q", ErrNotFound, id, v.Node, m.nodeID)
	}
	if m.pools[v.Pool] == nil {
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

// notInline refuses the CO's own stage and publish of an inline volume: it
// belongs to the pod whose publish made it (ephemeral.go).
func notInline(v Volume) error {
	if v.Ephemeral {
		return fmt.Errorf("%w: %s is the inline volume of pod %s/%s; only that pod's publish uses it", ErrNotAllowed, v.ID, v.PVCNamespace, v.PVCName)
	}
	return nil
}

// Stage prepares a volume on this node: for a loop volume, attach its image
// and mount the filesystem at the staging path; for a block volume, attach
// it; for a directory, only remember the staging path (each publish binds
// the data directory directly). After a reboot (no loop device, no mount)
// staging again re-attaches and re-mounts from the record.
func (m *Manager) Stage(req StageRequest) error {
	v, err := m.onThisNode(req.ID)
	if err != nil {
		return err
	}
	if err := notInline(v); err != nil {
		return err
	}
	if err := m.checkRequestPath("staging target path", req.StagingPath); err != nil {
		return err
	}
	return m.stage(v, req)
}

// stage is Stage of a volume whose request was checked.
func (m *Manager) stage(v Volume, req StageRequest) error {
	if err := checkAccessType(v, req.Block); err != nil {
		return err
	}
	if v.Kind == KindLoop && req.FsType != "" && req.FsType != v.FsType {
		return fmt.Errorf("%w: %s has a %s filesystem, %s was asked", ErrInvalid, v.ID, v.FsType, req.FsType)
	}
	ns, err := m.getNodeState(v.ID)
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
		return m.putNodeState(ns)
	}

	p := m.pools[v.Pool]
	f, err := p.OpenImage(v.ID)
	if err != nil {
		return fmt.Errorf("open image of %s: %w", v.ID, err)
	}
	defer f.Close()
	img, err := loop.ImageOf(f)
	if err != nil {
		return err
	}
	dev, err := m.loop.Find(img, ns.Device)
	if err != nil {
		return err
	}
	done, err := m.stagedAlready(v, ns, req.StagingPath, dev)
	if err != nil {
		return err
	}
	if done {
		return m.finishStage(v, ns, req.StagingPath, dev)
	}

	// From here on every step is undone, last first, if a later one fails.
	var undo []func()
	fail := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}
	if acquired, err := m.takeLease(v); err != nil {
		return err
	} else if acquired {
		undo = append(undo, func() {
			if err := m.releaseLease(v); err != nil {
				klog.ErrorS(err, "Could not give back the lease of a failed stage", "volumeID", v.ID)
			}
		})
	}
	if dev == "" {
		if dev, err = m.loop.Attach(f, loop.AttachOptions{DirectIO: true}); err != nil {
			return fail(fmt.Errorf("attach image of %s: %w", v.ID, err))
		}
		klog.V(2).InfoS("Image attached", "volumeID", v.ID, "device", dev)
		attached := dev
		undo = append(undo, func() {
			if err := m.loop.Detach(attached); err != nil {
				klog.ErrorS(err, "Could not detach the loop device of a failed stage; unstage or start-up detaches it", "volumeID", v.ID, "device", attached)
			}
		})
	}
	failpoint.Hit("stage-after-attach")
	if v.NodeExpandPending {
		if err := m.loop.Refresh(dev); err != nil {
			return fail(fmt.Errorf("refresh size of %s: %w", dev, err))
		}
	}
	grown := false
	if v.Kind == KindLoop {
		if _, err := mounter.MakeMountPoint(req.StagingPath, false); err != nil {
			return fail(mountPointErr("staging target path", err))
		}
		if v.NodeExpandPending {
			// ext4 grows best unmounted (no CAP_SYS_RESOURCE needed).
			if grown, err = m.fs.GrowOffline(context.Background(), v.FsType, dev); err != nil {
				return fail(fmt.Errorf("grow filesystem of %s: %w", v.ID, err))
			}
		}
		// Without systemd-run: ext4 and xfs leave no helper process (as
		// FUSE does) for a systemd scope to keep alive. Mount would also
		// race: mount-utils' Mounter detects systemd on its first Mount
		// and caches the answer without synchronization, and different
		// volumes stage in parallel.
		if err := m.mounter.MountSensitiveWithoutSystemd(dev, req.StagingPath, v.FsType, append([]string{}, req.MountFlags...), nil); err != nil {
			return fail(fmt.Errorf("mount %s (%s) at %s: %w", dev, v.ID, req.StagingPath, err))
		}
		undo = append(undo, func() {
			if _, err := m.unmountOwn(v, req.StagingPath, dev, false); err != nil {
				klog.ErrorS(err, "Could not unmount the staging of a failed stage", "volumeID", v.ID, "stagingPath", req.StagingPath)
			}
		})
		failpoint.Hit("stage-after-mount")
	}
	// Record last: a record names a staging path only once it holds.
	ns.StagingPath, ns.Device = req.StagingPath, dev
	if err := m.putNodeState(ns); err != nil {
		return fail(err)
	}
	klog.V(2).InfoS("Volume staged", "volumeID", v.ID, "device", dev, "stagingPath", req.StagingPath)
	return m.growStaged(v, dev, req.StagingPath, grown)
}

// stagedAlready reports whether the image volume is staged at path
// already (its filesystem mounted there, or for a block volume its device
// attached and recorded there), and refuses a path where something else
// is mounted or a volume staged (and still mounted) elsewhere.
func (m *Manager) stagedAlready(v Volume, ns nodeState, path, dev string) (bool, error) {
	if v.Kind == KindBlock {
		if dev != "" && ns.StagingPath == path {
			return true, nil
		}
		if dev != "" && ns.StagingPath != "" {
			return false, fmt.Errorf("%w: %s is already staged at %s", ErrAlreadyExists, v.ID, ns.StagingPath)
		}
		return false, nil
	}
	here, err := m.shows(path, dev)
	if err != nil || here {
		return here, err
	}
	if ns.StagingPath != "" && ns.StagingPath != path {
		if live, err := m.shows(ns.StagingPath, dev); err != nil {
			return false, err
		} else if live {
			return false, fmt.Errorf("%w: %s is already staged at %s", ErrAlreadyExists, v.ID, ns.StagingPath)
		}
	}
	if mounted, err := m.mounter.MountRoot(path); err != nil {
		return false, err
	} else if mounted {
		return false, fmt.Errorf("%w: something other than volume %s is mounted at %s", ErrAlreadyExists, v.ID, path)
	}
	return false, nil
}

// finishStage answers a stage that is done already ("MUST reply 0 OK"):
// the record is brought up to date and pending growth finished.
func (m *Manager) finishStage(v Volume, ns nodeState, path, dev string) error {
	if ns.StagingPath != path || ns.Device != dev {
		ns.StagingPath, ns.Device = path, dev
		if err := m.putNodeState(ns); err != nil {
			return err
		}
	}
	if !v.NodeExpandPending {
		return nil
	}
	if err := m.loop.Refresh(dev); err != nil {
		return fmt.Errorf("refresh size of %s: %w", dev, err)
	}
	return m.growStaged(v, dev, path, false)
}

// growStaged finishes an expansion the node had pending, once the volume
// is staged: the mounted filesystem grows online (unless it just grew
// offline), and the record stops saying pending.
func (m *Manager) growStaged(v Volume, dev, stagingPath string, grown bool) error {
	if !v.NodeExpandPending {
		return nil
	}
	if v.Kind == KindLoop && !grown {
		err := m.fs.Grow(context.Background(), v.FsType, dev, stagingPath)
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
	return m.clearExpandPending(v)
}

// maxStacked bounds how many mounts of a volume, one over the other, an
// unmount takes away at one path (a retried mount can stack a second).
const maxStacked = 8

// unmountOwn unmounts every mount of the volume's source at path; a mount
// of anything else stays. recorded says path is a target this node
// recorded for the volume (showsTarget). It reports whether something else
// is mounted there at the end.
func (m *Manager) unmountOwn(v Volume, path, source string, recorded bool) (foreign bool, err error) {
	for range maxStacked {
		mounted, err := m.mounter.MountRoot(path)
		if err != nil || !mounted {
			return false, err
		}
		var ours bool
		if recorded {
			ours, err = m.showsTarget(v, path, source)
		} else {
			ours, err = m.shows(path, source)
		}
		if err != nil {
			return false, err
		}
		if !ours {
			return true, nil
		}
		if err := m.mounter.Unmount(path); err != nil {
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
// never unmounted.
func (m *Manager) Unstage(id, stagingPath string) error {
	v, err := m.Get(id)
	if err != nil {
		return err
	}
	ns, err := m.getNodeState(id)
	if err != nil {
		return err
	}
	if !v.Kind.HasImage() {
		if ns.StagingPath != stagingPath {
			return nil
		}
		ns.StagingPath = ""
		return m.putNodeState(ns)
	}
	src, err := m.source(v, ns)
	if err != nil {
		return err
	}
	changed, err := m.liveTargets(v, &ns, src)
	if err != nil {
		return err
	}
	if ns.StagingPath != "" && ns.StagingPath != stagingPath {
		live, err := m.staged(v, ns, src)
		if err != nil {
			return err
		}
		if live {
			// Staged and mounted elsewhere: nothing of it is staged here,
			// but a stray mount of it here (a crashed stage) goes.
			if v.Kind == KindLoop {
				if _, err := m.unmountOwn(v, stagingPath, src, false); err != nil {
					return err
				}
			}
			if changed {
				return m.putNodeState(ns)
			}
			return nil
		}
	}
	if len(ns.Targets) > 0 {
		t := make([]string, 0, len(ns.Targets))
		for p := range ns.Targets {
			t = append(t, p)
		}
		sort.Strings(t)
		return fmt.Errorf("%w: %s is still published at %s; unpublish it before unstaging", ErrInUse, id, strings.Join(t, ", "))
	}
	if v.Kind == KindLoop && src != "" {
		foreign, err := m.unmountOwn(v, stagingPath, src, false)
		if err != nil {
			return err
		}
		if foreign {
			klog.InfoS("Something other than the volume is mounted at its staging path; leaving it alone", "volumeID", id, "stagingPath", stagingPath)
		}
		failpoint.Hit("unstage-after-unmount")
	}
	if src != "" {
		if err := m.loop.Detach(src); err != nil {
			return fmt.Errorf("detach %s: %w", src, err)
		}
		klog.V(2).InfoS("Image detached", "volumeID", id, "device", src)
		failpoint.Hit("unstage-after-detach")
	}
	if err := m.releaseLease(v); err != nil {
		return err
	}
	if ns.StagingPath != "" || ns.Device != "" || changed {
		ns.StagingPath, ns.Device = "", ""
		if err := m.putNodeState(ns); err != nil {
			return err
		}
	}
	klog.V(2).InfoS("Volume unstaged", "volumeID", id, "stagingPath", stagingPath)
	return nil
}

// Publish bind-mounts a volume at the target path, enforcing its access mode:
// a directory's data, a loop volume's staging mount, or a block volume's
// loop device (onto a file at the target path).
func (m *Manager) Publish(req PublishRequest) error {
	v, err := m.onThisNode(req.ID)
	if err != nil {
		return err
	}
	if err := notInline(v); err != nil {
		return err
	}
	return m.publish(v, req)
}

// publish is Publish of a volume the caller may publish.
func (m *Manager) publish(v Volume, req PublishRequest) error {
	if err := checkAccessType(v, req.Block); err != nil {
		return err
	}
	if v.ReaderOnly && req.Writer {
		return fmt.Errorf("%w: %s was created read-only; a writer access mode cannot publish it", ErrNotAllowed, req.ID)
	}
	if err := m.checkRequestPath("target path", req.TargetPath); err != nil {
		return err
	}
	readOnly := req.ReadOnly || v.ReaderOnly || !req.Writer
	want := target{ReadOnly: readOnly, SingleWriter: req.SingleWriter || v.SingleWriter}

	ns, err := m.getNodeState(req.ID)
	if err != nil {
		return err
	}
	src, err := m.source(v, ns)
	if err != nil {
		return err
	}
	if _, err := m.liveTargets(v, &ns, src); err != nil {
		return err
	}
	if have, ok := ns.Targets[req.TargetPath]; ok {
		if have != want {
			return fmt.Errorf("%w: %s is already published at %s with read-only=%v", ErrAlreadyExists, req.ID, req.TargetPath, have.ReadOnly)
		}
		return nil // CSI: already published at this path, reply OK
	}
	if mounted, err := m.mounter.MountRoot(req.TargetPath); err != nil {
		return err
	} else if mounted {
		return fmt.Errorf("%w: something is mounted at %s already, and it is not a publish of %s this node made", ErrAlreadyExists, req.TargetPath, req.ID)
	}
	for t, have := range ns.Targets {
		if want.SingleWriter || have.SingleWriter {
			return fmt.Errorf("%w: %s uses single-writer access (ReadWriteOncePod) and is already published at %s", ErrInUse, req.ID, t)
		}
	}
	bind, err := m.publishSource(v, ns, src, req.StagingPath)
	if err != nil {
		return err
	}
	// Record first, mount second: a crash in between leaves an entry that
	// liveTargets drops, never a mount this node does not know about.
	ns.Targets[req.TargetPath] = want
	if err := m.putNodeState(ns); err != nil {
		return err
	}
	undo := func() {
		delete(ns.Targets, req.TargetPath)
		if err := m.putNodeState(ns); err != nil {
			klog.ErrorS(err, "Could not drop the record of a failed publish", "volumeID", req.ID)
		}
	}
	mp, err := mounter.MakeMountPoint(req.TargetPath, v.Kind == KindBlock)
	if err != nil {
		undo()
		return mountPointErr("target path", err)
	}
	opts := append([]string{"bind"}, req.MountFlags...)
	if readOnly {
		opts = append(opts, "ro")
	}
	if err := m.mounter.Mount(bind, req.TargetPath, "", opts); err != nil {
		if mp.Created {
			if _, _, rerr := mounter.RemoveMountPoint(req.TargetPath, v.Kind == KindBlock); rerr != nil {
				klog.ErrorS(rerr, "Could not remove the target of a failed publish", "volumeID", req.ID, "targetPath", req.TargetPath)
			}
		}
		undo()
		return fmt.Errorf("bind mount %s at %s: %w", bind, req.TargetPath, err)
	}
	failpoint.Hit("publish-after-mount")
	klog.V(2).InfoS("Volume published", "volumeID", req.ID, "targetPath", req.TargetPath, "readOnly", readOnly)
	return nil
}

// publishSource is what a publish binds at the target: the data directory,
// the staging mount, or the loop device. Loop and block volumes must be
// staged first (at stagingPath, when the CO names one).
func (m *Manager) publishSource(v Volume, ns nodeState, src, stagingPath string) (string, error) {
	p := m.pools[v.Pool]
	switch v.Kind {
	case KindLoop:
		if ns.StagingPath == "" {
			return "", fmt.Errorf("%w: %s must be staged before it is published", ErrNotStaged, v.ID)
		}
		if stagingPath != "" && stagingPath != ns.StagingPath {
			return "", fmt.Errorf("%w: %s is staged at %s, not at %s", ErrNotStaged, v.ID, ns.StagingPath, stagingPath)
		}
		live, err := m.shows(ns.StagingPath, src)
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
// that is gone (CSI: idempotent).
func (m *Manager) Unpublish(id, targetPath string) error {
	v, err := m.Get(id)
	if err != nil {
		return err
	}
	ns, err := m.getNodeState(id)
	if err != nil {
		return err
	}
	src, err := m.source(v, ns)
	if err != nil {
		return err
	}
	_, recorded := ns.Targets[targetPath]
	foreign, err := m.unmountOwn(v, targetPath, src, recorded)
	if err != nil {
		return err
	}
	if foreign {
		return fmt.Errorf("%w: %s is a mount of something other than volume %s; leaving it alone", ErrInUse, targetPath, id)
	}
	failpoint.Hit("unpublish-after-unmount")
	if err := m.removeTarget(v, targetPath); err != nil {
		return err
	}
	if recorded {
		delete(ns.Targets, targetPath)
		if err := m.putNodeState(ns); err != nil {
			return err
		}
	}
	klog.V(2).InfoS("Volume unpublished", "volumeID", id, "targetPath", targetPath)
	return nil
}

// removeTarget removes an unmounted target if it is what a publish makes.
func (m *Manager) removeTarget(v Volume, targetPath string) error {
	removed, reason, err := mounter.RemoveMountPoint(targetPath, v.Kind == KindBlock)
	if err != nil {
		return fmt.Errorf("remove target %s: %w", targetPath, err)
	}
	if !removed {
		klog.InfoS("Target path left in place: hostvol removes only what a publish makes", "volumeID", v.ID, "targetPath", targetPath, "found", reason)
	}
	return nil
}

// mountPointErr describes a target or staging path that could not be made
// ready; a symlink or a path of the wrong type makes the request invalid.
func mountPointErr(what string, err error) error {
	if errors.Is(err, mounter.ErrSymlink) || errors.Is(err, mounter.ErrWrongType) {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// protectedPath is a directory no request may mount over, into or above.
type protectedPath struct {
	real, what string
}

// protect adds dir (as it is resolved now) to the protected paths.
func (m *Manager) protect(dir, what string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("resolve %s %s: %w", what, dir, err)
	}
	m.protected = append(m.protected, protectedPath{real: real, what: what})
	return nil
}

// checkRequestPath refuses a target or staging path that is, contains or
// lies inside a pool or the state directory (with symlinks of its existing
// ancestors resolved): a mount there would hide or expose hostvol's own
// data.
func (m *Manager) checkRequestPath(what, path string) error {
	real, err := mounter.ResolvePath(path)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrInvalid, what, untrusted.Quote(path), err)
	}
	for _, p := range m.protected {
		switch {
		case mounter.Within(real, p.real):
			return fmt.Errorf("%w: %s %s is inside %s (%s); hostvol never mounts into its own directories", ErrInvalid, what, untrusted.Quote(path), p.what, p.real)
		case mounter.Within(p.real, real):
			return fmt.Errorf("%w: %s %s contains %s (%s); a mount there would hide it", ErrInvalid, what, untrusted.Quote(path), p.what, p.real)
		}
	}
	return nil
}

// Stats measures a volume that is published or staged at path: a limited
// directory's own usage against its limit (quota accounting), the
// filesystem of an unlimited directory's pool or of a loop volume, the size
// of a block volume.
func (m *Manager) Stats(id, path string) (Stats, error) {
	v, ns, clean, err := m.usedAt(id, path)
	if err != nil {
		return Stats{}, err
	}
	p := m.pools[v.Pool]
	if v.Kind != KindLoop {
		// A directory or image that vanished is NOT_FOUND, saying so. A
		// loop volume is measured on its mounted filesystem, which lives
		// on while its loop device holds the image.
		if err := dataPresent(p, v); err != nil {
			return Stats{}, err
		}
	}
	var fs pool.FSStats
	switch v.Kind {
	case KindBlock:
		size, _, err := p.ImageUsage(v.ID)
		if err != nil {
			return Stats{}, err
		}
		if dev, err := m.findDevice(p, v, ns.Device); err == nil && dev != "" {
			if s, err := m.loop.Size(dev); err == nil {
				size = s
			}
		}
		return Stats{TotalBytes: size}, nil
	case KindLoop:
		// Measure only the volume's own filesystem: after a reboot, or an
		// unmount by hand, the path is a plain directory of another one.
		src, err := m.source(v, ns)
		if err != nil {
			return Stats{}, err
		}
		var mounted bool
		if src != "" {
			mounted, err = m.shows(clean, src)
		} else if dataProblem(p, v) != "" {
			// Its image is gone, so nothing identifies the filesystem; one
			// still mounted at the recorded path outlives the image.
			mounted, err = m.mounter.MountRoot(clean)
		}
		if err != nil {
			return Stats{}, err
		}
		if !mounted {
			return Stats{}, fmt.Errorf("%w: volume %s is not mounted at %s any more (the node rebooted, or it was unmounted); it is measured once staged and published again", ErrNotFound, id, untrusted.Quote(path))
		}
		var st unix.Statfs_t
		if err := unix.Statfs(clean, &st); err != nil {
			return Stats{}, fmt.Errorf("statfs %s: %w", clean, err)
		}
		fs = pool.FSStatsOf(&st)
	default:
		if st, ok, err := m.limitedDirStats(p, v); ok {
			return st, err
		}
		if fs, err = p.DirStats(v.ID); err != nil {
			return Stats{}, fmt.Errorf("stat data of %s: %w", id, err)
		}
	}
	return Stats{
		TotalBytes:     fs.TotalBytes,
		AvailableBytes: fs.AvailableBytes,
		UsedBytes:      fs.TotalBytes - fs.FreeBytes,
		TotalInodes:    fs.TotalInodes,
		FreeInodes:     fs.FreeInodes,
		UsedInodes:     fs.TotalInodes - fs.FreeInodes,
	}, nil
}

// usedAt checks that a volume of this node is published or staged at path
// (and that path exists) and returns it with its node state and the clean
// path. Any other path is NOT_FOUND: stats and expansion never touch paths
// hostvol did not mount.
func (m *Manager) usedAt(id, path string) (Volume, nodeState, string, error) {
	v, err := m.onThisNode(id)
	if err != nil {
		return Volume{}, nodeState{}, "", err
	}
	ns, err := m.getNodeState(id)
	if err != nil {
		return Volume{}, nodeState{}, "", err
	}
	clean := filepath.Clean(path)
	if _, ok := ns.Targets[clean]; !ok && clean != ns.StagingPath {
		return Volume{}, nodeState{}, "", fmt.Errorf("%w: %s is not published or staged at %s", ErrNotFound, id, path)
	}
	if _, err := os.Lstat(clean); err != nil {
		return Volume{}, nodeState{}, "", fmt.Errorf("%w: %s: %v", ErrNotFound, path, err)
	}
	return v, ns, clean, nil
}
