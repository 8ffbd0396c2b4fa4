package volume

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// Delete removes a snapshot and its data. A missing snapshot is not an
// error (CSI: DeleteSnapshot is idempotent), unless its ID names another
// node: that node holds it, and saying it is gone would leave its data
// there. A background copy of it is stopped first. Volumes restored from
// the snapshot share nothing with it that hostvol tracks (a reflink's or
// a btrfs snapshot's shared blocks are the filesystem's business), so it
// may go before them, as its source may go before it. It takes the
// snapshot's lock.
//
// Order of durable steps: record "deleting" -> data removed (and a btrfs
// snapshot's qgroup) -> record removed. Load finishes a deletion a crash
// interrupted.
func (s *Snapshots) Delete(id string) error {
	return s.locked(id, func() error { return s.delete(id) })
}

func (s *Snapshots) delete(id string) error {
	if job := s.copyOf(id); job != nil {
		job.cancel()
		<-job.done
		s.forgetCopy(job)
	}
	snap, ok := s.snapshot(id)
	if !ok {
		if volumeid.SnapshotNodeTag(id) != volumeid.NodeTag(s.nodeID) {
			return fmt.Errorf("%w: snapshot %s was taken on another node, which holds it; this node (%q) cannot delete it", ErrOtherNode, id, s.nodeID)
		}
		return nil
	}
	if snap.Node != s.nodeID {
		return fmt.Errorf("%w: snapshot %s lives on node %q (its record in %s says so), and this driver runs as node %q", ErrOtherNode, id, snap.Node, s.snaps.Dir(), s.nodeID)
	}
	p := s.pools[snap.Pool]
	if p == nil {
		return fmt.Errorf("%w: snapshot %s is in pool %q", ErrPoolUnavailable, id, snap.Pool)
	}
	if snap.State != StateDeleting {
		snap.State = StateDeleting
		if err := s.putSnapshot(snap); err != nil {
			return err
		}
	}
	failpoint.Hit("snapshot-delete-after-intent")
	if err := s.removeSnapshot(p, snap); err != nil {
		return err
	}
	klog.V(2).InfoS("Snapshot deleted", "snapshotID", id, "name", snap.Name)
	return nil
}

// removeSnapshot thaws what the snapshot's record says is frozen, removes
// its data, then its qgroup, then its record: never a record pointing at
// data that is gone without saying so, never a qgroup without the record
// that names it.
func (s *Snapshots) removeSnapshot(p *pool.Pool, snap Snapshot) error {
	if snap.Frozen != "" {
		if err := thaw(snap.Frozen); err != nil {
			return fmt.Errorf("snapshot %s: thaw %s: %w", snap.ID, snap.Frozen, err)
		}
		klog.InfoS("Thawed a filesystem a snapshot had frozen", "snapshotID", snap.ID, "path", snap.Frozen)
		snap.Frozen = ""
	}
	var err error
	if snap.hasImage() {
		err = p.RemoveSnapshotImage(snap.ID)
	} else {
		if snap.Method == MethodSubvolume && snap.SubvolumeID == 0 {
			if snap, err = s.identifySubvolume(p, snap); err != nil {
				return err
			}
		}
		err = p.RemoveSnapshotDir(snap.ID)
	}
	if err != nil {
		return fmt.Errorf("remove data of snapshot %s: %w", snap.ID, err)
	}
	failpoint.Hit("snapshot-delete-after-data")
	if err := s.clearSnapshotQgroup(p, snap); err != nil {
		return err
	}
	if err := s.deleteSnapshotRecord(snap); err != nil {
		return err
	}
	s.ctrl.promises.drop(snap.ID)
	return nil
}

// identifySubvolume records the subvolume of a btrfs snapshot whose
// creation a crash cut short, before it goes, so that its qgroup can be
// removed after a crash at any later step.
func (s *Snapshots) identifySubvolume(p *pool.Pool, snap Snapshot) (Snapshot, error) {
	id, err := p.SnapshotSubvolumeID(snap.ID)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return snap, nil
	case err != nil:
		return snap, fmt.Errorf("identify data of snapshot %s: %w", snap.ID, err)
	case id == 0:
		return snap, nil
	}
	snap.SubvolumeID = id
	return snap, s.putSnapshot(snap)
}

// clearSnapshotQgroup removes the qgroup the kernel gave a btrfs
// snapshot's subvolume (quotas on).
func (s *Snapshots) clearSnapshotQgroup(p *pool.Pool, snap Snapshot) error {
	if snap.SubvolumeID == 0 {
		return nil
	}
	enf := s.ctrl.enforcers[p.Name]
	if enf == nil || enf.Info().Method != quota.BtrfsQgroup {
		return nil
	}
	if err := enf.Clear(quota.Handle{Method: quota.BtrfsQgroup, SubvolumeID: snap.SubvolumeID}); err != nil {
		if errors.Is(err, quota.ErrBusy) {
			return fmt.Errorf("%w: snapshot %s: %v", ErrBusy, snap.ID, err)
		}
		return fmt.Errorf("clear the qgroup of snapshot %s: %w", snap.ID, err)
	}
	return nil
}
