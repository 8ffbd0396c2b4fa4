package volume

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// Snapshots is the third side of a node's volume layer, beside Controller
// and Node over the same catalog: it takes, lists and deletes snapshots of
// this node's volumes (snapshot_*.go). Restores and clones are volumes,
// made by Controller.Create from a snapshot or volume source (restore.go).
//
// A snapshot lives on its source volume's node, in its source's pool
// (<pool>/snapshots/<ID> or <ID>.img), with one record in the state
// directory's snapshots/ store. It is made by the fastest method the pool
// offers (SnapshotMethod), with the same crash rules as a volume: record
// "creating" -> data -> record "ready" (or "copying" while a background
// copy runs); a deletion is "deleting" -> data removed -> record removed.
type Snapshots struct {
	*catalog
	ctrl *Controller
	node snapshotNode
	// syncWait is how long CreateSnapshot waits for a background copy
	// before it answers ready_to_use=false: small copies answer ready.
	syncWait time.Duration
}

// snapshotNode is what a snapshot needs of this node's side: how the
// source volume is used here, to quiesce it.
type snapshotNode interface {
	snapshotUse(v Volume) (snapshotUse, error)
}

// snapshotUse is how a volume is used on this node when a snapshot or a
// clone of it is taken.
type snapshotUse struct {
	// stagingPath is where a loop volume's filesystem is mounted ("" when
	// it is not): frozen for the instant of a reflink, synced before a
	// copy.
	stagingPath string
	// device is the loop device the image is attached to (""): flushed
	// first.
	device string
	// writers are the targets the volume is published read-write at.
	writers []string
}

// SnapshotMethod is how a snapshot's data was made.
type SnapshotMethod string

// Snapshot methods, fastest first.
const (
	// MethodSubvolume: a read-only btrfs snapshot of a directory volume
	// that is a subvolume (qgroup-limited volumes are). Instant.
	MethodSubvolume SnapshotMethod = "btrfs-snapshot"
	// MethodReflink: a FICLONE of a loop or block volume's image, on a
	// pool that can reflink (XFS with reflink=1, btrfs). Instant.
	MethodReflink SnapshotMethod = "reflink"
	// MethodCopy: a full copy, made in the background (the snapshot is
	// "copying", ready_to_use=false, until it is done). On a pool that
	// can reflink, each file of a directory volume is reflinked.
	MethodCopy SnapshotMethod = "copy"
)

// StateCopying: a snapshot whose background copy is running. It is listed
// with ready_to_use=false; a restart rolls it back (the CO's retry of
// CreateSnapshot takes it again).
const StateCopying State = "copying"

// snapshotSchema is the version of the Snapshot record layout.
const snapshotSchema = 1

// Snapshot is the durable record of one snapshot.
type Snapshot struct {
	Schema int    `json:"schema"`
	ID     string `json:"id"`
	Name   string `json:"name"`
	// SourceVolumeID is the volume it was taken of (which may since have
	// been deleted), SourceName that volume's CSI name.
	SourceVolumeID string `json:"sourceVolumeID"`
	SourceName     string `json:"sourceName,omitempty"`
	// Kind and FsType are the source's: a restore must be of the same.
	Kind   Kind   `json:"kind"`
	FsType string `json:"fsType,omitempty"`
	Pool   string `json:"pool"`
	Node   string `json:"node"`
	// SizeBytes is the source's capacity when the snapshot was taken: the
	// smallest volume it restores into.
	SizeBytes int64          `json:"sizeBytes"`
	Method    SnapshotMethod `json:"method"`
	// PinnedBytes is what the snapshot may come to hold of its pool's
	// space that the pool does not show as used yet: for a copy-on-write
	// snapshot, the source's allocated bytes when it was taken (they
	// become the snapshot's own as the source changes).
	PinnedBytes int64 `json:"pinnedBytes,omitempty"`
	// Frozen is the staging path of the source's filesystem while it is
	// frozen for a reflink: written before FIFREEZE and cleared after
	// FITHAW, so that start-up thaws what a crash left frozen.
	Frozen string `json:"frozen,omitempty"`
	// SubvolumeID is a btrfs snapshot's subvolume, whose qgroup goes with
	// it.
	SubvolumeID uint64    `json:"subvolumeID,omitempty"`
	State       State     `json:"state"`
	CreatedAt   time.Time `json:"createdAt"`
}

// ReadyToUse reports whether the snapshot's data is complete.
func (s Snapshot) ReadyToUse() bool { return s.State == StateReady }

// hasImage reports whether the snapshot's data is an image.
func (s Snapshot) hasImage() bool { return s.Kind.HasImage() }

// SnapshotRequest describes a snapshot to take.
type SnapshotRequest struct {
	Name           string
	SourceVolumeID string
	// AllowLiveCopy lets a snapshot that must be a full copy be taken of
	// a volume published read-write (VolumeSnapshotClass allowLiveCopy).
	AllowLiveCopy bool
}

// ErrElsewhere: what the request needs (a snapshot, a clone's source) is
// on another node; the CO should place the volume elsewhere.
var ErrElsewhere = errors.New("not on this node")

// snapshotStore is the catalog's part for snapshots: their records (all
// node-local) and an in-memory index of every record, by ID and by source
// volume, so that no operation reads more than one record.
type snapshotStore struct {
	snaps *records.Store

	smu      sync.RWMutex
	byID     map[string]Snapshot
	bySource map[string]map[string]struct{}
	// copies are the background copies running (or finished with an
	// error not reported yet), by snapshot ID; copyingFrom counts them by
	// source volume (under smu).
	copies      map[string]*copyJob
	copyingFrom map[string]int
}

func openSnapshotStore(stateDir string) (*snapshotStore, error) {
	s, err := records.Open(filepath.Join(stateDir, "snapshots"))
	if err != nil {
		return nil, err
	}
	return &snapshotStore{
		snaps:       s,
		byID:        map[string]Snapshot{},
		bySource:    map[string]map[string]struct{}{},
		copies:      map[string]*copyJob{},
		copyingFrom: map[string]int{},
	}, nil
}

// putSnapshot writes a snapshot's record and indexes it.
func (ss *snapshotStore) putSnapshot(s Snapshot) error {
	if err := ss.snaps.Put(s.ID, s); err != nil {
		return err
	}
	ss.indexSnapshot(s)
	return nil
}

func (ss *snapshotStore) indexSnapshot(s Snapshot) {
	ss.smu.Lock()
	defer ss.smu.Unlock()
	ss.byID[s.ID] = s
	if ss.bySource[s.SourceVolumeID] == nil {
		ss.bySource[s.SourceVolumeID] = map[string]struct{}{}
	}
	ss.bySource[s.SourceVolumeID][s.ID] = struct{}{}
}

// deleteSnapshotRecord removes a snapshot's record and its index entries.
func (ss *snapshotStore) deleteSnapshotRecord(s Snapshot) error {
	if err := ss.snaps.Delete(s.ID); err != nil {
		return err
	}
	ss.smu.Lock()
	defer ss.smu.Unlock()
	delete(ss.byID, s.ID)
	if m := ss.bySource[s.SourceVolumeID]; m != nil {
		delete(m, s.ID)
		if len(m) == 0 {
			delete(ss.bySource, s.SourceVolumeID)
		}
	}
	return nil
}

// snapshot returns a snapshot's record in any state. id must be valid.
func (ss *snapshotStore) snapshot(id string) (Snapshot, bool) {
	ss.smu.RLock()
	defer ss.smu.RUnlock()
	s, ok := ss.byID[id]
	return s, ok
}

// copyOf returns the background copy of a snapshot, or nil.
func (ss *snapshotStore) copyOf(id string) *copyJob {
	ss.smu.RLock()
	defer ss.smu.RUnlock()
	return ss.copies[id]
}

// copying reports whether a background copy of a volume's data runs: the
// volume may not be deleted, nor published read-write, until it is done.
func (ss *snapshotStore) copying(volID string) bool {
	ss.smu.RLock()
	defer ss.smu.RUnlock()
	return ss.copyingFrom[volID] > 0
}

// copyJob is one background copy.
type copyJob struct {
	snapID, volID, pool string
	total               int64
	copied              atomic.Int64
	cancel              context.CancelFunc
	done                chan struct{}
	// err is set before done is closed.
	err error
}

// wait waits up to d for the copy to end; ok is false if it still runs.
func (j *copyJob) wait(d time.Duration) (err error, ok bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-j.done:
		return j.err, true
	case <-t.C:
		return nil, false
	}
}

// CheckSnapshotID validates a snapshot ID from a request: ErrInvalid when
// it is malformed, ErrNotFound when it is not one hostvol makes.
func CheckSnapshotID(id string) error {
	return idError(volumeid.ValidateSnapshot(id))
}

// notHere is the error for a valid snapshot ID with no record on this
// node: ErrElsewhere when its ID names another node, else ErrNotFound.
func (c *catalog) notHere(id string) error {
	if volumeid.SnapshotNodeTag(id) != volumeid.NodeTag(c.nodeID) {
		return fmt.Errorf("%w: snapshot %s was taken on another node (snapshots stay on their source volume's node); "+
			"a volume restored from it must be made there: give the pod node affinity to that node", ErrElsewhere, id)
	}
	return fmt.Errorf("%w: snapshot %s", ErrNotFound, id)
}
