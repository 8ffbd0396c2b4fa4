package volume

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// Create takes a snapshot, or returns the existing one of the same name
// when it is of the same source (CSI: CreateSnapshot is idempotent by
// name). A snapshot that needs a full copy is answered ready_to_use=false
// when its copy takes longer than a moment; the CO calls again until it is
// ready. It takes the snapshot's lock, then the source volume's.
func (s *Snapshots) Create(req SnapshotRequest) (snap Snapshot, err error) {
	id := volumeid.SnapshotFromName(s.nodeID, req.Name)
	err = s.locked(id, func() error {
		snap, err = s.create(id, req)
		return err
	})
	return snap, err
}

func (s *Snapshots) create(id string, req SnapshotRequest) (Snapshot, error) {
	if existing, done, err := s.settleSnapshot(id, req); err != nil || done {
		return existing, err
	}
	v, err := s.catalog.Get(req.SourceVolumeID)
	if err != nil {
		return Snapshot{}, fmt.Errorf("source of snapshot %s: %w", untrusted.Quote(req.Name), err)
	}
	if s.otherNode(v) {
		return Snapshot{}, fmt.Errorf("%w: source volume %s lives on node %q, not %q", ErrNotFound, v.ID, v.Node, s.nodeID)
	}
	if v.Ephemeral {
		return Snapshot{}, fmt.Errorf("%w: volume %s is a CSI inline volume, which goes with its pod and has no snapshots", ErrNotAllowed, v.ID)
	}
	p := s.pools[v.Pool]
	if p == nil {
		return Snapshot{}, fmt.Errorf("%w: source volume %s is in pool %q", ErrPoolUnavailable, v.ID, v.Pool)
	}
	if p.Shared {
		return Snapshot{}, fmt.Errorf("%w: volume %s is in shared pool %q, whose volumes have no snapshots (other nodes may write them while a copy is made)", ErrNotAllowed, v.ID, p.Name)
	}
	var snap Snapshot
	err = s.locked(v.ID, func() error {
		// Read again under the source's lock: it may have grown or gone.
		if v, err = s.catalog.Get(v.ID); err != nil {
			return err
		}
		snap, err = s.take(p, v, id, req)
		return err
	})
	return snap, err
}

// settleSnapshot looks for a record under the request's ID. done is true
// when the request is answered by it. A record a failed attempt in this
// process left half-way is removed, and the snapshot is taken afresh; a
// background copy that failed since the last call reports its error once.
func (s *Snapshots) settleSnapshot(id string, req SnapshotRequest) (Snapshot, bool, error) {
	existing, ok := s.snapshot(id)
	if !ok {
		if job := s.copyOf(id); job != nil {
			s.forgetCopy(job)
			return Snapshot{}, true, fmt.Errorf("snapshot %s: its copy failed: %w", untrusted.Quote(req.Name), job.err)
		}
		return Snapshot{}, false, nil
	}
	switch {
	case existing.Name != req.Name:
		return Snapshot{}, true, fmt.Errorf("%w: snapshot ID %s is taken by snapshot %s", ErrAlreadyExists, id, untrusted.Quote(existing.Name))
	case existing.SourceVolumeID != req.SourceVolumeID:
		return Snapshot{}, true, fmt.Errorf("%w: snapshot %s exists, of volume %s", ErrAlreadyExists, untrusted.Quote(req.Name), existing.SourceVolumeID)
	case existing.State == StateReady:
		return existing, true, nil
	case existing.State == StateCopying:
		if job := s.copyOf(id); job != nil {
			snap, err := s.awaitCopy(job, s.syncWait)
			return snap, true, err
		}
	}
	p := s.pools[existing.Pool]
	if p == nil {
		return Snapshot{}, true, fmt.Errorf("%w: snapshot %s is in pool %q", ErrPoolUnavailable, id, existing.Pool)
	}
	if err := s.removeSnapshot(p, existing); err != nil {
		return Snapshot{}, true, err
	}
	return Snapshot{}, false, nil
}

// methodFor picks how a snapshot of v is taken in pool p.
func (s *Snapshots) methodFor(p *pool.Pool, v Volume) SnapshotMethod {
	cs := s.copy[p.Name]
	switch {
	case v.Kind.HasImage() && cs.Reflink:
		return MethodReflink
	case !v.Kind.HasImage() && cs.Btrfs && v.Quota != nil && v.Quota.Method == quota.BtrfsQgroup && v.Quota.SubvolumeID != 0:
		return MethodSubvolume
	}
	return MethodCopy
}

// take takes a new snapshot of v, under both locks.
func (s *Snapshots) take(p *pool.Pool, v Volume, id string, req SnapshotRequest) (Snapshot, error) {
	use, err := s.node.snapshotUse(v)
	if err != nil {
		return Snapshot{}, err
	}
	method := s.methodFor(p, v)
	if method == MethodCopy && len(use.writers) > 0 && !req.AllowLiveCopy {
		return Snapshot{}, fmt.Errorf("%w: volume %s is published read-write at %s, and pool %q can only snapshot it by copying it file by file, "+
			"which is not a consistent snapshot of a volume being written; stop the pods that write it, or set allowLiveCopy: \"true\" in the VolumeSnapshotClass to accept such a copy",
			ErrNotAllowed, v.ID, strings.Join(use.writers, ", "), p.Name)
	}
	snap := Snapshot{
		Schema: snapshotSchema, ID: id, Name: req.Name, SourceVolumeID: v.ID, SourceName: v.Name,
		Kind: v.Kind, FsType: v.FsType, Pool: p.Name, Node: s.nodeID, SizeBytes: v.CapacityBytes,
		Method: method, State: StateCreating, CreatedAt: time.Now().UTC().Truncate(time.Second),
	}
	if snap.PinnedBytes, err = s.pinned(p, v, method); err != nil {
		return Snapshot{}, err
	}
	st, err := p.Stats()
	if err != nil {
		return Snapshot{}, err
	}
	if err := s.ctrl.promises.reserve(id, p.Name, st.AvailableBytes, snap.PinnedBytes); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s of volume %s: %w", untrusted.Quote(req.Name), v.ID, err)
	}
	if err := s.putSnapshot(snap); err != nil {
		s.ctrl.promises.drop(id)
		return Snapshot{}, err
	}
	failpoint.Hit("snapshot-after-intent")
	if method == MethodCopy {
		return s.startCopy(p, v, use, snap)
	}
	if snap, err = s.takeInstant(p, v, use, snap); err != nil {
		s.rollBackSnapshot(p, snap)
		return Snapshot{}, noSpace(err, "snapshot "+untrusted.Quote(req.Name), p.Name)
	}
	failpoint.Hit("snapshot-after-data")
	snap.State = StateReady
	if err := s.putSnapshot(snap); err != nil {
		s.rollBackSnapshot(p, snap)
		return Snapshot{}, err
	}
	klog.V(2).InfoS("Snapshot taken", "snapshotID", id, "name", req.Name, "volumeID", v.ID, "pool", p.Name, "method", method, "pinnedBytes", snap.PinnedBytes)
	return snap, nil
}

// pinned is what a snapshot of v taken by method may come to hold of the
// pool that statfs does not show as used yet: a copy-on-write snapshot
// shares the source's allocated blocks, which become its own as the
// source rewrites them; a copy will hold what it copies (the source's
// allocated bytes, or for a directory without a limit, its capacity).
func (s *Snapshots) pinned(p *pool.Pool, v Volume, method SnapshotMethod) (int64, error) {
	if v.Kind.HasImage() {
		_, allocated, err := p.ImageUsage(v.ID)
		return allocated, err
	}
	if u, ok, err := s.ctrl.quotaUsage(v); ok {
		return u.Bytes, err
	}
	if method == MethodSubvolume {
		return 0, fmt.Errorf("volume %s: a btrfs snapshot needs its qgroup usage", v.ID)
	}
	return v.CapacityBytes, nil
}

// takeInstant makes a copy-on-write snapshot's data.
func (s *Snapshots) takeInstant(p *pool.Pool, v Volume, use snapshotUse, snap Snapshot) (Snapshot, error) {
	if snap.Method == MethodSubvolume {
		if err := p.SnapshotSubvolume(v.ID, snap.ID); err != nil {
			return snap, fmt.Errorf("btrfs snapshot of %s: %w", v.ID, err)
		}
		id, err := p.SnapshotSubvolumeID(snap.ID)
		if err != nil {
			return snap, fmt.Errorf("subvolume of snapshot %s: %w", snap.ID, err)
		}
		snap.SubvolumeID = id
		return snap, nil
	}
	record := func(frozen string) error {
		snap.Frozen = frozen
		return s.putSnapshot(snap)
	}
	err := quiesce(use, record, func() error {
		return p.SnapshotImage(bg(), v.ID, snap.ID, pool.CopyOptions{Reflink: true})
	})
	return snap, err
}

// noSpace gives a full pool's errno its volume-level meaning.
func noSpace(err error, what, poolName string) error {
	if (errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%s in pool %q: %w: %w", what, poolName, ErrNoSpace, err)
	}
	return err
}

// rollBackSnapshot removes what a failed snapshot made; what it cannot
// remove is removed by the next CreateSnapshot of the name or at start-up.
func (s *Snapshots) rollBackSnapshot(p *pool.Pool, snap Snapshot) {
	if err := s.removeSnapshot(p, snap); err != nil {
		klog.ErrorS(err, "Rollback of a failed snapshot incomplete; it is retried on the next CreateSnapshot or at start-up", "snapshotID", snap.ID)
	}
}
