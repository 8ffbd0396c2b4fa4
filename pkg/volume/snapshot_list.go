package volume

import (
	"fmt"
	"sort"
)

// Get returns a listed snapshot (ready, or being copied). id must be
// valid.
func (s *Snapshots) Get(id string) (Snapshot, error) {
	snap, ok := s.snapshot(id)
	if !ok || !s.listable(snap) {
		return Snapshot{}, s.notHere(id)
	}
	return snap, nil
}

// listable: ready, or copying in this process. A half-made snapshot is
// never listed.
func (s *Snapshots) listable(snap Snapshot) bool {
	switch snap.State {
	case StateReady:
		return true
	case StateCopying:
		return s.copyOf(snap.ID) != nil
	}
	return false
}

// ListFilter selects snapshots: by ID, by source volume, or all ("").
type ListFilter struct {
	SnapshotID     string
	SourceVolumeID string
}

// List returns the listed snapshots that match f with IDs greater than
// after, in ID order, at most max of them (0: all), and the token for the
// next page ("" at the end). Filtered by ID it reads one index entry, by
// source volume only that volume's snapshots.
func (s *Snapshots) List(f ListFilter, after string, max int) ([]Snapshot, string, error) {
	s.smu.RLock()
	var ids []string
	switch {
	case f.SnapshotID != "":
		if snap, ok := s.byID[f.SnapshotID]; ok && (f.SourceVolumeID == "" || snap.SourceVolumeID == f.SourceVolumeID) {
			ids = append(ids, f.SnapshotID)
		}
	case f.SourceVolumeID != "":
		for id := range s.bySource[f.SourceVolumeID] {
			ids = append(ids, id)
		}
	default:
		ids = make([]string, 0, len(s.byID))
		for id := range s.byID {
			ids = append(ids, id)
		}
	}
	s.smu.RUnlock()
	sort.Strings(ids)
	out := make([]Snapshot, 0, len(ids))
	for _, id := range ids {
		if id <= after {
			continue
		}
		snap, ok := s.snapshot(id)
		if !ok || !s.listable(snap) {
			continue
		}
		if max > 0 && len(out) == max {
			return out, out[len(out)-1].ID, nil
		}
		out = append(out, snap)
	}
	return out, "", nil
}

// SnapshotCount is the number of snapshot records, for logs.
func (s *Snapshots) SnapshotCount() int {
	s.smu.RLock()
	defer s.smu.RUnlock()
	return len(s.byID)
}

// String names a snapshot for logs.
func (s Snapshot) String() string {
	return fmt.Sprintf("%s (%s of %s)", s.ID, s.Method, s.SourceVolumeID)
}
