package volume

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

// The OS calls that quiesce a volume, replaceable in unprivileged tests.
var (
	freeze      = fsutil.Freeze
	thaw        = fsutil.Thaw
	flushDevice = fsutil.FlushDevice
	syncFS      = fsutil.SyncFS
)

// bg is the context of work that outlives the request that started it.
func bg() context.Context { return context.Background() }

// copyProgressEvery is how often a background copy logs its progress.
const copyProgressEvery = 10 * time.Second

// startCopy records the snapshot "copying" and starts its copy in the
// background, then waits a moment for it: a small copy answers ready. The
// source's data is made consistent on disk first (a staged filesystem
// synced, an attached device flushed). While the copy runs, the source
// may not be deleted or published read-write (copying).
func (s *Snapshots) startCopy(p *pool.Pool, v Volume, use snapshotUse, snap Snapshot) (Snapshot, error) {
	if err := settle(use); err != nil {
		s.rollBackSnapshot(p, snap)
		return Snapshot{}, fmt.Errorf("volume %s: %w", v.ID, err)
	}
	snap.State = StateCopying
	if err := s.putSnapshot(snap); err != nil {
		s.rollBackSnapshot(p, snap)
		return Snapshot{}, err
	}
	ctx, cancel := context.WithCancel(bg())
	job := &copyJob{snapID: snap.ID, volID: v.ID, pool: p.Name, total: snap.PinnedBytes, cancel: cancel, done: make(chan struct{})}
	s.smu.Lock()
	s.copies[snap.ID] = job
	s.copyingFrom[v.ID]++
	s.smu.Unlock()
	klog.InfoS("Snapshot copy started", "snapshotID", snap.ID, "name", snap.Name, "volumeID", v.ID, "pool", p.Name, "bytes", job.total)
	go s.runCopy(ctx, p, snap, job)
	return s.awaitCopy(job, s.syncWait)
}

// quiesce runs clone (one FICLONE) with the source's data consistent on
// disk: a staged filesystem frozen for the instant of the clone, or an
// attached device flushed (crash-consistent). record is called with the
// staging path before FIFREEZE and with "" after FITHAW, so that the
// freeze is durable in a record that start-up reads and thaws after a
// crash.
func quiesce(use snapshotUse, record func(frozen string) error, clone func() error) error {
	if use.stagingPath == "" {
		if use.device != "" {
			if err := flushDevice(use.device); err != nil {
				return fmt.Errorf("flush %s: %w", use.device, err)
			}
		}
		return clone()
	}
	if err := record(use.stagingPath); err != nil {
		return err
	}
	if err := freeze(use.stagingPath, use.device); err != nil {
		return fmt.Errorf("freeze the filesystem at %s: %w", use.stagingPath, err)
	}
	start := time.Now()
	failpoint.Hit("snapshot-frozen")
	cerr := clone()
	if err := thaw(use.stagingPath); err != nil {
		klog.ErrorS(err, "Thawing a filesystem after a snapshot or clone failed; start-up retries it", "path", use.stagingPath)
		return errors.Join(cerr, fmt.Errorf("thaw %s: %w", use.stagingPath, err))
	}
	klog.V(3).InfoS("Filesystem frozen for a snapshot or clone", "path", use.stagingPath, "duration", time.Since(start))
	if err := record(""); err != nil {
		return errors.Join(cerr, err)
	}
	return cerr
}

// settle writes a volume's data out to its image before a copy.
func settle(use snapshotUse) error {
	if use.stagingPath != "" {
		if err := syncFS(use.stagingPath); err != nil {
			return fmt.Errorf("sync the filesystem at %s: %w", use.stagingPath, err)
		}
	}
	if use.device != "" {
		if err := flushDevice(use.device); err != nil {
			return fmt.Errorf("flush %s: %w", use.device, err)
		}
	}
	return nil
}

// runCopy copies the data and settles the record. While the job is in
// copies and not done, only it writes the snapshot's record.
func (s *Snapshots) runCopy(ctx context.Context, p *pool.Pool, snap Snapshot, job *copyJob) {
	start := time.Now()
	last := start
	o := pool.CopyOptions{
		Reflink: s.copy[p.Name].Reflink,
		Progress: func(done int64) {
			job.copied.Store(done)
			if time.Since(last) >= copyProgressEvery {
				last = time.Now()
				klog.InfoS("Snapshot copy progress", "snapshotID", snap.ID, "copiedBytes", done, "bytes", job.total, "elapsed", time.Since(start).Round(time.Second))
			}
		},
	}
	var err error
	if snap.hasImage() {
		err = p.SnapshotImage(ctx, snap.SourceVolumeID, snap.ID, o)
	} else {
		var n int64
		n, err = p.CopyDirToSnapshot(ctx, snap.SourceVolumeID, snap.ID, o)
		job.copied.Store(n)
	}
	if err == nil {
		// A copy holds its own blocks: statfs shows them, nothing more is
		// pinned.
		snap.State, snap.PinnedBytes = StateReady, 0
		err = s.putSnapshot(snap)
	}
	if err != nil {
		s.rollBackSnapshot(p, snap)
		if errors.Is(ctx.Err(), context.Canceled) {
			err = fmt.Errorf("%w: the snapshot was deleted while it was copied", ErrNotFound)
		}
		err = noSpace(err, "copy of snapshot "+snap.ID, p.Name)
		klog.ErrorS(err, "Snapshot copy failed", "snapshotID", snap.ID, "volumeID", snap.SourceVolumeID, "duration", time.Since(start))
	} else {
		s.ctrl.promises.set(snap.ID, p.Name, 0)
		klog.InfoS("Snapshot copy done", "snapshotID", snap.ID, "volumeID", snap.SourceVolumeID, "copiedBytes", job.copied.Load(), "duration", time.Since(start))
	}
	s.smu.Lock()
	s.copyingFrom[job.volID]--
	if s.copyingFrom[job.volID] <= 0 {
		delete(s.copyingFrom, job.volID)
	}
	job.err = err
	if err == nil {
		delete(s.copies, snap.ID)
	}
	s.smu.Unlock()
	close(job.done)
}

// awaitCopy waits up to d for a copy, then answers from the record.
func (s *Snapshots) awaitCopy(job *copyJob, d time.Duration) (Snapshot, error) {
	err, done := job.wait(d)
	if done && err != nil {
		s.forgetCopy(job)
		return Snapshot{}, err
	}
	snap, ok := s.snapshot(job.snapID)
	if !ok {
		return Snapshot{}, fmt.Errorf("%w: snapshot %s is gone", ErrNotFound, job.snapID)
	}
	return snap, nil
}

// forgetCopy drops a finished job whose error was reported.
func (s *Snapshots) forgetCopy(job *copyJob) {
	s.smu.Lock()
	if s.copies[job.snapID] == job {
		delete(s.copies, job.snapID)
	}
	s.smu.Unlock()
}

// waitReady waits for a snapshot's background copy, for a restore: up to
// d, then ErrBusy (the CO retries).
func (c *catalog) waitReady(snap Snapshot, d time.Duration) (Snapshot, error) {
	if snap.State == StateReady {
		return snap, nil
	}
	id := snap.ID
	job := c.copyOf(id)
	if snap.State != StateCopying || job == nil {
		return Snapshot{}, fmt.Errorf("%w: snapshot %s is %s", ErrNotFound, id, snap.State)
	}
	if err, done := job.wait(d); !done {
		return Snapshot{}, fmt.Errorf("%w: snapshot %s is still being copied (%d of %d bytes)", ErrBusy, id, job.copied.Load(), job.total)
	} else if err != nil {
		return Snapshot{}, fmt.Errorf("%w: snapshot %s: its copy failed: %v", ErrNotFound, id, err)
	}
	snap, ok := c.snapshot(id)
	if !ok || snap.State != StateReady {
		return Snapshot{}, fmt.Errorf("%w: snapshot %s", ErrNotFound, id)
	}
	return snap, nil
}

// copyFigures are the background copies' figures for metrics, by pool:
// how many run and the bytes they still have to copy. It costs one step
// per running copy.
func (ss *snapshotStore) copyFigures() (running map[string]int, remaining map[string]int64) {
	running, remaining = map[string]int{}, map[string]int64{}
	ss.smu.RLock()
	defer ss.smu.RUnlock()
	for _, j := range ss.copies {
		select {
		case <-j.done:
			continue
		default:
		}
		running[j.pool]++
		remaining[j.pool] += max(j.total-j.copied.Load(), 0)
	}
	return running, remaining
}
