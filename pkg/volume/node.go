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
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
)

// nodeState is this node's durable view of one volume's use: where it is
// staged and published. It is written before a mount is made and after it
// is removed, so a restart never forgets a mount it made (single-writer
// enforcement and delete protection survive restarts), and entries whose
// mount has gone (a reboot) are dropped when next looked at.
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

// isMounted reports whether path is a mount point. A missing path is not.
func (m *Manager) isMounted(path string) (bool, error) {
	notMnt, err := m.mounter.IsLikelyNotMountPoint(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return !notMnt, nil
}

// liveTargets drops recorded targets whose mount is gone (after a reboot or
// a crash before the mount was made) and returns the rest.
func (m *Manager) liveTargets(ns *nodeState) (changed bool, err error) {
	for t := range ns.Targets {
		ok, err := m.isMounted(t)
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

// inUse returns where a volume is still published, staged (mounted) or
// attached on this node, or "".
func (m *Manager) inUse(v Volume) (string, error) {
	ns, err := m.getNodeState(v.ID)
	if err != nil {
		return "", err
	}
	changed, err := m.liveTargets(&ns)
	if err != nil {
		return "", err
	}
	if changed {
		if err := m.putNodeState(ns); err != nil {
			return "", err
		}
	}
	var where []string
	for t := range ns.Targets {
		where = append(where, t)
	}
	sort.Strings(where)
	// A staging counts only while something is mounted there: directory
	// volumes stage without a mount, and after a reboot a staging mount is
	// gone; neither must block DeleteVolume forever.
	if ns.StagingPath != "" {
		if ok, err := m.isMounted(ns.StagingPath); err != nil {
			return "", err
		} else if ok {
			where = append(where, ns.StagingPath+" (staged)")
		}
	}
	if v.Kind.HasImage() && m.loop != nil {
		if p := m.pools[v.Pool]; p != nil {
			dev, err := m.findDevice(p, v, ns.Device)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return "", err
			}
			if dev != "" {
				where = append(where, dev+" (attached)")
			}
		}
	}
	return strings.Join(where, ", "), nil
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

// attach returns the loop device of the volume's image, attaching it if it
// is not attached yet: never two devices on one image (two writers on one
// ext4 image corrupt it). The caller holds the volume's lock.
func (m *Manager) attach(p *pool.Pool, v Volume, hint string) (string, error) {
	f, err := p.OpenImage(v.ID)
	if err != nil {
		return "", fmt.Errorf("open image of %s: %w", v.ID, err)
	}
	defer f.Close()
	img, err := loop.ImageOf(f)
	if err != nil {
		return "", err
	}
	dev, err := m.loop.Find(img, hint)
	if err != nil || dev != "" {
		return dev, err
	}
	dev, err = m.loop.Attach(f, loop.AttachOptions{DirectIO: true})
	if err != nil {
		return "", fmt.Errorf("attach image of %s: %w", v.ID, err)
	}
	klog.V(2).InfoS("Image attached", "volumeID", v.ID, "device", dev)
	return dev, nil
}

// mountedDevice reports whether path is a mount point and, if so, whether
// dev is what is mounted there. It reads the mount table, so it is used only
// when path is already a mount point (a repeated stage), never on the
// common path.
func (m *Manager) mountedDevice(path, dev string) (mounted, ours bool, err error) {
	mounted, err = m.isMounted(path)
	if err != nil || !mounted {
		return mounted, false, err
	}
	mps, err := m.mounter.List()
	if err != nil {
		return true, false, err
	}
	for _, mp := range mps {
		if mp.Path == path {
			ours = mp.Device == dev
		}
	}
	return true, ours, nil
}

// onThisNode returns the ready volume if this node may serve it: it lives
// here, or in a shared pool this node has.
func (m *Manager) onThisNode(id string) (Volume, error) {
	v, err := m.Get(id)
	if err != nil {
		return Volume{}, err
	}
	if v.Node != "" && v.Node != m.nodeID {
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
	if err := checkAccessType(v, req.Block); err != nil {
		return err
	}
	if v.Kind == KindLoop && req.FsType != "" && req.FsType != v.FsType {
		return fmt.Errorf("%w: %s has a %s filesystem, %s was asked", ErrInvalid, v.ID, v.FsType, req.FsType)
	}
	ns, err := m.getNodeState(req.ID)
	if err != nil {
		return err
	}
	if ns.StagingPath != "" && ns.StagingPath != req.StagingPath {
		// Staged elsewhere still counts only while that staging lives: a
		// loop volume's mount, a block volume's loop device. After a reboot
		// neither exists and the volume may be staged anywhere.
		live := true
		switch v.Kind {
		case KindLoop:
			if live, err = m.isMounted(ns.StagingPath); err != nil {
				return err
			}
		case KindBlock:
			dev, err := m.findDevice(m.pools[v.Pool], v, ns.Device)
			if err != nil {
				return err
			}
			live = dev != ""
		}
		if live {
			return fmt.Errorf("%w: %s is already staged at %s", ErrAlreadyExists, v.ID, ns.StagingPath)
		}
	}
	if !v.Kind.HasImage() {
		if ns.StagingPath == req.StagingPath {
			return nil // CSI: already staged at this path, reply OK
		}
		ns.StagingPath = req.StagingPath
		return m.putNodeState(ns)
	}

	p := m.pools[v.Pool]
	dev, err := m.attach(p, v, ns.Device)
	if err != nil {
		return err
	}
	if ns.StagingPath != req.StagingPath || ns.Device != dev {
		ns.StagingPath, ns.Device = req.StagingPath, dev
		if err := m.putNodeState(ns); err != nil {
			return err
		}
	}
	if v.NodeExpandPending {
		if err := m.loop.Refresh(dev); err != nil {
			return fmt.Errorf("refresh size of %s: %w", dev, err)
		}
	}
	if v.Kind == KindLoop {
		mounted, ours, err := m.mountedDevice(req.StagingPath, dev)
		if err != nil {
			return err
		}
		if mounted && !ours {
			return fmt.Errorf("%w: something other than %s is mounted at %s", ErrAlreadyExists, v.ID, req.StagingPath)
		}
		grown := false
		if !mounted && v.NodeExpandPending {
			// ext4 grows best unmounted (no CAP_SYS_RESOURCE needed).
			if grown, err = m.fs.GrowOffline(context.Background(), v.FsType, dev); err != nil {
				return fmt.Errorf("grow filesystem of %s: %w", v.ID, err)
			}
		}
		if !mounted {
			if err := os.MkdirAll(req.StagingPath, 0o750); err != nil {
				return fmt.Errorf("create staging path: %w", err)
			}
			opts := append([]string{}, req.MountFlags...)
			// Without systemd-run: ext4 and xfs leave no helper process
			// (as FUSE does) for a systemd scope to keep alive. Mount would
			// also race: mount-utils' Mounter detects systemd on its first
			// Mount and caches the answer without synchronization, and
			// different volumes stage in parallel (go test -race reports
			// it in test/loopvol).
			if err := m.mounter.MountSensitiveWithoutSystemd(dev, req.StagingPath, v.FsType, opts, nil); err != nil {
				return fmt.Errorf("mount %s (%s) at %s: %w", dev, v.ID, req.StagingPath, err)
			}
			klog.V(2).InfoS("Volume staged", "volumeID", v.ID, "device", dev, "stagingPath", req.StagingPath)
		}
		if v.NodeExpandPending && !grown {
			err := m.fs.Grow(context.Background(), v.FsType, dev, req.StagingPath)
			if errors.Is(err, fsutil.ErrOnlineGrowUnavailable) {
				// Already mounted here (ext4 without CAP_SYS_RESOURCE):
				// CSI says an already staged volume "MUST reply 0 OK".
				// The growth stays pending for the next stage that
				// mounts it; NodeExpandVolume says so meanwhile.
				klog.V(2).InfoS("Filesystem growth deferred to the next stage", "volumeID", v.ID, "device", dev, "err", err)
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	if v.NodeExpandPending {
		return m.clearExpandPending(v)
	}
	return nil
}

// Unstage undoes Stage: unmount the staging path and detach the image's
// loop device. A volume that is not staged there succeeds (idempotent).
func (m *Manager) Unstage(id, stagingPath string) error {
	ns, err := m.getNodeState(id)
	if err != nil {
		return err
	}
	if ns.StagingPath != stagingPath {
		if _, err := m.Get(id); err != nil {
			return err
		}
		return nil
	}
	v, err := m.Get(id)
	if err != nil {
		return err
	}
	if v.Kind.HasImage() {
		changed, err := m.liveTargets(&ns)
		if err != nil {
			return err
		}
		if changed {
			if err := m.putNodeState(ns); err != nil {
				return err
			}
		}
		if len(ns.Targets) > 0 {
			return fmt.Errorf("%w: %s is still published; unpublish it before unstaging", ErrInUse, id)
		}
		if v.Kind == KindLoop {
			if mounted, err := m.isMounted(stagingPath); err != nil {
				return err
			} else if mounted {
				if err := m.mounter.Unmount(stagingPath); err != nil {
					return fmt.Errorf("unmount %s: %w", stagingPath, err)
				}
			}
		}
		if p := m.pools[v.Pool]; p != nil {
			dev, err := m.findDevice(p, v, ns.Device)
			if err != nil {
				return err
			}
			if dev != "" {
				if err := m.loop.Detach(dev); err != nil {
					return fmt.Errorf("detach %s: %w", dev, err)
				}
				klog.V(2).InfoS("Image detached", "volumeID", v.ID, "device", dev)
			}
		}
	}
	ns.StagingPath, ns.Device = "", ""
	return m.putNodeState(ns)
}

// Publish bind-mounts a volume at the target path, enforcing its access mode:
// a directory's data, a loop volume's staging mount, or a block volume's
// loop device (onto a file at the target path).
func (m *Manager) Publish(req PublishRequest) error {
	v, err := m.onThisNode(req.ID)
	if err != nil {
		return err
	}
	if err := checkAccessType(v, req.Block); err != nil {
		return err
	}
	if v.ReaderOnly && req.Writer {
		return fmt.Errorf("%w: %s was created read-only; a writer access mode cannot publish it", ErrNotAllowed, req.ID)
	}
	readOnly := req.ReadOnly || v.ReaderOnly || !req.Writer
	want := target{ReadOnly: readOnly, SingleWriter: req.SingleWriter}

	ns, err := m.getNodeState(req.ID)
	if err != nil {
		return err
	}
	if _, err := m.liveTargets(&ns); err != nil {
		return err
	}
	if have, ok := ns.Targets[req.TargetPath]; ok {
		if have != want {
			return fmt.Errorf("%w: %s is already published at %s with read-only=%v", ErrAlreadyExists, req.ID, req.TargetPath, have.ReadOnly)
		}
		return nil // CSI: already published at this path, reply OK
	}
	for t, have := range ns.Targets {
		if req.SingleWriter || have.SingleWriter {
			return fmt.Errorf("%w: %s uses single-writer access (ReadWriteOncePod) and is already published at %s", ErrInUse, req.ID, t)
		}
	}
	source, err := m.publishSource(v, ns)
	if err != nil {
		return err
	}
	// Record first, mount second: a crash in between leaves an entry that
	// liveTargets drops, never a mount this node does not know about.
	ns.Targets[req.TargetPath] = want
	if err := m.putNodeState(ns); err != nil {
		return err
	}
	if err := m.bindMount(source, req.TargetPath, v.Kind == KindBlock, readOnly, req.MountFlags); err != nil {
		delete(ns.Targets, req.TargetPath)
		if perr := m.putNodeState(ns); perr != nil {
			klog.ErrorS(perr, "Could not drop the record of a failed publish", "volumeID", req.ID)
		}
		return err
	}
	klog.V(2).InfoS("Volume published", "volumeID", req.ID, "targetPath", req.TargetPath, "readOnly", readOnly)
	return nil
}

// publishSource is what a publish binds at the target: the data directory,
// the staging mount, or the loop device. Loop and block volumes must be
// staged first.
func (m *Manager) publishSource(v Volume, ns nodeState) (string, error) {
	p := m.pools[v.Pool]
	switch v.Kind {
	case KindLoop:
		if ns.StagingPath == "" {
			return "", fmt.Errorf("%w: %s must be staged before it is published", ErrNotStaged, v.ID)
		}
		mounted, err := m.isMounted(ns.StagingPath)
		if err != nil {
			return "", err
		}
		if !mounted {
			return "", fmt.Errorf("%w: %s is not mounted at its staging path %s (stage it again)", ErrNotStaged, v.ID, ns.StagingPath)
		}
		return ns.StagingPath, nil
	case KindBlock:
		dev, err := m.findDevice(p, v, ns.Device)
		if err != nil {
			return "", err
		}
		if dev == "" {
			return "", fmt.Errorf("%w: %s has no loop device attached (stage it again)", ErrNotStaged, v.ID)
		}
		return dev, nil
	default:
		if ok, err := p.DirExists(v.ID); err != nil || !ok {
			return "", fmt.Errorf("data of %s is missing at %s: %v", v.ID, p.DirPath(v.ID), err)
		}
		return p.DirPath(v.ID), nil
	}
}

func (m *Manager) bindMount(source, targetPath string, block, readOnly bool, flags []string) error {
	if block {
		// A block device is bind-mounted onto a file.
		if err := os.MkdirAll(filepath.Dir(targetPath), 0o750); err != nil {
			return fmt.Errorf("create parent of target %s: %w", targetPath, err)
		}
		f, err := os.OpenFile(targetPath, os.O_CREATE|os.O_RDONLY, 0o640)
		if err != nil {
			return fmt.Errorf("create target %s: %w", targetPath, err)
		}
		f.Close()
	} else if err := os.MkdirAll(targetPath, 0o750); err != nil {
		return fmt.Errorf("create target %s: %w", targetPath, err)
	}
	opts := append([]string{"bind"}, flags...)
	if readOnly {
		opts = append(opts, "ro")
	}
	if err := m.mounter.Mount(source, targetPath, "", opts); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", source, targetPath, err)
	}
	return nil
}

// Unpublish unmounts the target path and removes it. A target that is not
// mounted or does not exist succeeds (CSI: idempotent).
func (m *Manager) Unpublish(id, targetPath string) error {
	ns, err := m.getNodeState(id)
	if err != nil {
		return err
	}
	_, recorded := ns.Targets[targetPath]
	if !recorded {
		// Not a target this node recorded for the volume: only a volume
		// this node knows may be unpublished, and a mount found there is
		// removed only if it shows this volume's data, so unpublishing
		// volume B at volume A's target never unmounts A.
		v, err := m.Get(id)
		if err != nil {
			return err
		}
		if mounted, err := m.isMounted(targetPath); err != nil {
			return err
		} else if mounted {
			source, err := m.publishSource(v, ns)
			if err != nil || !sameFile(targetPath, source) {
				return fmt.Errorf("%w: %s is a mount of something other than volume %s; leaving it alone", ErrInUse, targetPath, id)
			}
		}
	}
	if err := mount.CleanupMountPoint(targetPath, m.mounter, true); err != nil {
		return fmt.Errorf("unmount %s: %w", targetPath, err)
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

// sameFile reports whether two paths name the same inode (a bind mount's
// target and its source directory do).
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}
