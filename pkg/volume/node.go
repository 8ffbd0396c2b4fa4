package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/records"
)

// nodeState is this node's durable view of one volume's use: where it is
// staged and published. It is written before a mount is made and after it
// is removed, so a restart never forgets a mount it made (single-writer
// enforcement and delete protection survive restarts), and entries whose
// mount has gone (a reboot) are dropped when next looked at.
type nodeState struct {
	ID          string            `json:"id"`
	StagingPath string            `json:"stagingPath,omitempty"`
	Targets     map[string]target `json:"targets,omitempty"`
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

// inUse returns where a volume is still staged or published on this node,
// or "".
func (m *Manager) inUse(id string) (string, error) {
	ns, err := m.getNodeState(id)
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
	return strings.Join(where, ", "), nil
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

// Stage records that a volume is staged at path. Directory volumes need no
// node-wide mount: each publish binds the data directory directly.
func (m *Manager) Stage(id, stagingPath string) error {
	if _, err := m.onThisNode(id); err != nil {
		return err
	}
	ns, err := m.getNodeState(id)
	if err != nil {
		return err
	}
	if ns.StagingPath == stagingPath {
		return nil // CSI: already staged at this path, reply OK
	}
	if ns.StagingPath != "" {
		return fmt.Errorf("%w: %s is already staged at %s", ErrAlreadyExists, id, ns.StagingPath)
	}
	ns.StagingPath = stagingPath
	return m.putNodeState(ns)
}

// Unstage forgets a staging. Unknown volumes and paths succeed (idempotent).
func (m *Manager) Unstage(id, stagingPath string) error {
	ns, err := m.getNodeState(id)
	if err != nil {
		return err
	}
	if ns.StagingPath != stagingPath {
		return nil
	}
	ns.StagingPath = ""
	return m.putNodeState(ns)
}

// Publish bind-mounts a volume at the target path, enforcing its access mode.
func (m *Manager) Publish(req PublishRequest) error {
	v, err := m.onThisNode(req.ID)
	if err != nil {
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

	p := m.pools[v.Pool]
	source := p.DirPath(v.ID)
	if ok, err := p.DirExists(v.ID); err != nil || !ok {
		return fmt.Errorf("data of %s is missing at %s: %v", req.ID, source, err)
	}
	// Record first, mount second: a crash in between leaves an entry that
	// liveTargets drops, never a mount this node does not know about.
	ns.Targets[req.TargetPath] = want
	if err := m.putNodeState(ns); err != nil {
		return err
	}
	if err := m.bindMount(source, req.TargetPath, readOnly, req.MountFlags); err != nil {
		delete(ns.Targets, req.TargetPath)
		if perr := m.putNodeState(ns); perr != nil {
			klog.ErrorS(perr, "Could not drop the record of a failed publish", "volumeID", req.ID)
		}
		return err
	}
	klog.V(2).InfoS("Volume published", "volumeID", req.ID, "targetPath", req.TargetPath, "readOnly", readOnly)
	return nil
}

func (m *Manager) bindMount(source, targetPath string, readOnly bool, flags []string) error {
	if err := os.MkdirAll(targetPath, 0o750); err != nil {
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
			p := m.pools[v.Pool]
			if p == nil || !sameFile(targetPath, p.DirPath(v.ID)) {
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

// Stats measures a volume that is published or staged at path.
func (m *Manager) Stats(id, path string) (Stats, error) {
	v, err := m.onThisNode(id)
	if err != nil {
		return Stats{}, err
	}
	ns, err := m.getNodeState(id)
	if err != nil {
		return Stats{}, err
	}
	clean := filepath.Clean(path)
	if _, ok := ns.Targets[clean]; !ok && clean != ns.StagingPath {
		return Stats{}, fmt.Errorf("%w: %s is not published or staged at %s", ErrNotFound, id, path)
	}
	if _, err := os.Lstat(clean); err != nil {
		return Stats{}, fmt.Errorf("%w: %s: %v", ErrNotFound, path, err)
	}
	fs, err := m.pools[v.Pool].DirStats(v.ID)
	if err != nil {
		return Stats{}, fmt.Errorf("stat data of %s: %w", id, err)
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
