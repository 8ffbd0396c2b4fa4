package volume

import (
	"fmt"
	"path/filepath"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// load reads every snapshot record at start-up. First of all it thaws
// every filesystem a record says is frozen (a crash between FIFREEZE and
// FITHAW), so that no pod stays blocked on a frozen volume; then it rolls
// back snapshots a crash left half-made or half-copied (the CO's retry of
// CreateSnapshot takes them again), finishes deletions, and indexes the
// rest. Data in snapshots/ that no record names is reported, not removed.
func (s *Snapshots) load() error {
	keys, err := s.snaps.Keys()
	if err != nil {
		return err
	}
	var snaps []Snapshot
	known := map[string]bool{}
	for _, id := range keys {
		if err := volumeid.ValidateSnapshot(id); err != nil {
			klog.InfoS("Ignoring file in record directory that is not a snapshot record", "dir", s.snaps.Dir(), "name", id)
			continue
		}
		known[id] = true
		var snap Snapshot
		if err := s.snaps.Get(id, &snap); err != nil {
			klog.ErrorS(err, "Unreadable snapshot record left in place", "snapshotID", id, "dir", s.snaps.Dir())
			continue
		}
		s.indexSnapshot(snap)
		if snap.Frozen != "" {
			if err := thaw(snap.Frozen); err != nil {
				klog.ErrorS(err, "Thawing a filesystem a snapshot left frozen failed", "snapshotID", id, "path", snap.Frozen)
			} else {
				klog.InfoS("Thawed a filesystem a snapshot interrupted by a restart had frozen", "snapshotID", id, "path", snap.Frozen)
			}
		}
		snaps = append(snaps, snap)
	}
	for _, snap := range snaps {
		if err := s.reconcileSnapshot(snap); err != nil {
			return fmt.Errorf("reconcile snapshot %s: %w", snap.ID, err)
		}
	}
	s.reportStraySnapshots(known)
	return nil
}

func (s *Snapshots) reconcileSnapshot(snap Snapshot) error {
	p := s.pools[snap.Pool]
	if p == nil {
		klog.InfoS("Snapshot's pool is not configured on this node", "snapshotID", snap.ID, "pool", snap.Pool)
		return nil
	}
	switch snap.State {
	case StateReady:
		s.ctrl.promises.set(snap.ID, p.Name, snap.PinnedBytes)
		return nil
	case StateCreating, StateCopying:
		klog.InfoS("Rolling back a snapshot interrupted by a restart", "snapshotID", snap.ID, "name", snap.Name, "state", snap.State)
	case StateDeleting:
		klog.InfoS("Finishing a snapshot deletion interrupted by a restart", "snapshotID", snap.ID, "name", snap.Name)
	default:
		return fmt.Errorf("unknown state %q", snap.State)
	}
	snap.Frozen = "" // thawed above
	return s.removeSnapshot(p, snap)
}

// reportStraySnapshots logs the snapshot data no record names.
func (s *Snapshots) reportStraySnapshots(known map[string]bool) {
	for _, name := range s.poolNames() {
		p := s.pools[name]
		ids, err := p.SnapshotEntries()
		if err != nil {
			klog.ErrorS(err, "Listing the pool's snapshots failed", "pool", name)
			continue
		}
		for _, id := range ids {
			if !known[id] {
				klog.InfoS("Snapshot data in pool has no snapshot record; leaving it in place", "pool", name, "path", filepath.Join(p.Path, "snapshots", id))
			}
		}
	}
}
