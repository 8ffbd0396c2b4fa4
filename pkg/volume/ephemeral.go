package volume

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// CSI inline (ephemeral) volumes live exactly as long as the pod that
// declares them. The kubelet never calls CreateVolume or NodeStageVolume for
// them: its first NodePublishVolume, with a handle it made up
// ("csi-<sha256>") and the pod's volumeAttributes, creates the volume on
// this node and publishes it; NodeUnpublishVolume with the same handle
// unpublishes and deletes it. Everything else is an ordinary volume: a
// record (flagged Ephemeral), capacity promises, quotas, crash recovery.
// EphemeralName is the volume name behind an inline volume's handle. The
// prefix keeps it apart from the names external-provisioner gives
// ("pvc-<uid>"); a CreateVolume that picked the same name anyway gets a
// volume that is not Ephemeral, which neither side then mistakes for the
// other (compatible refuses the mix).
func EphemeralName(handle string) string { return ephemeralPrefix + handle }

const ephemeralPrefix = "ephemeral/"

// EphemeralID returns the volume ID of the inline volume with this handle
// and whether such a volume exists on this node.
func (n *Node) EphemeralID(handle string) (string, bool) {
	id := volumeid.FromName(EphemeralName(handle))
	v, err := n.Get(id)
	return id, err == nil && v.Ephemeral && v.Name == EphemeralName(handle)
}

// EphemeralRequest is a NodePublishVolume of an inline volume: the volume to
// make (Create.Name is EphemeralName of the handle) and how to publish it.
type EphemeralRequest struct {
	Create  CreateRequest
	Publish PublishRequest
	// MountFlags are options for mounting a loop volume's filesystem.
	MountFlags []string
}

// PublishEphemeral creates (or finds, on a retry) an inline volume, stages
// it privately if it is a loop volume, and publishes it at the target. If
// any step fails, what it made is removed again unless the volume is
// published elsewhere, so a pod that never starts leaves nothing behind.
// It takes the volume's lock.
//
// Pod authors choose an inline volume's attributes, so what they may ask
// is bounded here, whatever the driver let through: only hard-sized
// volumes (a loop volume, or a directory limited by its pool: sizeLimit is
// always required), only node-local pools, at most InlineMaxBytes each and
// InlineMaxTotalBytes for all of this node's inline volumes together.
func (n *Node) PublishEphemeral(req EphemeralRequest) error {
	return n.locked(volumeid.FromName(req.Create.Name), func() error { return n.publishEphemeral(req) })
}

// publishEphemeral is PublishEphemeral under the lock.
func (n *Node) publishEphemeral(req EphemeralRequest) (err error) {
	req.Create.Ephemeral = true
	if req.Create.Kind == KindBlock {
		return fmt.Errorf("%w: inline volumes are filesystems; raw block needs a PersistentVolumeClaim", ErrInvalid)
	}
	if req.Create.Kind == KindDir {
		req.Create.SizeLimit = SizeLimitRequired
	}
	p := n.pools[req.Create.Pool]
	if p == nil {
		return fmt.Errorf("%w: %q", ErrPoolUnavailable, req.Create.Pool)
	}
	if p.Shared {
		return fmt.Errorf("%w: pool %q is shared; inline volumes live in node-local pools only", ErrNotAllowed, p.Name)
	}
	id := volumeid.FromName(req.Create.Name)
	if _, gerr := n.Get(id); errors.Is(gerr, ErrNotFound) {
		// A new inline volume (a retried publish finds its volume made).
		if err := n.reserveInline(id, req.Create); err != nil {
			return err
		}
		defer func() {
			if _, gerr := n.Get(id); err != nil && gerr != nil {
				n.inline.release(id) // not made, or removed again
			}
		}()
	}
	v, err := n.ctrl.create(req.Create)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if rerr := n.dropEphemeral(v.ID); rerr != nil {
				klog.ErrorS(rerr, "Could not remove an inline volume whose publish failed; NodeUnpublishVolume removes it", "volumeID", v.ID)
			}
		}
	}()
	failpoint.Hit("inline-after-create")
	pub := req.Publish
	pub.ID = v.ID
	direct := false
	if v.Kind == KindLoop {
		if direct, err = n.mountInlineAtTarget(v, pub, req.MountFlags); err != nil {
			return err
		}
	}
	if !direct {
		if err := n.publish(v, pub); err != nil {
			return err
		}
	}
	klog.V(2).InfoS("Inline volume published", "volumeID", v.ID, "name", v.Name, "pod", klog.KRef(v.PVCNamespace, v.PVCName), "targetPath", pub.TargetPath)
	return nil
}

// mountInlineAtTarget mounts an inline loop volume's filesystem directly
// at the pod's target, recorded as the volume's staging: the kubelet never
// stages inline volumes, and a staging mount of hostvol's own would live in
// hostvol's container's private mount namespace (the state directory has no
// mount propagation) and vanish when the container restarts, while the
// target, in the kubelet's directory, is shared with the host. It reports
// false, having done nothing, when the volume is already mounted at another
// target: a second target is then a bind mount of the first (publish).
func (n *Node) mountInlineAtTarget(v Volume, pub PublishRequest, fsFlags []string) (bool, error) {
	ns, src, err := n.stateOf(v)
	if err != nil {
		return false, err
	}
	if live, err := n.staged(v, ns, src); err != nil {
		return false, err
	} else if live && ns.StagingPath != pub.TargetPath {
		return false, nil
	}
	if err := n.checkRequestPath("target path", pub.TargetPath); err != nil {
		return false, err
	}
	flags := append([]string{}, fsFlags...)
	if pub.ReadOnly || !pub.Writer {
		flags = append(flags, "ro")
	}
	return true, n.stage(v, StageRequest{ID: v.ID, StagingPath: pub.TargetPath, FsType: v.FsType, MountFlags: flags})
}

// reserveInline checks a new inline volume's size against the node's caps
// and counts it in.
func (n *Node) reserveInline(id string, req CreateRequest) error {
	if n.inline.maxBytes <= 0 {
		return fmt.Errorf("%w: inline volumes are turned off on node %q", ErrNotAllowed, n.nodeID)
	}
	size, err := chooseSize(req)
	if err != nil {
		return err
	}
	if size > n.inline.maxBytes {
		return fmt.Errorf("%w: the inline volume needs %s (a %s volume of at least the size asked), more than the %s one inline volume may have on node %q",
			ErrOutOfRange, fmtBytes(size), kindName(req.Kind, req.FsType), fmtBytes(n.inline.maxBytes), n.nodeID)
	}
	if used, ok := n.inline.reserve(id, size); !ok {
		return fmt.Errorf("%w: inline volumes on node %q may hold %s together; %s are in use, %s more asked",
			ErrNoSpace, n.nodeID, fmtBytes(n.inline.maxTotal), fmtBytes(used), fmtBytes(size))
	}
	return nil
}

// UnpublishInline answers a NodeUnpublishVolume whose ID may be an inline
// volume's handle, under the lock of the inline volume's ID. handled is
// false when the handle is neither an inline volume of this node nor one
// the kubelet makes up; the ordinary Unpublish then answers.
//
// An inline volume is unpublished from the target and, once no target is
// left, unstaged and deleted. The kubelet's handle for an inline volume
// that no longer exists (a retry after the volume was deleted) or never
// did (its publish failed before creating it) succeeds once nothing is
// mounted, or the pod could never finish terminating (unpublishGone).
func (n *Node) UnpublishInline(handle, targetPath string) (handled bool, err error) {
	id := volumeid.FromName(EphemeralName(handle))
	err = n.locked(id, func() error {
		if _, ok := n.EphemeralID(handle); ok {
			handled = true
			return n.unpublishEphemeral(id, targetPath)
		}
		if KubeletHandle(handle) {
			handled = true
			return n.unpublishGone(handle, targetPath)
		}
		return nil
	})
	if errors.Is(err, ErrBusy) {
		handled = true
	}
	return handled, err
}

// KubeletHandle reports whether id has the form the kubelet gives inline
// volumes: "csi-" and the hex SHA-256 of the pod UID and volume name
// (makeVolumeHandle in pkg/volume/csi of Kubernetes).
func KubeletHandle(id string) bool {
	h, ok := strings.CutPrefix(id, "csi-")
	if !ok || len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// unpublishEphemeral unpublishes an inline volume from the target and,
// once no target is left, unstages and deletes it.
func (n *Node) unpublishEphemeral(id, targetPath string) error {
	if err := n.unpublish(id, targetPath); err != nil {
		return err
	}
	return n.dropEphemeral(id)
}

// dropEphemeral unstages and deletes an inline volume that is published
// nowhere; one still published is left alone. It unstages from what is
// mounted and attached, so a loop device or mount left without a record
// by a crash goes too.
func (n *Node) dropEphemeral(id string) error {
	v, err := n.Get(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !v.Ephemeral {
		return fmt.Errorf("%w: %s is not an inline volume", ErrInvalid, id)
	}
	ns, src, err := n.stateOf(v)
	if err != nil {
		return err
	}
	if _, err := n.liveTargets(v, &ns, src); err != nil {
		return err
	}
	if len(ns.Targets) > 0 {
		return nil
	}
	staging := n.ephemeralStaging(id)
	if v.Kind == KindLoop || ns.StagingPath != "" {
		if ns.StagingPath != "" {
			staging = ns.StagingPath
		}
		if err := n.unstage(id, staging); err != nil {
			return err
		}
	}
	if _, _, err := mounter.RemoveMountPoint(n.ephemeralStaging(id), false); err != nil {
		return fmt.Errorf("remove staging directory of inline volume %s: %w", id, err)
	}
	failpoint.Hit("inline-after-unstage")
	if err := n.ctrl.delete(id); err != nil {
		return err
	}
	klog.V(2).InfoS("Inline volume deleted", "volumeID", id, "name", v.Name, "pod", klog.KRef(v.PVCNamespace, v.PVCName))
	return nil
}

// ephemeralStaging is where an inline loop volume's filesystem is mounted;
// id has passed volumeid.Validate (it is made by FromName).
func (n *Node) ephemeralStaging(id string) string {
	return filepath.Join(n.ephemeralDir, id)
}

// unpublishGone answers a NodeUnpublishVolume for an ID no volume has (an
// inline volume already deleted): success when nothing is mounted at the
// target, whose empty directory is removed (anything else there is left
// alone); NOT_FOUND when something is mounted, since it is not ours to
// unmount.
func (n *Node) unpublishGone(handle, targetPath string) error {
	mounted, err := n.mounter.MountRoot(targetPath)
	if err != nil {
		return err
	}
	if mounted {
		return fmt.Errorf("%w: no volume has ID %q, and %s is a mount of something else", ErrNotFound, handle, targetPath)
	}
	removed, reason, err := mounter.RemoveMountPoint(targetPath, false)
	if err != nil {
		return fmt.Errorf("remove target %s: %w", targetPath, err)
	}
	if !removed {
		klog.InfoS("Target path left in place: hostvol removes only what a publish makes", "volumeID", handle, "targetPath", targetPath, "found", reason)
	}
	return nil
}

// inlineBudget counts the bytes of this node's inline volumes against the
// node's cap. A check-and-reserve is one short critical section, so two
// pods starting at once cannot both take the last bytes.
type inlineBudget struct {
	maxBytes, maxTotal int64

	mu   sync.Mutex
	used int64
	byID map[string]int64
}

func newInlineBudget(maxBytes, maxTotal int64) *inlineBudget {
	return &inlineBudget{maxBytes: maxBytes, maxTotal: maxTotal, byID: map[string]int64{}}
}

// InlineBytes returns the bytes this node's inline volumes hold and the cap.
func (n *Node) InlineBytes() (used, max int64) {
	n.inline.mu.Lock()
	defer n.inline.mu.Unlock()
	return n.inline.used, n.inline.maxTotal
}

// reserve counts bytes for id if the total stays within the cap; it
// returns what was in use before.
func (b *inlineBudget) reserve(id string, bytes int64) (used int64, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.byID[id]
	if b.used-cur+bytes > b.maxTotal {
		return b.used, false
	}
	b.used += bytes - cur
	b.byID[id] = bytes
	return b.used - bytes, true
}

// set counts an existing inline volume (start-up), whatever the cap.
func (b *inlineBudget) set(id string, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used += bytes - b.byID[id]
	b.byID[id] = bytes
}

// release forgets a volume; unknown IDs are ignored.
func (b *inlineBudget) release(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= b.byID[id]
	delete(b.byID, id)
}
