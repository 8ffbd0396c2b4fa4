//go:build linux

package crash

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// fillVolume writes files and a nested directory into a volume's data dir,
// so that its removal takes several steps. It returns the top-level entries.
func fillVolume(dir string) ([]string, error) {
	files := map[string]string{
		"a.txt":                     "alpha\n",
		"b.txt":                     "bravo\n",
		"c.txt":                     "charlie\n",
		"nested/x.txt":              "x-ray\n",
		"nested/y.txt":              "yankee\n",
		"nested/deeper/z.txt":       "zulu\n",
		"nested/deeper/empty/.keep": "",
	}
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	return []string{"a.txt", "b.txt", "c.txt", "nested"}, nil
}

// filledVolume creates volumeName in a clean run, fills it (fillVolume)
// and stops the run; it returns the volume's top-level entries.
func (e *env) filledVolume() []string {
	t := e.t
	t.Helper()
	d := e.start("")
	d.waitReady(e)
	resp, err := d.create(volumeName)
	require.NoError(t, err, "CreateVolume before the crash")
	id := resp.GetVolume().GetVolumeId()
	require.Equal(t, volumeid.FromName(volumeName), id)
	written, err := fillVolume(e.layout.DataDir(id))
	require.NoError(t, err)
	d.stop()
	return written
}

// crashIn runs op ("create" or "delete") of volumeName in a driver run
// armed with the failpoint point, which must kill it; a delete first gets a
// filled volume (filledVolume), whose entries it returns.
func (e *env) crashIn(op, point string) (written []string) {
	t := e.t
	t.Helper()
	id := volumeid.FromName(volumeName)
	if op == "delete" {
		written = e.filledVolume()
	}
	d := e.start(point)
	d.waitReady(e)
	switch op {
	case "create":
		_, err := d.create(volumeName)
		requireConnectionLost(t, err, "CreateVolume")
	case "delete":
		requireConnectionLost(t, d.delete(id), "DeleteVolume")
	default:
		t.Fatalf("unknown operation %q", op)
	}
	d.requireKilled()
	return written
}

// dataWant is what a failpoint should leave of the volume's data.
type dataWant int

const (
	dataAbsent  dataWant = iota // no data dir
	dataEmpty                   // a fresh, empty data dir
	dataFull                    // everything the test wrote
	dataPartial                 // some, not all, of what the test wrote
)

// requireData checks that volume id's data is as want says; written is
// what the test wrote into it, when is for the messages.
func (s diskState) requireData(t *testing.T, id string, want dataWant, written []string, when string) {
	t.Helper()
	entries, present := s.data[id]
	require.Equal(t, want != dataAbsent, present, "data %s: %s", when, s.describe(id))
	switch want {
	case dataEmpty:
		require.Empty(t, entries, "data %s", when)
	case dataFull:
		require.Equal(t, written, entries, "data %s", when)
	case dataPartial:
		require.NotEmpty(t, entries, "want part of the data left %s: %s", when, s.describe(id))
		require.Less(t, len(entries), len(written), "want part of the data removed %s: %s", when, s.describe(id))
		require.Subset(t, written, entries)
	}
}

func (w dataWant) String() string {
	return [...]string{"absent", "empty", "full", "partial"}[w]
}

// TestCrashAtFailpoints kills the driver at every failpoint of CreateVolume
// and DeleteVolume, then restarts it and checks that the state is
// consistent and that the operation can be completed.
func TestCrashAtFailpoints(t *testing.T) {
	// Every failpoint the driver defines has a case here, and no case names
	// a failpoint that does not exist (it would never fire).
	var names []string
	for _, c := range failpointCases {
		names = append(names, c.point)
	}
	require.ElementsMatch(t, failpoint.Points, names, "failpoint.Points and this table must list the same failpoints")
	for _, tc := range failpointCases {
		t.Run(tc.point, func(t *testing.T) { crashAt(t, newEnv(t), tc) })
	}
}

// TestCrashAtFailpointsBtrfs is TestCrashAtFailpoints on a btrfs pool with
// quotas: each directory volume is a subvolume with a qgroup limit, so a
// crash can also leave a subvolume whose ID no record names yet
// (create-after-data) or a qgroup whose subvolume is gone
// (delete-after-data). After every restart, the qgroups are exactly those
// of the volumes that exist.
func TestCrashAtFailpointsBtrfs(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range failpointCases {
		t.Run(tc.point, func(t *testing.T) { crashAt(t, newBtrfsEnv(t), tc) })
	}
}

// failpointCase is a failpoint and what a crash there must leave.
type failpointCase struct {
	point string
	op    string // "create" or "delete"
	// What the crash leaves on disk, before the restart.
	wantRecord string
	wantData   dataWant
	// For creates: whether the volume survives the restart (the crash
	// came after it was complete) or is rolled back.
	survives bool
}

var failpointCases = []failpointCase{
	{point: "create-after-intent", op: "create", wantRecord: "creating", wantData: dataAbsent},
	{point: "create-after-data", op: "create", wantRecord: "creating", wantData: dataEmpty},
	{point: "create-after-ready", op: "create", wantRecord: "ready", wantData: dataEmpty, survives: true},
	{point: "delete-after-intent", op: "delete", wantRecord: "deleting", wantData: dataFull},
	{point: "delete-mid-data", op: "delete", wantRecord: "deleting", wantData: dataPartial},
	{point: "delete-after-data", op: "delete", wantRecord: "deleting", wantData: dataAbsent},
	// The volume's limit is cleared (project limits, qgroup), the record
	// not yet removed.
	{point: "delete-after-quota", op: "delete", wantRecord: "deleting", wantData: dataAbsent},
}

// crashAt kills the driver at tc's failpoint, then restarts it and checks
// that the state is consistent and that the operation can be completed.
func crashAt(t *testing.T, e *env, tc failpointCase) {
	id := volumeid.FromName(volumeName)
	written := e.crashIn(tc.op, tc.point)

	// What the crash left, before anything repairs it.
	s := readDisk(t, e)
	t.Logf("on disk after SIGKILL at %s: volume %s: %s; %s", tc.point, id, s.describe(id), s.summary())
	if e.btrfs {
		qgroups, err := quota.BtrfsQgroups(e.poolDir)
		require.NoError(t, err)
		t.Logf("qgroups after SIGKILL at %s: %v (record: %+v)", tc.point, qgroups, s.records[id].Quota)
		if tc.point == "create-after-data" {
			// A limited subvolume whose ID the "creating" record does
			// not name yet: the rollback must find it.
			require.Len(t, qgroups, 2, "the subvolume's qgroup and the top level's")
			require.Zero(t, s.records[id].Quota.SubvolumeID)
		}
	}
	r, ok := s.records[id]
	require.True(t, ok, "no record after a crash at %s", tc.point)
	require.Equal(t, tc.wantRecord, r.State, "record state after a crash at %s", tc.point)
	s.requireData(t, id, tc.wantData, written, "after a crash at "+tc.point)

	// Restart without the failpoint: start-up finishes or rolls back.
	d := e.start("")
	d.waitReady(e)
	recs := requireConsistent(t, e, d)
	s = readDisk(t, e)
	t.Logf("on disk after restart: volume %s: %s; %s", id, s.describe(id), s.summary())

	switch tc.op {
	case "create":
		if tc.survives {
			require.Contains(t, recs, id, "volume complete before the crash at %s is gone after restart", tc.point)
			require.Equal(t, volumeName, recs[id].Name)
		} else {
			require.Empty(t, recs, "creation interrupted at %s was not rolled back", tc.point)
		}
		// The CO retries the CreateVolume it never got an answer to.
		resp, err := d.create(volumeName)
		require.NoError(t, err, "CreateVolume retry after restart")
		require.Equal(t, id, resp.GetVolume().GetVolumeId(), "CreateVolume retry returned another volume")
		require.EqualValues(t, volumeSize, resp.GetVolume().GetCapacityBytes())
		recs = requireConsistent(t, e, d)
		require.Len(t, recs, 1)
		require.Contains(t, recs, id)
		// And the volume can be deleted, leaving nothing.
		require.NoError(t, d.delete(id), "DeleteVolume after restart")
		requireEmpty(t, e, d)
	case "delete":
		require.Empty(t, recs, "deletion interrupted at %s was not finished at start-up", tc.point)
		requireEmpty(t, e, d)
		// The CO retries the DeleteVolume it never got an answer to.
		require.NoError(t, d.delete(id), "DeleteVolume retry after restart")
		requireEmpty(t, e, d)
	}
	d.stop()
}

// workerResult is what one load worker saw.
type workerResult struct {
	created map[string]string // name -> ID, acknowledged and not deleted since
	deleted map[string]string // name -> ID, deletion acknowledged
	pending string            // name of the operation in flight when it stopped
	pendOp  string
	err     error // the error that stopped it
	killed  bool  // whether the test had sent SIGKILL when err came
	setup   error // a failure of the test itself (writing into a volume)
}

// TestKillUnderLoad kills the driver from outside while 8 clients create
// and delete volumes, then checks the state after a restart, and that every
// operation acknowledged before the kill survived it.
func TestKillUnderLoad(t *testing.T) {
	const (
		workers = 8
		maxIter = 500 // per worker: the loop ends by itself
		// killAfterOps completed operations (about 200 ms worth on a
		// typical machine) before the kill.
		killAfterOps = 40
	)
	e := newEnv(t)
	first := e.start("")
	first.waitReady(e)

	var (
		ops      atomic.Int64 // completed operations
		inFlight atomic.Int64 // RPCs sent and not yet answered
		killed   atomic.Bool
		wg       sync.WaitGroup
		results  = make([]*workerResult, workers)
	)
	for w := range workers {
		res := &workerResult{created: map[string]string{}, deleted: map[string]string{}}
		results[w] = res
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(err error) {
				res.killed = killed.Load()
				res.err = err
			}
			for i := range maxIter {
				if killed.Load() {
					return
				}
				name := fmt.Sprintf("load-%d-%03d", w, i)
				res.pending, res.pendOp = name, "create"
				inFlight.Add(1)
				resp, err := first.create(name)
				inFlight.Add(-1)
				if err != nil {
					fail(err)
					return
				}
				id := resp.GetVolume().GetVolumeId()
				res.created[name] = id
				ops.Add(1)
				res.pending = ""
				if _, err := fillVolume(e.layout.DataDir(id)); err != nil {
					res.setup = err
					return
				}
				if i%4 == 0 {
					continue // keep one volume in four
				}
				res.pending, res.pendOp = name, "delete"
				inFlight.Add(1)
				err = first.delete(id)
				inFlight.Add(-1)
				if err != nil {
					fail(err)
					return
				}
				delete(res.created, name)
				res.deleted[name] = id
				ops.Add(1)
				res.pending = ""
			}
		}()
	}

	// Kill once enough operations have completed: a count, not a time.
	start := time.Now()
	deadline := start.Add(20 * time.Second)
	for ops.Load() < killAfterOps && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	done, busy := ops.Load(), inFlight.Load()
	killed.Store(true)
	// Only the process this test started, by its PID.
	require.NoError(t, first.cmd.Process.Signal(syscall.SIGKILL), "SIGKILL pid %d", first.pid)
	t.Logf("sent SIGKILL to pid %d after %d completed operations (%v), %d RPCs in flight", first.pid, done, time.Since(start).Round(time.Millisecond), busy)
	first.requireKilled()
	wg.Wait()
	require.GreaterOrEqual(t, done, int64(killAfterOps), "the clients did not complete %d operations in time", killAfterOps)

	require.Positive(t, busy, "no operation was in flight at the kill")
	interrupted := 0
	var pendingNames []string
	for w, res := range results {
		require.NoError(t, res.setup, "worker %d", w)
		if res.err != nil {
			require.True(t, res.killed, "worker %d failed before the kill: %v", w, res.err)
			require.Equal(t, codes.Unavailable, status.Code(res.err), "worker %d: %v", w, res.err)
		}
		if res.pending != "" {
			interrupted++
			pendingNames = append(pendingNames, res.pendOp+" "+res.pending)
		}
	}

	s := readDisk(t, e)
	t.Logf("on disk after SIGKILL: %s", s.summary())
	t.Logf("operations interrupted by the kill (%d): %s", interrupted, strings.Join(pendingNames, ", "))
	for _, res := range results {
		if res.pending != "" {
			id := volumeid.FromName(res.pending)
			t.Logf("  %s %s (%s): %s", res.pendOp, res.pending, id, s.describe(id))
		}
	}

	d := e.start("")
	d.waitReady(e)
	recs := requireConsistent(t, e, d)
	s = readDisk(t, e)
	t.Logf("on disk after restart: %s", s.summary())

	// Acknowledged operations survive the kill; the one in flight per
	// worker may have gone either way.
	survivors := 0
	for w, res := range results {
		for name, id := range res.created {
			if name == res.pending {
				continue
			}
			require.Contains(t, recs, id, "worker %d: volume %q was created (acknowledged) but is gone after the restart", w, name)
			require.Equal(t, name, recs[id].Name)
			survivors++
		}
		for name, id := range res.deleted {
			require.NotContains(t, recs, id, "worker %d: volume %q was deleted (acknowledged) but is back after the restart", w, name)
		}
		if res.pending != "" {
			id := volumeid.FromName(res.pending)
			_, present := recs[id]
			t.Logf("  worker %d: %s %s interrupted: after restart present=%v", w, res.pendOp, res.pending, present)
		}
	}
	t.Logf("%d acknowledged volumes survived, %d volumes after restart", survivors, len(recs))

	// Retrying every create gives the same volume, and everything can be
	// deleted, leaving nothing.
	for id, r := range recs {
		resp, err := d.create(r.Name)
		require.NoError(t, err, "CreateVolume retry of %q", r.Name)
		require.Equal(t, id, resp.GetVolume().GetVolumeId())
	}
	requireConsistent(t, e, d)
	for id := range recs {
		require.NoError(t, d.delete(id), "DeleteVolume %s", id)
	}
	requireEmpty(t, e, d)
	d.stop()
}

// TestCrashDuringRecovery kills the driver again while its start-up is
// finishing or rolling back an operation an earlier crash interrupted (the
// failpoints of the removal path also fire there), and checks that the
// next start-up still ends consistent.
func TestCrashDuringRecovery(t *testing.T) {
	type step struct {
		point      string // failpoint armed for this start-up
		wantRecord string
		wantData   dataWant
	}
	cases := []struct {
		name string
		// The operation the first crash interrupts.
		op, point string
		// Start-ups that crash in turn, each during recovery.
		steps []step
	}{
		{
			name: "finish-delete", op: "delete", point: "delete-after-intent",
			steps: []step{
				{point: "delete-mid-data", wantRecord: "deleting", wantData: dataPartial},
				{point: "delete-after-data", wantRecord: "deleting", wantData: dataAbsent},
			},
		},
		{
			name: "rollback-create", op: "create", point: "create-after-data",
			steps: []step{
				{point: "delete-after-data", wantRecord: "creating", wantData: dataAbsent},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			id := volumeid.FromName(volumeName)
			written := e.crashIn(tc.op, tc.point)
			s := readDisk(t, e)
			t.Logf("on disk after SIGKILL at %s: %s", tc.point, s.describe(id))

			for _, st := range tc.steps {
				// This start-up dies while reconciling, before it is ready.
				d := e.start(st.point)
				d.requireKilled()
				s := readDisk(t, e)
				t.Logf("on disk after SIGKILL at %s during start-up: %s", st.point, s.describe(id))
				require.Equal(t, st.wantRecord, s.records[id].State, "record after a crash at %s during start-up: %s", st.point, s.describe(id))
				s.requireData(t, id, st.wantData, written, "after a crash at "+st.point+" during start-up")
			}

			d := e.start("")
			d.waitReady(e)
			requireEmpty(t, e, d)
			t.Logf("on disk after a clean restart: %s", readDisk(t, e).summary())
			if tc.op == "create" {
				resp, err := d.create(volumeName)
				require.NoError(t, err, "CreateVolume retry")
				require.Equal(t, id, resp.GetVolume().GetVolumeId())
				require.Len(t, requireConsistent(t, e, d), 1)
			}
			require.NoError(t, d.delete(id), "DeleteVolume retry")
			requireEmpty(t, e, d)
			d.stop()
		})
	}
}
