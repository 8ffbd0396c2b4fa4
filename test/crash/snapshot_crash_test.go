//go:build linux

package crash

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const (
	snapName  = "crash-snap"
	srcName   = "crash-src"
	newName   = "crash-new" // the restore or clone the crash interrupts
	blockData = 64 << 10    // bytes of a block volume the tests write and compare
	// thawBound bounds a write into a staged filesystem that should not
	// be frozen: a frozen one fails the test instead of hanging it.
	thawBound = 10 * time.Second
	// fiThaw is FITHAW, _IOWR('X', 120, int), which x/sys/unix lacks.
	fiThaw = 0xc0045878
)

// snapRecord is the part of a snapshot record (<state>/snapshots/<ID>.json)
// these tests look at.
type snapRecord struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	SourceVolumeID string `json:"sourceVolumeID"`
	Kind           string `json:"kind"`
	Method         string `json:"method"`
	State          string `json:"state"`
	Frozen         string `json:"frozen"`
	SubvolumeID    uint64 `json:"subvolumeID"`
}

func (e *env) snapshotRecordsDir() string { return filepath.Join(e.stateDir, "snapshots") }

// snapshotData is where snapshot id of a volume of kind keeps its data.
func (e *env) snapshotData(id, kind string) string {
	if kind == "loop" || kind == "block" {
		return e.layout.Pool.SnapshotImagePath(id)
	}
	return e.layout.Pool.SnapshotDirPath(id)
}

// readSnapshotRecords reads every snapshot record; a file that is not one
// (a temporary file of an interrupted write, an undecodable record) fails
// the test.
func readSnapshotRecords(t *testing.T, e *env) map[string]snapRecord {
	t.Helper()
	out := map[string]snapRecord{}
	ents, err := os.ReadDir(e.snapshotRecordsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return out
	}
	require.NoError(t, err)
	for _, en := range ents {
		id, ok := testutil.RecordKey(en.Name())
		require.True(t, ok && en.Type().IsRegular(), "unexpected file %s in %s", en.Name(), e.snapshotRecordsDir())
		b, err := os.ReadFile(filepath.Join(e.snapshotRecordsDir(), en.Name()))
		require.NoError(t, err)
		var r snapRecord
		require.NoError(t, json.Unmarshal(b, &r), "snapshot record %s", en.Name())
		require.Equal(t, id, r.ID, "snapshot record file %s", en.Name())
		out[id] = r
	}
	return out
}

// poolSnapshots lists the snapshot IDs that have data in the pool.
func poolSnapshots(t *testing.T, e *env) map[string]string {
	t.Helper()
	dir := filepath.Dir(e.layout.Pool.SnapshotDirPath("x"))
	out := map[string]string{}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return out
	}
	require.NoError(t, err)
	for _, en := range ents {
		out[strings.TrimSuffix(en.Name(), filepath.Ext(e.layout.Pool.SnapshotImagePath("x")))] = en.Name()
	}
	return out
}

// listSnapshots returns every snapshot ListSnapshots reports, following
// pages.
func (d *driverProc) listSnapshots() []*csi.Snapshot {
	d.t.Helper()
	var out []*csi.Snapshot
	token := ""
	for range 1000 {
		ctx, cancel := ctxRPC()
		resp, err := d.client.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 3, StartingToken: token})
		cancel()
		require.NoError(d.t, err, "ListSnapshots")
		for _, en := range resp.GetEntries() {
			out = append(out, en.GetSnapshot())
		}
		if token = resp.GetNextToken(); token == "" {
			return out
		}
	}
	require.FailNow(d.t, "ListSnapshots never ended")
	return nil
}

func (d *driverProc) deleteSnapshot(id string) error {
	ctx, cancel := ctxRPC()
	defer cancel()
	_, err := d.client.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id})
	return err
}

// requireSnapshotsConsistent is requireConsistent for snapshots too: every
// snapshot record is ready, unfrozen and has its data, all data in the
// pool's snapshots/ has a ready record, and ListSnapshots reports exactly
// the records, all ready to use. It returns the listed snapshot IDs,
// sorted, and the volume records.
func requireSnapshotsConsistent(t *testing.T, e *env, d *driverProc) ([]string, map[string]record) {
	t.Helper()
	vols := requireConsistent(t, e, d)
	recs := readSnapshotRecords(t, e)
	data := poolSnapshots(t, e)
	var ids []string
	for id, r := range recs {
		require.Equal(t, "ready", r.State, "snapshot %s (%q) after restart; data: %q", id, r.Name, data[id])
		require.Empty(t, r.Frozen, "ready snapshot %s names a frozen filesystem", id)
		_, err := os.Lstat(e.snapshotData(id, r.Kind))
		require.NoError(t, err, "ready snapshot %s (%s, %s) has no data", id, r.Kind, r.Method)
		ids = append(ids, id)
	}
	for id, name := range data {
		_, ok := recs[id]
		require.True(t, ok, "snapshot data %s in the pool has no record", name)
	}
	sort.Strings(ids)
	var listed []string
	for _, s := range d.listSnapshots() {
		require.True(t, s.GetReadyToUse(), "ListSnapshots reports snapshot %s not ready to use", s.GetSnapshotId())
		listed = append(listed, s.GetSnapshotId())
	}
	sort.Strings(listed)
	require.Equal(t, ids, listed, "ListSnapshots disagrees with the snapshot records on disk")
	return listed, vols
}

// snapSource is a kind of volume on a kind of pool that the tests take
// snapshots and clones of.
type snapSource struct {
	name string
	kind testutil.Kind
	size int64
	// staged: the source is staged (NodeStageVolume) throughout, so that a
	// reflink freezes its filesystem.
	staged bool
	newEnv func(t *testing.T) *env
}

var snapSources = map[string]snapSource{
	// A plain directory pool: snapshots, restores and clones are copies.
	"dir": {name: "dir", kind: testutil.DirKind, size: 16 << 20, newEnv: func(t *testing.T) *env { return newEnv(t) }},
	// btrfs with quotas: subvolume snapshots.
	"btrfs": {name: "btrfs", kind: testutil.Kind{Name: "dir"}, size: 16 << 20, newEnv: newBtrfsEnv},
	// XFS with reflink: FICLONE of the image, the staged ext4 frozen.
	"loop-xfs":  {name: "loop-xfs", kind: testutil.Ext4Kind, size: 32 << 20, staged: true, newEnv: newXFSEnv},
	"block-xfs": {name: "block-xfs", kind: testutil.BlockKind, size: 16 << 20, newEnv: newXFSEnv},
}

// newXFSEnv is an env whose pool is an XFS filesystem with reflink, whose
// mounts and loop devices (the pool's, the staged volumes') are released
// when the test ends.
func newXFSEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	pfs := testutil.NewPoolFS(t, dir, testutil.PoolFSOptions{Type: "xfs", Size: 1 << 30, Mkfs: []string{"-m", "reflink=1"}})
	e := newEnvOn(t, pfs.Path)
	e.params = nil
	testutil.CleanupUnder(t, e.dir)
	return e
}

// snapCrashCase is a failpoint in an operation on a source.
type snapCrashCase struct {
	point  string
	op     string // snapshot, delete-snapshot, restore, clone
	source string // a key of snapSources
}

// frozen says whether the crash leaves the source's filesystem frozen: the
// failpoint is between FIFREEZE and FITHAW of a staged source's reflink
// (the reflink's own copy step is inside the freeze too).
func (tc snapCrashCase) frozen() bool {
	return snapSources[tc.source].staged && (tc.op == "snapshot" || tc.op == "clone") &&
		(tc.point == "snapshot-frozen" || tc.point == "snapshot-mid-copy")
}

// snapCrashCases: each failpoint with every operation and source that
// passes it. A copy-method snapshot (dir) has no snapshot-after-data (its
// background copy marks it ready), btrfs none of snapshot-mid-copy (a
// subvolume snapshot is one ioctl), only a staged source is frozen.
var snapCrashCases = func() []snapCrashCase {
	var out []snapCrashCase
	add := func(point, op string, sources ...string) {
		for _, s := range sources {
			out = append(out, snapCrashCase{point: point, op: op, source: s})
		}
	}
	add("snapshot-after-intent", "snapshot", "dir", "btrfs", "loop-xfs", "block-xfs")
	add("snapshot-frozen", "snapshot", "loop-xfs")
	add("snapshot-mid-copy", "snapshot", "dir", "loop-xfs", "block-xfs")
	add("snapshot-after-data", "snapshot", "btrfs", "loop-xfs", "block-xfs")
	add("snapshot-delete-after-intent", "delete-snapshot", "dir", "btrfs", "loop-xfs")
	add("snapshot-delete-after-data", "delete-snapshot", "dir", "btrfs", "block-xfs")
	add("create-after-intent", "restore", "dir", "btrfs", "block-xfs")
	add("create-after-data", "restore", "dir", "btrfs", "loop-xfs")
	add("snapshot-mid-copy", "restore", "dir", "loop-xfs", "block-xfs")
	add("create-after-intent", "clone", "dir", "btrfs", "loop-xfs", "block-xfs")
	add("create-after-data", "clone", "btrfs", "loop-xfs")
	add("snapshot-mid-copy", "clone", "dir", "loop-xfs", "block-xfs")
	add("snapshot-frozen", "clone", "loop-xfs")
	return out
}()

// TestCrashSnapshotPoints checks that snapCrashCases cover exactly
// failpoint.SnapshotPoints, and only name CreateVolume's failpoints
// otherwise.
func TestCrashSnapshotPoints(t *testing.T) {
	seen := map[string]bool{}
	var snap []string
	for _, c := range snapCrashCases {
		if strings.HasPrefix(c.point, "snapshot-") {
			if !seen[c.point] {
				snap = append(snap, c.point)
			}
			seen[c.point] = true
			continue
		}
		require.Contains(t, failpoint.Points, c.point, "case %+v", c)
	}
	require.ElementsMatch(t, failpoint.SnapshotPoints, snap, "failpoint.SnapshotPoints and snapCrashCases must list the same failpoints")
}

// TestCrashSnapshot kills the driver at each failpoint of CreateSnapshot
// and DeleteSnapshot of a directory volume on a plain pool (a background
// copy) and on btrfs (a subvolume snapshot), of a staged loop volume on an
// XFS reflink pool (a reflink with the filesystem frozen) and of a block
// volume there. After the restart nothing is frozen, nothing half-made is
// listed or left on disk (no qgroup either), every snapshot listed
// restores the data the source had when it was taken, and the CO's retry
// of the call succeeds.
func TestCrashSnapshot(t *testing.T) { runSnapCrashCases(t, "snapshot", "delete-snapshot") }

// TestCrashRestore is TestCrashSnapshot for CreateVolume from a snapshot.
func TestCrashRestore(t *testing.T) { runSnapCrashCases(t, "restore") }

// TestCrashClone is TestCrashSnapshot for CreateVolume from a volume; a
// staged loop source is frozen for the clone's reflink, and the clone's
// "creating" record names it.
func TestCrashClone(t *testing.T) { runSnapCrashCases(t, "clone") }

func runSnapCrashCases(t *testing.T, ops ...string) {
	testutil.RequireRootAndTools(t, "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "btrfs")
	for _, tc := range snapCrashCases {
		if !contains(ops, tc.op) {
			continue
		}
		t.Run(tc.op+"/"+tc.point+"/"+tc.source, func(t *testing.T) { crashSnapshotOp(t, tc) })
	}
}

// content is what a volume holds, as the tests compare it: a directory
// tree's files by path, or a block volume's first bytes.
type content map[string]string

// writeSource writes into the source: fillVolume's tree, or for tag !=
// "" one more file (block: the first bytes, overwritten).
func writeSource(t *testing.T, e *env, src snapSource, v *testutil.Volume, tag string) {
	t.Helper()
	switch {
	case src.kind.Block:
		b := bytes.Repeat([]byte("initial-"+tag), blockData)[:blockData]
		f, err := os.OpenFile(e.layout.ImagePath(v.ID), os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt(b, 0)
		require.NoError(t, err)
		require.NoError(t, f.Sync())
		require.NoError(t, f.Close())
		return
	case src.staged:
		require.True(t, v.Staged)
	}
	dir := volumeTree(e, src, v)
	if tag == "" {
		_, err := fillVolume(dir)
		require.NoError(t, err)
		return
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, tag+".txt"), []byte(tag), 0o644))
}

// volumeTree is where a filesystem volume's files are seen: its staging
// mount, or its directory.
func volumeTree(e *env, src snapSource, v *testutil.Volume) string {
	if src.kind.FSType != "" {
		return v.Staging
	}
	return e.layout.DataDir(v.ID)
}

// readContent reads what a volume holds; a loop volume that is not staged
// is staged for it, and unstaged after.
func readContent(t *testing.T, e *env, src snapSource, v *testutil.Volume) content {
	t.Helper()
	if src.kind.Block {
		f, err := os.Open(e.layout.ImagePath(v.ID))
		require.NoError(t, err)
		defer f.Close()
		b := make([]byte, blockData)
		_, err = f.ReadAt(b, 0)
		require.NoError(t, err)
		return content{"": string(b)}
	}
	if src.kind.FSType != "" && !v.Staged {
		v.Stage()
		defer v.Unstage()
	}
	root := volumeTree(e, src, v)
	c := content{}
	require.NoError(t, filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		c[rel] = string(b)
		return nil
	}))
	return c
}

// requireRestores restores snapshot id into a new volume, checks that it
// holds want and deletes it.
func requireRestores(t *testing.T, e *env, d *driverProc, src snapSource, id string, want content) {
	t.Helper()
	r := testutil.CreateVolumeFrom(t, d, e.dir, src.kind, "check-"+id, src.size, testutil.SnapshotSource(id))
	require.Equal(t, want, readContent(t, e, src, r), "a volume restored from snapshot %s", id)
	r.Delete()
}

// newVolumeReq is the interrupted restore's or clone's request.
func newVolumeReq(src snapSource, from *csi.VolumeContentSource) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:                newName,
		CapacityRange:       &csi.CapacityRange{RequiredBytes: src.size},
		VolumeCapabilities:  []*csi.VolumeCapability{src.kind.Capability()},
		Parameters:          src.kind.Params,
		VolumeContentSource: from,
	}
}

// frozenProbe writes into a staged filesystem in the background: a write
// into a frozen one blocks until it is thawed.
type frozenProbe struct {
	path string
	done chan error
}

func startProbe(staging, name string) *frozenProbe {
	p := &frozenProbe{path: filepath.Join(staging, name), done: make(chan error, 1)}
	go func() { p.done <- os.WriteFile(p.path, []byte(name), 0o644) }()
	return p
}

// requireDone fails the test if the write does not complete within
// thawBound.
func (p *frozenProbe) requireDone(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-p.done:
		require.NoError(t, err, "write into %s", p.path)
	case <-time.After(thawBound):
		require.FailNow(t, "filesystem frozen", "a write into %s did not complete in %v %s", p.path, thawBound, what)
	}
}

// requireThawed checks that the staged filesystem at staging takes writes
// and is not frozen (FITHAW answers EINVAL).
func requireThawed(t *testing.T, staging, what string) {
	t.Helper()
	startProbe(staging, "probe-thawed").requireDone(t, what)
	fd, err := unix.Open(staging, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.ErrorIs(t, unix.IoctlSetInt(fd, fiThaw, 0), unix.EINVAL, "FITHAW of %s %s: it was frozen", staging, what)
	require.NoError(t, os.Remove(filepath.Join(staging, "probe-thawed")))
}

// crashSnapshotOp kills the driver at tc's failpoint in tc's operation,
// restarts it, checks what it left, retries the operation, and removes
// everything.
func crashSnapshotOp(t *testing.T, tc snapCrashCase) {
	src := snapSources[tc.source]
	e := src.newEnv(t)
	d := e.start("")
	d.waitReady(e)
	v := testutil.CreateVolume(t, d, e.dir, src.kind, srcName, src.size)
	if src.staged {
		v.Stage()
		// Whatever happens, the filesystem is thawed before the mounts
		// are released (cleanups run last-registered first).
		t.Cleanup(func() { _ = fsutil.Thaw(v.Staging) })
	}
	writeSource(t, e, src, v, "")
	want := readContent(t, e, src, v)
	snapID := ""
	if tc.op == "delete-snapshot" || tc.op == "restore" {
		snapID = v.Snapshot(snapName).GetSnapshotId()
	}
	d.stop()

	// The operation, killed at the failpoint.
	d = e.start(tc.point)
	d.waitReady(e)
	v.Src = d
	var err error
	switch tc.op {
	case "snapshot":
		_, err = v.SnapshotErr(snapName, nil)
	case "delete-snapshot":
		err = d.deleteSnapshot(snapID)
	case "restore", "clone":
		from := testutil.SnapshotSource(snapID)
		if tc.op == "clone" {
			from = testutil.VolumeSource(v.ID)
		}
		ctx, cancel := ctxRPC()
		_, err = d.client.CreateVolume(ctx, newVolumeReq(src, from))
		cancel()
	}
	requireConnectionLost(t, err, tc.op)
	d.requireKilled()
	s := readDisk(t, e)
	t.Logf("after SIGKILL at %s: %s; snapshot records %+v; snapshot data %v", tc.point, s.summary(), s.snapshots, poolSnapshots(t, e))

	switch tc.op {
	case "snapshot", "delete-snapshot":
		// The interrupted snapshot is on record, not ready: start-up must
		// settle it.
		require.Len(t, s.snapshots, 1, "snapshot records after SIGKILL at %s", tc.point)
		for _, r := range s.snapshots {
			require.NotEqual(t, "ready", r.State, "snapshot record after SIGKILL at %s", tc.point)
		}
	}
	var probe *frozenProbe
	if tc.frozen() {
		// The record names the frozen filesystem, so that start-up thaws
		// it; a write into it waits for that.
		switch tc.op {
		case "snapshot":
			require.Len(t, s.snapshots, 1)
			for _, r := range s.snapshots {
				require.Equal(t, v.Staging, r.Frozen, "the snapshot's record names the frozen filesystem")
			}
		case "clone":
			var frozen []string
			for _, r := range s.records {
				if r.Frozen != "" {
					frozen = append(frozen, r.Frozen)
				}
			}
			require.Equal(t, []string{v.Staging}, frozen, "the clone's creating record names its frozen source")
		}
		probe = startProbe(v.Staging, "probe-frozen")
		select {
		case err := <-probe.done:
			require.Failf(t, "not frozen", "a write into the staged source completed (%v) after a SIGKILL at %s, which comes with its filesystem frozen", err, tc.point)
		case <-time.After(200 * time.Millisecond):
		}
	}

	d = e.start("")
	d.waitReady(e)
	v.Src = d
	if src.staged {
		if probe != nil {
			probe.requireDone(t, "after the restart")
			require.NoError(t, os.Remove(probe.path))
		}
		requireThawed(t, v.Staging, "after the restart")
	}
	snaps, vols := requireSnapshotsConsistent(t, e, d)
	require.Len(t, vols, 1, "only the source volume is left: an interrupted restore or clone is rolled back")
	require.Contains(t, vols, v.ID)
	if tc.op == "restore" {
		require.Equal(t, []string{snapID}, snaps, "the snapshot being restored is left")
	} else {
		require.Empty(t, snaps, "an interrupted snapshot is rolled back and an interrupted deletion finished")
	}
	for _, id := range snaps {
		requireRestores(t, e, d, src, id, want)
	}

	// The CO's retry of the call it got no answer to.
	switch tc.op {
	case "snapshot":
		snapID = v.Snapshot(snapName).GetSnapshotId()
		writeSource(t, e, src, v, "later")
		requireSnapshotsConsistent(t, e, d)
		requireRestores(t, e, d, src, snapID, want)
		require.NoError(t, d.deleteSnapshot(snapID))
	case "delete-snapshot":
		require.NoError(t, d.deleteSnapshot(snapID), "DeleteSnapshot retry")
	case "restore", "clone":
		from := testutil.SnapshotSource(snapID)
		if tc.op == "clone" {
			from = testutil.VolumeSource(v.ID)
		}
		ctx, cancel := ctxRPC()
		resp, err := d.client.CreateVolume(ctx, newVolumeReq(src, from))
		cancel()
		require.NoError(t, err, "CreateVolume retry")
		r := &testutil.Volume{
			T: t, Src: d, Kind: src.kind, Name: newName, ID: resp.GetVolume().GetVolumeId(),
			Staging: filepath.Join(e.dir, "mnt", newName, "staging"),
		}
		require.NoError(t, os.MkdirAll(r.Staging, 0o750))
		requireSnapshotsConsistent(t, e, d)
		require.Equal(t, want, readContent(t, e, src, r), "the %s made by the retry", tc.op)
		r.Delete()
		if snapID != "" {
			require.NoError(t, d.deleteSnapshot(snapID))
		}
	}
	snaps, _ = requireSnapshotsConsistent(t, e, d)
	require.Empty(t, snaps)
	require.Empty(t, poolSnapshots(t, e), "snapshot data left")
	if src.staged {
		requireThawed(t, v.Staging, "at the end")
		v.Unstage()
	}
	v.Delete()
	requireEmpty(t, e, d)
	require.Empty(t, readSnapshotRecords(t, e), "snapshot records left")
	if src.kind.HasImage() {
		imgs, err := os.ReadDir(e.layout.ImagesDir())
		require.NoError(t, err)
		require.Empty(t, imgs, "images left")
		require.Empty(t, testutil.MountsUnder(t, e.dir), "mounts left")
		loops, err := testutil.LoopsUnder(e.layout.ImagesDir())
		require.NoError(t, err)
		require.Empty(t, loops, "loop devices left")
	}
	d.stop()
}

// TestCrashSnapshotRecovery kills the driver again while its start-up
// rolls back a snapshot an earlier SIGKILL left half-made: after its data
// is gone, before its qgroup and record are. The next start-up still ends
// consistent (no qgroup outlives the subvolume) and the CO's retry of
// CreateSnapshot succeeds.
func TestCrashSnapshotRecovery(t *testing.T) {
	testutil.RequireRootAndTools(t, "mkfs.btrfs", "btrfs")
	for _, source := range []string{"dir", "btrfs"} {
		t.Run(source, func(t *testing.T) {
			src := snapSources[source]
			e := src.newEnv(t)
			d := e.start("")
			d.waitReady(e)
			v := testutil.CreateVolume(t, d, e.dir, src.kind, srcName, src.size)
			writeSource(t, e, src, v, "")
			want := readContent(t, e, src, v)
			d.stop()

			point := "snapshot-after-data"
			if source == "dir" {
				point = "snapshot-mid-copy" // a copy has no snapshot-after-data
			}
			d = e.start(point)
			d.waitReady(e)
			v.Src = d
			_, err := v.SnapshotErr(snapName, nil)
			requireConnectionLost(t, err, "CreateSnapshot")
			d.requireKilled()

			// This start-up dies rolling the snapshot back, before it is ready.
			d = e.start("snapshot-delete-after-data")
			d.requireKilled()
			s := readDisk(t, e)
			t.Logf("after SIGKILL during start-up: snapshot records %+v; snapshot data %v", s.snapshots, poolSnapshots(t, e))
			require.Len(t, s.snapshots, 1, "the snapshot's record outlives its data until its qgroup is gone")
			require.Empty(t, poolSnapshots(t, e), "the rollback removed the data before it was killed")
			if e.btrfs {
				// The subvolume's ID went into the record before the
				// subvolume went: its qgroup, left behind, can be found.
				qgroups, err := quota.BtrfsQgroups(e.poolDir)
				require.NoError(t, err)
				for _, r := range s.snapshots {
					require.NotZero(t, r.SubvolumeID)
					require.Contains(t, qgroups, r.SubvolumeID, "qgroups after SIGKILL during start-up")
				}
			}

			d = e.start("")
			d.waitReady(e)
			v.Src = d
			snaps, _ := requireSnapshotsConsistent(t, e, d)
			require.Empty(t, snaps)
			id := v.Snapshot(snapName).GetSnapshotId()
			requireSnapshotsConsistent(t, e, d)
			requireRestores(t, e, d, src, id, want)
			require.NoError(t, d.deleteSnapshot(id))
			v.Delete()
			requireEmpty(t, e, d)
			require.Empty(t, readSnapshotRecords(t, e), "snapshot records left")
			d.stop()
		})
	}
}
