package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"

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
func EphemeralName(handle string) string { return "ephemeral/" + handle }

// EphemeralID returns the volume ID of the inline volume with this handle
// and whether such a volume exists on this node.
func (m *Manager) EphemeralID(handle string) (string, bool) {
	id := volumeid.FromName(EphemeralName(handle))
	v, err := m.Get(id)
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
// The caller holds the volume's lock.
func (m *Manager) PublishEphemeral(req EphemeralRequest) (err error) {
	req.Create.Ephemeral = true
	if req.Create.Kind == KindBlock {
		return fmt.Errorf("%w: inline volumes are filesystems; raw block needs a PersistentVolumeClaim", ErrInvalid)
	}
	v, err := m.Create(req.Create)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if rerr := m.dropEphemeral(v.ID); rerr != nil {
				klog.ErrorS(rerr, "Could not remove an inline volume whose publish failed; NodeUnpublishVolume removes it", "volumeID", v.ID)
			}
		}
	}()
	pub := req.Publish
	pub.ID = v.ID
	if v.Kind == KindLoop {
		staging := m.ephemeralStaging(v.ID)
		if err := os.MkdirAll(staging, 0o700); err != nil {
			return fmt.Errorf("create staging directory of inline volume %s: %w", v.ID, err)
		}
		if err := m.Stage(StageRequest{ID: v.ID, StagingPath: staging, FsType: v.FsType, MountFlags: req.MountFlags}); err != nil {
			return err
		}
		pub.StagingPath = staging
	}
	if err := m.Publish(pub); err != nil {
		return err
	}
	klog.V(2).InfoS("Inline volume published", "volumeID", v.ID, "name", v.Name, "pod", klog.KRef(v.PVCNamespace, v.PVCName), "targetPath", pub.TargetPath)
	return nil
}

// UnpublishEphemeral unpublishes an inline volume from the target and, once
// no target is left, unstages and deletes it. The caller holds its lock.
func (m *Manager) UnpublishEphemeral(id, targetPath string) error {
	if err := m.Unpublish(id, targetPath); err != nil {
		return err
	}
	return m.dropEphemeral(id)
}

// dropEphemeral unstages and deletes an inline volume that is published
// nowhere; one still published is left alone.
func (m *Manager) dropEphemeral(id string) error {
	v, err := m.Get(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !v.Ephemeral {
		return fmt.Errorf("%w: %s is not an inline volume", ErrInvalid, id)
	}
	ns, err := m.getNodeState(id)
	if err != nil {
		return err
	}
	if _, err := m.liveTargets(&ns); err != nil {
		return err
	}
	if len(ns.Targets) > 0 {
		return nil
	}
	if ns.StagingPath != "" {
		if err := m.Unstage(id, ns.StagingPath); err != nil {
			return err
		}
	}
	if err := os.Remove(m.ephemeralStaging(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove staging directory of inline volume %s: %w", id, err)
	}
	if err := m.Delete(id); err != nil {
		return err
	}
	klog.V(2).InfoS("Inline volume deleted", "volumeID", id, "name", v.Name, "pod", klog.KRef(v.PVCNamespace, v.PVCName))
	return nil
}

// ephemeralStaging is where an inline loop volume's filesystem is mounted;
// id has passed volumeid.Validate (it is made by FromName).
func (m *Manager) ephemeralStaging(id string) string {
	return filepath.Join(m.ephemeralDir, id)
}

// UnpublishGone answers a NodeUnpublishVolume for an ID no volume has (an
// inline volume already deleted): success when nothing is mounted at the
// target, whose empty directory is removed; NOT_FOUND when something is,
// since it is not ours to unmount.
func (m *Manager) UnpublishGone(handle, targetPath string) error {
	mounted, err := m.isMounted(targetPath)
	if err != nil {
		return err
	}
	if mounted {
		return fmt.Errorf("%w: no volume has ID %q, and %s is a mount of something else", ErrNotFound, handle, targetPath)
	}
	if err := os.Remove(targetPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove target %s: %w", targetPath, err)
	}
	return nil
}
