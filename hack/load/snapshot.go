package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Values of --snapshot-from and --baseline.
const (
	fromPublished = "published"
	fromStaged    = "staged"

	baselineImage = "image"
	baselineTree  = "tree"
)

const (
	fillFileSize  = 64 << 20 // bytes per file written into a source volume
	fillBlockSize = 1 << 20  // unit of the generated data, regenerable alone
)

// snapshotPhases are reported by a --snapshot run: the measured steps of a
// round first, then the untimed setup and teardown, whose failures count.
var snapshotPhases = []phase{
	phFill, phSnapshot, phRestore, phCopy, phCycle,
	phCreate, phStage, phPublish, phVerify, phUnpublish, phUnstage, phDelete, phSnapshotDelete,
}

// snapshotCounted are the phases whose failures are errors of the run.
var snapshotCounted = []phase{
	phFill, phSnapshot, phRestore, phCopy,
	phCreate, phStage, phPublish, phVerify, phUnpublish, phUnstage, phDelete, phSnapshotDelete,
}

// snapshotOnly are the flags that apply only to --snapshot.
var snapshotOnly = []string{"fill", "copy-dir", "snapshot-from", "baseline", "poll"}

// checkSnapshotMode checks the flags set (by name) against --snapshot:
// those of the mode only with it, and with it what a round needs (a copy
// directory, data that fits the volume, one worker, no pre-existing
// volumes, a filesystem to write into).
func checkSnapshotMode(cfg *config, set map[string]bool) error {
	if !cfg.snapshot {
		for _, name := range snapshotOnly {
			if set[name] {
				return fmt.Errorf("--%s applies only to --snapshot", name)
			}
		}
		return nil
	}
	for _, name := range []string{"e", "keep-existing"} {
		if set[name] {
			return fmt.Errorf("--%s does not apply to --snapshot", name)
		}
	}
	if cfg.c != 1 {
		return fmt.Errorf("--c must be 1 with --snapshot: rounds run one at a time")
	}
	switch {
	case cfg.copyDir == "":
		return fmt.Errorf("--snapshot needs --copy-dir (a directory on the volumes' pool)")
	case cfg.accessType != accessMount:
		return fmt.Errorf("--snapshot writes files: --access-type must be mount")
	case cfg.fill <= 0:
		return fmt.Errorf("--fill must be > 0")
	case cfg.size > 0 && cfg.fill >= cfg.size:
		return fmt.Errorf("--fill (%d) must be smaller than --size (%d)", cfg.fill, cfg.size)
	case cfg.poll <= 0:
		return fmt.Errorf("--poll must be > 0")
	}
	switch cfg.snapshotFrom {
	case fromPublished, fromStaged:
	default:
		return fmt.Errorf("--snapshot-from must be published or staged, got %q", cfg.snapshotFrom)
	}
	switch cfg.baseline {
	case baselineImage, baselineTree:
	default:
		return fmt.Errorf("--baseline must be image or tree, got %q", cfg.baseline)
	}
	d, err := filepath.Abs(cfg.copyDir)
	if err != nil {
		return err
	}
	cfg.copyDir = d
	return nil
}

// printSnapshotMode prints what a --snapshot run will do, after the probe.
func printSnapshotMode(w io.Writer, cfg *config) {
	fmt.Fprintf(w, "snapshot fill=%d snapshot-from=%s baseline=%s copy-dir=%s poll=%s\n",
		cfg.fill, cfg.snapshotFrom, cfg.baseline, cfg.copyDir, cfg.poll)
}

// runSnapshot runs cfg.n snapshot rounds, one after the other. Each round
// creates a volume, fills it with cfg.fill bytes of incompressible data,
// and times CreateSnapshot until ready_to_use (snapshot), CreateVolume from
// the snapshot (restore) and a plain copy of the same data on the same pool
// (copy); then everything it made is deleted. Cancelling ctx stops new
// rounds; the round in flight finishes and cleans up.
func (r *runner) runSnapshot(ctx context.Context) *result {
	res := &result{cfg: r.cfg, info: r.info, phases: snapshotPhases, counted: snapshotCounted}
	start := time.Now()
	ws := r.pool(ctx, r.cfg.n, func(w *worker, i int) {
		w.snapshotRound(i, fmt.Sprintf("%s-%d", r.cfg.namePrefix, i))
	})
	res.wall = time.Since(start)
	res.merge(ws)
	res.interrupted = ctx.Err() != nil
	return res
}

// snapshotRound is one round; its cycle phase is recorded only if every
// step succeeded. It prints one "round=" line to stdout.
func (w *worker) snapshotRound(i int, name string) {
	start := time.Now()
	ok := false
	defer func() { w.stats[phCycle].record(ok, start) }()
	r := w.r
	src := w.create(phCreate, name)
	if src == nil {
		return
	}
	defer func() { _ = w.deleteVolume(phDelete, name, src.GetVolumeId()) }()
	dir := filepath.Join(r.targetDir, name)
	m, err := w.mountVolume(name, src)
	if err != nil {
		return
	}
	defer func() {
		if !m.release() {
			ok = false
		}
		w.removePaths(dir)
	}()
	plan := fillPlan(r.cfg.fill, fillFileSize)
	seed := fillSeed(r.cfg.namePrefix, i)
	if w.step(phFill, name, func(context.Context) error { return writeFill(m.target, plan, seed) }) != nil {
		return
	}
	if w.baselineCopy(name, m) != nil {
		return
	}
	if r.cfg.snapshotFrom == fromStaged && !m.unpublish() {
		return
	}
	snapName := name + "-snap"
	snap, calls := w.snapshot(snapName, src.GetVolumeId())
	if snap == nil {
		return
	}
	defer func() {
		if w.call(phSnapshotDelete, snapName, discardResponse(r.cl.ctrl.DeleteSnapshot,
			&csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshotId()})) != nil {
			ok = false
		}
	}()
	restoreName := name + "-restore"
	restored := w.restore(restoreName, snap.GetSnapshotId())
	if restored == nil {
		return
	}
	restoreOK := w.verifyRestore(restoreName, restored, plan, seed)
	if err := w.deleteVolume(phDelete, restoreName, restored.GetVolumeId()); err != nil || !restoreOK {
		return
	}
	ok = true
	// The worker's own samples are never sorted: the last is this round's.
	st := func(p phase) float64 { return w.stats[p].samples.d[w.stats[p].samples.Len()-1].Seconds() }
	fmt.Fprintf(w.out(), "round=%d fill_s=%.3f snapshot_s=%.3f snapshot_calls=%d restore_s=%.3f copy_s=%.3f\n",
		i, st(phFill), st(phSnapshot), calls, st(phRestore), st(phCopy))
}

// out is where the per-round lines go.
func (w *worker) out() io.Writer {
	if w.r.stdout != nil {
		return w.r.stdout
	}
	return io.Discard
}

// snapshot calls CreateSnapshot until the snapshot is ready_to_use, as the
// external-snapshotter does, every cfg.poll, within cfg.timeout in all. It
// records the time from the first call to the ready answer and returns the
// snapshot (nil on failure) and the number of calls made. Aborted is
// answered by calling again, as for a snapshot not ready yet.
func (w *worker) snapshot(name, sourceID string) (*csi.Snapshot, int) {
	r := w.r
	req := &csi.CreateSnapshotRequest{SourceVolumeId: sourceID, Name: name}
	st := &w.stats[phSnapshot]
	start := time.Now()
	deadline := start.Add(r.cfg.timeout)
	calls := 0
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		resp, err := r.cl.ctrl.CreateSnapshot(ctx, req)
		cancel()
		calls++
		if err == nil && resp.GetSnapshot().GetReadyToUse() {
			st.samples.Add(time.Since(start))
			return resp.GetSnapshot(), calls
		}
		if err != nil && status.Code(err) != codes.Aborted {
			s := status.Convert(err)
			st.addError(s.Code(), s.Message())
			r.log.printf("error: phase=%s snapshot=%s code=%s: %s", phSnapshot, name, s.Code(), s.Message())
			w.undoSnapshot(resp, req)
			return nil, calls
		}
		if status.Code(err) == codes.Aborted {
			st.retries++
		}
		if time.Now().Add(r.cfg.poll).After(deadline) {
			st.addError(codes.DeadlineExceeded, fmt.Sprintf("not ready_to_use after %d calls in %s", calls, r.cfg.timeout))
			r.log.printf("error: phase=%s snapshot=%s: not ready_to_use after %d calls in %s", phSnapshot, name, calls, r.cfg.timeout)
			w.undoSnapshot(resp, req)
			return nil, calls
		}
		time.Sleep(r.cfg.poll)
	}
}

// undoSnapshot deletes a snapshot that a failed snapshot step may have
// made: by the ID answered, else by asking for it again by name.
func (w *worker) undoSnapshot(resp *csi.CreateSnapshotResponse, req *csi.CreateSnapshotRequest) {
	id := resp.GetSnapshot().GetSnapshotId()
	if id == "" {
		ctx, cancel := context.WithTimeout(context.Background(), w.r.cfg.timeout)
		again, err := w.r.cl.ctrl.CreateSnapshot(ctx, req)
		cancel()
		if err != nil {
			return
		}
		id = again.GetSnapshot().GetSnapshotId()
	}
	w.undo(discardResponse(w.r.cl.ctrl.DeleteSnapshot, &csi.DeleteSnapshotRequest{SnapshotId: id}))
}

// restore calls CreateVolume from the snapshot, with the source's size,
// parameters and capability, and returns the volume or nil.
func (w *worker) restore(name, snapID string) *csi.Volume {
	r := w.r
	req := &csi.CreateVolumeRequest{
		Name:                      name,
		CapacityRange:             r.capRange,
		VolumeCapabilities:        []*csi.VolumeCapability{r.volCap},
		Parameters:                r.cfg.params,
		AccessibilityRequirements: r.topo,
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snapID},
		}},
	}
	var vol *csi.Volume
	_ = w.call(phRestore, name, func(ctx context.Context) error {
		resp, err := r.cl.ctrl.CreateVolume(ctx, req)
		if err != nil {
			return err
		}
		vol = resp.GetVolume()
		return nil
	})
	if vol == nil {
		// In case CreateVolume took effect before it failed: the same
		// request answers with the volume, which is then deleted.
		w.undo(func(ctx context.Context) error {
			resp, err := r.cl.ctrl.CreateVolume(ctx, req)
			if err != nil {
				return err
			}
			_, err = r.cl.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: resp.GetVolume().GetVolumeId()})
			return err
		})
	}
	return vol
}

// verifyRestore mounts the restored volume and checks that it holds what
// was written into the source (untimed, phase verify).
func (w *worker) verifyRestore(name string, vol *csi.Volume, plan []int64, seed [32]byte) bool {
	dir := filepath.Join(w.r.targetDir, name)
	m, err := w.mountVolume(name, vol)
	if err != nil {
		return false
	}
	ok := w.step(phVerify, name, func(context.Context) error { return checkFill(m.target, plan, seed) }) == nil
	if !m.release() {
		ok = false
	}
	w.removePaths(dir)
	return ok
}

// baselineCopy copies the source's data with cp into a new path under
// cfg.copyDir and syncs that filesystem (phase copy), then removes the
// copy. The data is the image of the loop device whose filesystem is
// mounted at the staging path, or at the target without staging
// (--baseline image), or the tree at the target (--baseline tree).
func (w *worker) baselineCopy(name string, m *mounted) error {
	cfg := w.r.cfg
	dst := filepath.Join(cfg.copyDir, name)
	var args []string
	switch cfg.baseline {
	case baselineImage:
		at := m.staging
		if at == "" {
			at = m.target
		}
		img, err := mountedImage(at)
		if err != nil {
			w.localError(name, err)
			return err
		}
		args = []string{"--reflink=never", "--sparse=always", img, dst + ".img"}
		dst += ".img"
	default:
		args = []string{"-a", "--reflink=never", m.target, dst}
	}
	defer func() {
		if err := os.RemoveAll(dst); err != nil {
			w.localError(name, err)
		}
	}()
	return w.step(phCopy, name, func(ctx context.Context) error {
		if _, err := runCommand(ctx, "cp", args...); err != nil {
			return err
		}
		return syncFS(cfg.copyDir)
	})
}

// syncFS flushes the filesystem that holds path (syncfs(2)).
func syncFS(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: path, Err: err}
	}
	return nil
}

// mountedImage is the file behind the loop device mounted at path.
func mountedImage(path string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	m, err := mountAt(f, path)
	if err != nil {
		return "", err
	}
	if m.root != "/" || !strings.HasPrefix(m.source, "/dev/loop") {
		return "", fmt.Errorf("%s: not a whole filesystem on a loop device (source %s, root %s): use --baseline tree", path, m.source, m.root)
	}
	return loopBackingFile("/sys/block", m.source)
}

// mountEntry is what mountAt reads from one line of mountinfo.
type mountEntry struct {
	root, fsType, source string
}

// mountAt finds the last mount at path in a mountinfo listing (the one on
// top): "ID parent major:minor root mountpoint options... - fstype source
// superoptions".
func mountAt(r io.Reader, path string) (mountEntry, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var found *mountEntry
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != path {
			continue
		}
		sep := -1
		for i := 5; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fields) {
			return mountEntry{}, fmt.Errorf("mountinfo: malformed line for %s: %q", path, sc.Text())
		}
		found = &mountEntry{root: unescapeMountinfo(fields[3]), fsType: fields[sep+1], source: unescapeMountinfo(fields[sep+2])}
	}
	if err := sc.Err(); err != nil {
		return mountEntry{}, err
	}
	if found == nil {
		return mountEntry{}, fmt.Errorf("%s is not a mount point", path)
	}
	return *found, nil
}

// loopBackingFile reads the backing file of loop device dev ("/dev/loopN")
// from sysBlock (/sys/block).
func loopBackingFile(sysBlock, dev string) (string, error) {
	name := filepath.Base(dev)
	if !strings.HasPrefix(name, "loop") || name == "loop" {
		return "", fmt.Errorf("%s is not a loop device", dev)
	}
	b, err := os.ReadFile(filepath.Join(sysBlock, name, "loop", "backing_file"))
	if err != nil {
		return "", fmt.Errorf("backing file of %s: %w", dev, err)
	}
	f := strings.TrimSuffix(string(b), "\n")
	if !filepath.IsAbs(f) {
		return "", fmt.Errorf("backing file of %s: %q is not an absolute path", dev, f)
	}
	if strings.HasSuffix(f, " (deleted)") {
		return "", fmt.Errorf("backing file of %s was deleted: %s", dev, f)
	}
	return f, nil
}

// fillPlan splits total bytes into files of per bytes each, the last one
// smaller if per does not divide total.
func fillPlan(total, per int64) []int64 {
	if total <= 0 || per <= 0 {
		return nil
	}
	plan := make([]int64, 0, (total+per-1)/per)
	for left := total; left > 0; left -= per {
		plan = append(plan, min(left, per))
	}
	return plan
}

// fillSeed is the seed of a round's data: the name prefix (random per run
// by default) and the round.
func fillSeed(prefix string, round int) [32]byte {
	var s [32]byte
	copy(s[:24], prefix)
	binary.LittleEndian.PutUint64(s[24:], uint64(round))
	return s
}

// fillBlock fills b with the data of block k of file f: ChaCha8 output
// keyed by seed, file and block, so that any block can be regenerated on
// its own to check it. It does not compress.
func fillBlock(b []byte, seed [32]byte, f, k int) {
	binary.LittleEndian.PutUint32(seed[16:], uint32(f))
	binary.LittleEndian.PutUint32(seed[20:], uint32(k))
	_, _ = rand.NewChaCha8(seed).Read(b) // never fails
}

func fillName(f int) string { return fmt.Sprintf("fill-%03d", f) }

// writeFill writes the files of plan into dir, each fsynced.
func writeFill(dir string, plan []int64, seed [32]byte) error {
	buf := make([]byte, fillBlockSize)
	for f, size := range plan {
		if err := writeFillFile(filepath.Join(dir, fillName(f)), size, buf, seed, f); err != nil {
			return err
		}
	}
	return nil
}

func writeFillFile(path string, size int64, buf []byte, seed [32]byte, f int) error {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	for k := 0; int64(k)*fillBlockSize < size; k++ {
		b := buf[:min(int64(fillBlockSize), size-int64(k)*fillBlockSize)]
		fillBlock(b, seed, f, k)
		if _, err := file.Write(b); err != nil {
			file.Close()
			return err
		}
	}
	if err := file.Sync(); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}

// checkFill checks that dir holds the files of plan, each of its size,
// with the right data in its first and last block.
func checkFill(dir string, plan []int64, seed [32]byte) error {
	want := make([]byte, fillBlockSize)
	got := make([]byte, fillBlockSize)
	for f, size := range plan {
		path := filepath.Join(dir, fillName(f))
		file, err := os.Open(path)
		if err != nil {
			return err
		}
		err = checkFillFile(file, size, want, got, seed, f)
		file.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

func checkFillFile(file *os.File, size int64, want, got []byte, seed [32]byte, f int) error {
	fi, err := file.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != size {
		return fmt.Errorf("size %d, want %d", fi.Size(), size)
	}
	last := int((size - 1) / fillBlockSize)
	for _, k := range []int{0, last} {
		n := min(int64(fillBlockSize), size-int64(k)*fillBlockSize)
		fillBlock(want[:n], seed, f, k)
		if _, err := file.ReadAt(got[:n], int64(k)*fillBlockSize); err != nil {
			return err
		}
		if string(want[:n]) != string(got[:n]) {
			return fmt.Errorf("block %d differs from what was written", k)
		}
	}
	return nil
}

// mounted is a volume staged (when staging is on) and published by
// mountVolume, with what it takes to release it.
type mounted struct {
	w                 *worker
	name              string
	staging, target   string
	calls             nodeCalls
	published, staged bool
}

// mountVolume stages and publishes vol under <target-dir>/<name>/. On
// failure it releases what it did and returns the error.
func (w *worker) mountVolume(name string, vol *csi.Volume) (*mounted, error) {
	r := w.r
	dir := filepath.Join(r.targetDir, name)
	m := &mounted{w: w, name: name, target: filepath.Join(dir, targetName(r.cfg.accessType))}
	if r.info.useStage {
		m.staging = filepath.Join(dir, "staging")
	}
	m.calls = r.nodeCalls(vol, m.staging, m.target)
	if err := os.Mkdir(dir, 0o750); err != nil {
		w.localError(name, err)
		return nil, err
	}
	if !w.stage(name, m.staging, m.calls) {
		w.removePaths(m.staging, dir)
		return nil, errors.New("stage failed")
	}
	m.staged = true
	if err := w.call(phPublish, name, m.calls.publish); err != nil {
		w.undo(m.calls.unpublish)
		m.release()
		w.removePaths(dir)
		return nil, err
	}
	m.published = true
	return m, nil
}

// unpublish unpublishes m, keeping it staged.
func (m *mounted) unpublish() bool {
	if !m.published {
		return true
	}
	m.published = false
	return m.w.call(phUnpublish, m.name, m.calls.unpublish) == nil
}

// release unpublishes and unstages m (what is still done) and removes the
// staging directory; the caller removes the volume's directory.
func (m *mounted) release() bool {
	ok := m.unpublish()
	if m.staged && m.staging != "" {
		m.staged = false
		if m.w.call(phUnstage, m.name, m.calls.unstage) != nil {
			ok = false
		}
		m.w.removePaths(m.staging)
	}
	return ok
}
