package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type phase int

// Measured phases come first, in cycle order; phCycle is the whole cycle,
// phUp its first half (create, stage, publish: the volume is usable) and
// phDown its second (unpublish, unstage, delete). The existing-* phases only
// account for the untimed setup/teardown of pre-existing volumes. image to
// remove are the steps of --floor (see floor.go), which reports create to
// delete as the spans of the steps that do the same work. fill to
// snapshot-delete are the steps of --snapshot (see snapshot.go).
const (
	phCreate phase = iota
	phStage
	phPublish
	phUnpublish
	phUnstage
	phDelete
	phCycle
	phUp
	phDown
	phExistingCreate
	phExistingDelete
	phImage
	phMkfs
	phAttach
	phMount
	phBind
	phUnbind
	phUmount
	phDetach
	phRemove
	phFill
	phSnapshot
	phRestore
	phCopy
	phVerify
	phSnapshotDelete
	numPhases
)

var phaseNames = [numPhases]string{
	"create", "stage", "publish", "unpublish", "unstage", "delete", "cycle", "up", "down",
	"existing-create", "existing-delete",
	"image", "mkfs", "attach", "mount", "bind", "unbind", "umount", "detach", "remove",
	"fill", "snapshot", "restore", "copy", "verify", "snapshot-delete",
}

func (p phase) String() string { return phaseNames[p] }

const (
	maxAbortedRetries = 5
	retryBackoff      = 10 * time.Millisecond // doubled per retry: 10ms .. 160ms
	maxLoggedErrors   = 20
)

// runner holds what every cycle shares: clients, config and the request
// pieces that do not change per volume (proto messages are safe for
// concurrent marshalling).
type runner struct {
	cfg       *config
	cl        *clients
	info      *pluginInfo
	targetDir string
	volCap    *csi.VolumeCapability
	capRange  *csi.CapacityRange
	topo      *csi.TopologyRequirement
	log       *errLog
	stdout    io.Writer // --snapshot: one line per round as it ends; nil: none
}

func newRunner(cfg *config, cl *clients, info *pluginInfo, targetDir string, stderr io.Writer) *runner {
	r := &runner{
		cfg:       cfg,
		cl:        cl,
		info:      info,
		targetDir: targetDir,
		log:       &errLog{w: stderr},
		volCap: &csi.VolumeCapability{
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
	}
	if cfg.accessType == accessBlock {
		r.volCap.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	} else {
		r.volCap.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: cfg.fsType}}
	}
	if cfg.size > 0 {
		r.capRange = &csi.CapacityRange{RequiredBytes: cfg.size}
	}
	if len(info.topology) > 0 {
		t := &csi.Topology{Segments: info.topology}
		r.topo = &csi.TopologyRequirement{Requisite: []*csi.Topology{t}, Preferred: []*csi.Topology{t}}
	}
	return r
}

// result is the merged outcome of a run.
type result struct {
	cfg  *config
	info *pluginInfo
	// phases are those reported, in order; counted are those whose
	// failures are errors (the others aggregate them: cycle, up, down, and
	// in floor mode create to delete).
	phases, counted []phase
	floor           bool
	wall            time.Duration // wall time of the measured section only
	stats           [numPhases]phaseStats
	localErrors     int // filesystem errors of the tool itself (mkdir)
	leftovers       int // target paths still present after a successful unpublish
	interrupted     bool
}

func (res *result) merge(ws []*worker) {
	for _, w := range ws {
		for p := range w.stats {
			res.stats[p].merge(&w.stats[p])
		}
		res.localErrors += w.localErrors
		res.leftovers += w.leftovers
	}
}

// totalErrors counts failed RPCs and local errors. Failed cycles are not
// added on top: each is already counted by the phase that failed.
func (res *result) totalErrors() int {
	n := res.localErrors
	for _, p := range res.counted {
		n += res.stats[p].failed
	}
	return n
}

func (res *result) totalRetries() int {
	n := 0
	for p := range res.stats {
		n += res.stats[p].retries
	}
	return n
}

// run creates the pre-existing volumes, runs the measured cycles and
// deletes the pre-existing volumes again. Cancelling ctx stops new work from
// being started; cycles in flight still finish and clean up, and
// pre-existing volumes are still deleted.
func (r *runner) run(ctx context.Context) *result {
	res := &result{cfg: r.cfg, info: r.info, phases: reportedPhases,
		counted: []phase{phCreate, phStage, phPublish, phUnpublish, phUnstage, phDelete, phExistingCreate, phExistingDelete}}

	// Pre-existing volumes are untimed; their stats only feed error counts.
	existing := make([]*csi.Volume, r.cfg.e)
	existingName := func(i int) string { return fmt.Sprintf("%s-e%d", r.cfg.namePrefix, i) }
	res.merge(r.pool(ctx, r.cfg.e, func(w *worker, i int) {
		existing[i] = w.create(phExistingCreate, existingName(i))
	}))

	if ctx.Err() == nil {
		start := time.Now()
		ws := r.pool(ctx, r.cfg.n, func(w *worker, i int) {
			w.cycle(fmt.Sprintf("%s-%d", r.cfg.namePrefix, i))
		})
		res.wall = time.Since(start)
		res.merge(ws)
	}

	var created []int // indexes into existing
	for i, vol := range existing {
		if vol != nil {
			created = append(created, i)
		}
	}
	if r.cfg.keepExisting {
		if len(created) > 0 {
			fmt.Fprintf(r.log.w, "hostvol-load: keeping %d pre-existing volumes named %s-e<i>\n", len(created), r.cfg.namePrefix)
		}
	} else {
		res.merge(r.pool(context.Background(), len(created), func(w *worker, k int) {
			i := created[k]
			// deleteVolume counts and logs a failure; the run goes on.
			_ = w.deleteVolume(phExistingDelete, existingName(i), existing[i].GetVolumeId())
		}))
	}

	res.interrupted = ctx.Err() != nil
	return res
}

// pool runs fn for i in [0, n) on up to cfg.c workers, each with its own
// stats, and returns the workers. It stops handing out work once ctx is done.
func (r *runner) pool(ctx context.Context, n int, fn func(w *worker, i int)) []*worker {
	ws := make([]*worker, min(r.cfg.c, n))
	var next atomic.Int64
	var wg sync.WaitGroup
	for k := range ws {
		w := &worker{r: r}
		ws[k] = w
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(w, i)
			}
		})
	}
	wg.Wait()
	return ws
}

// worker accumulates stats without locking; results are merged at the end.
type worker struct {
	r           *runner
	stats       [numPhases]phaseStats
	localErrors int
	leftovers   int
}

// call runs one RPC for phase p, retrying codes.Aborted with exponential
// backoff. The recorded latency spans all attempts, as a CO would see it.
// RPC contexts derive from context.Background so an interrupt never cuts a
// cycle short and leaves volumes behind.
func (w *worker) call(p phase, name string, fn func(ctx context.Context) error) error {
	st := &w.stats[p]
	start := time.Now()
	var err error
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), w.r.cfg.timeout)
		err = fn(ctx)
		cancel()
		if status.Code(err) != codes.Aborted || attempt >= maxAbortedRetries {
			break
		}
		st.retries++
		time.Sleep(retryBackoff << attempt)
	}
	if err != nil {
		s := status.Convert(err)
		st.addError(s.Code(), s.Message())
		w.r.log.printf("error: phase=%s volume=%s code=%s: %s", p, name, s.Code(), s.Message())
		return err
	}
	st.samples.Add(time.Since(start))
	return nil
}

// undo makes one untimed, unrecorded attempt to revert a step that failed,
// in case it took effect anyway (e.g. a timeout after the mount was made).
func (w *worker) undo(fn func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), w.r.cfg.timeout)
	defer cancel()
	_ = fn(ctx)
}

func (w *worker) localError(name string, err error) {
	w.localErrors++
	w.r.log.printf("error: volume=%s local: %v", name, err)
}

// create calls CreateVolume and returns the volume, or nil on failure.
func (w *worker) create(p phase, name string) *csi.Volume {
	r := w.r
	var vol *csi.Volume
	// call counts and logs a failure; vol stays nil then.
	_ = w.call(p, name, func(ctx context.Context) error {
		resp, err := r.cl.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
			Name:                      name,
			CapacityRange:             r.capRange,
			VolumeCapabilities:        []*csi.VolumeCapability{r.volCap},
			Parameters:                r.cfg.params,
			AccessibilityRequirements: r.topo,
		})
		if err != nil {
			return err
		}
		if resp.GetVolume().GetVolumeId() == "" {
			return status.Error(codes.Internal, "hostvol-load: CreateVolume returned an empty volume_id")
		}
		vol = resp.GetVolume()
		return nil
	})
	return vol
}

func (w *worker) deleteVolume(p phase, name, id string) error {
	return w.call(p, name, discardResponse(w.r.cl.ctrl.DeleteVolume, &csi.DeleteVolumeRequest{VolumeId: id}))
}

// cycle runs one full volume lifecycle; its latency is recorded only if
// every step succeeded. So are those of its halves: up (create to the end of
// publish) and down (the start of unpublish to the end of delete). A half
// that fails counts as a failure of that half; down is not counted at all
// when up failed.
func (w *worker) cycle(name string) {
	start := time.Now()
	ok := false
	if vol := w.create(phCreate, name); vol != nil {
		var downStart time.Time
		ok, downStart = w.nodeCycle(name, vol, start)
		if err := w.deleteVolume(phDelete, name, vol.GetVolumeId()); err != nil {
			ok = false
		}
		if !downStart.IsZero() {
			w.stats[phDown].record(ok, downStart)
		}
	} else {
		w.stats[phUp].failed++
	}
	w.stats[phCycle].record(ok, start)
}

// record adds the time since start as a sample if ok, else counts a failure.
func (ps *phaseStats) record(ok bool, start time.Time) {
	if ok {
		ps.samples.Add(time.Since(start))
	} else {
		ps.failed++
	}
}

// targetName is the last element of the publish target path. Neither is
// created by the tool: per CSI the plugin creates the target, the CO only
// its parent directory.
func targetName(accessType string) string {
	if accessType == accessBlock {
		return "block"
	}
	return "mnt"
}

// nodeCycle optionally stages, then publishes, unpublishes and unstages vol
// under <target-dir>/<name>/. After a failure it skips the steps that depend
// on the failed one but still reverts everything that succeeded. It records
// the up phase (from start, when create began) and returns when the down
// half began: the zero time if it never did (up failed).
func (w *worker) nodeCycle(name string, vol *csi.Volume, start time.Time) (ok bool, downStart time.Time) {
	r := w.r
	dir := filepath.Join(r.targetDir, name)
	target := filepath.Join(dir, targetName(r.cfg.accessType))
	staging := ""
	if r.info.useStage {
		staging = filepath.Join(dir, "staging")
	}
	calls := r.nodeCalls(vol, staging, target)

	if err := os.Mkdir(dir, 0o750); err != nil {
		w.localError(name, err)
		w.stats[phUp].failed++
		return false, time.Time{}
	}
	defer func() { w.removePaths(target, staging, dir) }()

	if !w.stage(name, staging, calls) {
		w.stats[phUp].failed++
		return false, time.Time{}
	}
	ok, downStart = w.publishAndUnpublish(name, target, start, calls)
	if r.info.useStage {
		if err := w.call(phUnstage, name, calls.unstage); err != nil {
			ok = false
		}
	}
	return ok, downStart
}

// nodeCalls are the node RPCs of one cycle, ready for worker.call.
type nodeCalls struct {
	stage, unstage, publish, unpublish func(ctx context.Context) error
}

// nodeCalls builds the node RPCs for vol; staging is "" when staging is off.
func (r *runner) nodeCalls(vol *csi.Volume, staging, target string) nodeCalls {
	id, vctx := vol.GetVolumeId(), vol.GetVolumeContext()
	node := r.cl.node
	return nodeCalls{
		stage: discardResponse(node.NodeStageVolume, &csi.NodeStageVolumeRequest{
			VolumeId: id, StagingTargetPath: staging, VolumeCapability: r.volCap, VolumeContext: vctx,
		}),
		unstage: discardResponse(node.NodeUnstageVolume, &csi.NodeUnstageVolumeRequest{
			VolumeId: id, StagingTargetPath: staging,
		}),
		publish: discardResponse(node.NodePublishVolume, &csi.NodePublishVolumeRequest{
			VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: r.volCap, VolumeContext: vctx,
		}),
		unpublish: discardResponse(node.NodeUnpublishVolume, &csi.NodeUnpublishVolumeRequest{
			VolumeId: id, TargetPath: target,
		}),
	}
}

// discardResponse turns an RPC and its request into a step for worker.call
// that only reports the RPC's error.
func discardResponse[Req, Resp any](rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := rpc(ctx, req)
		return err
	}
}

// stage creates the staging directory and stages the volume, when staging
// is on (staging is not ""). A failed stage is undone once.
func (w *worker) stage(name, staging string, calls nodeCalls) bool {
	if staging == "" {
		return true
	}
	// The CO creates the staging directory (CSI spec).
	if err := os.Mkdir(staging, 0o750); err != nil {
		w.localError(name, err)
		return false
	}
	if err := w.call(phStage, name, calls.stage); err != nil {
		w.undo(calls.unstage)
		return false
	}
	return true
}

// publishAndUnpublish publishes the volume at target and unpublishes it
// again. It records the up phase (from start) when publish succeeds and
// returns when the down half began: the zero time if publish failed, which
// is undone once.
func (w *worker) publishAndUnpublish(name, target string, start time.Time, calls nodeCalls) (ok bool, downStart time.Time) {
	if err := w.call(phPublish, name, calls.publish); err != nil {
		w.stats[phUp].failed++
		w.undo(calls.unpublish)
		return false, time.Time{}
	}
	w.stats[phUp].samples.Add(time.Since(start))
	downStart = time.Now()
	if err := w.call(phUnpublish, name, calls.unpublish); err != nil {
		return false, downStart
	}
	if _, err := os.Lstat(target); err == nil {
		// CSI: NodeUnpublishVolume must delete what it created at target_path.
		w.leftovers++
		w.r.log.printf("warning: volume=%s target %s still exists after NodeUnpublishVolume", name, target)
	}
	return true, downStart
}

// removePaths removes the per-cycle paths, deepest first. os.Remove is not
// recursive, so a path that is still a mount point (after a failed
// unpublish, say) fails with EBUSY instead of having its contents deleted.
func (w *worker) removePaths(paths ...string) {
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.r.log.printf("warning: not removed: %v", err)
		}
	}
}

// errLog prints the first maxLoggedErrors errors/warnings to stderr; the
// summary at the end has the full counts.
type errLog struct {
	mu sync.Mutex
	w  io.Writer
	n  int
}

func (l *errLog) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	switch {
	case l.n <= maxLoggedErrors:
		fmt.Fprintf(l.w, "hostvol-load: "+format+"\n", args...)
	case l.n == maxLoggedErrors+1:
		fmt.Fprintln(l.w, "hostvol-load: further errors and warnings are only counted; see the summary")
	}
}
