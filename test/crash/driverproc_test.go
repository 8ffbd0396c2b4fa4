//go:build linux

package crash

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const (
	nodeID     = "crash-node"
	volumeName = "crash-vol"
	volumeSize = 1 << 20

	// startTimeout bounds how long a driver may take to answer Probe ready
	// (or to exit after a signal).
	startTimeout = 15 * time.Second
	// rpcTimeout bounds every single RPC.
	rpcTimeout = 10 * time.Second
)

// Where the driver binary is built, once per test process (buildDriver).
var (
	binDir    string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "hostvol-crash-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash tests:", err)
		os.Exit(1)
	}
	binDir = d
	code := m.Run()
	_ = os.RemoveAll(binDir)
	os.Exit(code)
}

// buildDriver builds ./cmd/hostvol from the module root, once. Under -race
// the driver is built with -race too, so that the load test can catch data
// races in the driver itself (GORACE halt_on_error makes it exit at once).
func buildDriver(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			if root := os.Getenv("GOROOT"); root != "" {
				goBin = filepath.Join(root, "bin", "go")
			} else {
				buildErr = fmt.Errorf("go command not found: %w", err)
				return
			}
		}
		out, err := exec.Command(goBin, "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			buildErr = errors.New("go env GOMOD: not inside a module")
			return
		}
		bin := filepath.Join(binDir, "hostvol")
		args := []string{"build", "-o", bin}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/hostvol")
		cmd := exec.Command(goBin, args...)
		cmd.Dir = filepath.Dir(gomod)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
			return
		}
		binPath = bin
	})
	require.NoError(t, buildErr, "building the hostvol binary")
	return binPath
}

// env is one test's driver layout: a socket, a state directory and one
// node-local pool named "default", all in temporary directories.
type env struct {
	t        *testing.T
	bin      string
	dir      string
	sock     string
	stateDir string
	poolDir  string
	runs     int
	// params are the class parameters of every CreateVolume: a plain
	// temporary directory limits nothing, so its class says
	// sizeLimit: optional; a btrfs pool uses the defaults.
	params map[string]string
	// btrfs: the pool is a btrfs filesystem with quotas.
	btrfs bool
	// layout is where the driver keeps records, node states and data.
	layout testutil.Layout
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := newEnvOn(t, "")
	e.params = map[string]string{"sizeLimit": "optional"}
	return e
}

// newBtrfsEnv is newEnv with the pool on a btrfs filesystem with quotas
// (testutil.BtrfsPool): directory volumes are subvolumes with qgroup
// limits, and the tests also check that no qgroup outlives its volume.
func newBtrfsEnv(t *testing.T) *env {
	t.Helper()
	e := newEnvOn(t, testutil.BtrfsPool(t, 256<<20))
	e.btrfs = true
	return e
}

// newEnvOn makes the layout with the pool at poolDir ("": a new directory).
func newEnvOn(t *testing.T, poolDir string) *env {
	t.Helper()
	e := &env{t: t, bin: buildDriver(t), dir: t.TempDir()}
	e.stateDir = filepath.Join(e.dir, "state")
	e.poolDir = poolDir
	if e.poolDir == "" {
		e.poolDir = filepath.Join(e.dir, "pool")
		require.NoError(t, os.Mkdir(e.poolDir, 0o755))
	}
	e.layout = testutil.LayoutAt(e.stateDir, e.poolDir)
	e.sock = filepath.Join(e.dir, "csi.sock")
	if len(e.sock) > 100 { // sun_path holds 108 bytes
		// A long TMPDIR or test name: keep the socket somewhere short.
		d, err := os.MkdirTemp("", "hv")
		require.NoError(t, err)
		t.Cleanup(func() { _ = os.RemoveAll(d) })
		e.sock = filepath.Join(d, "csi.sock")
	}
	return e
}

// driverProc is one run of the hostvol binary, started by this test.
type driverProc struct {
	t       *testing.T
	params  map[string]string // CreateVolume parameters (the env's)
	name    string
	cmd     *exec.Cmd
	pid     int
	done    chan struct{} // closed once Wait has returned
	state   *os.ProcessState
	logPath string
	client  *testutil.Client
}

// CSI is the client of this run; nil until waitReady.
func (d *driverProc) CSI() *testutil.Client { return d.client }

// start runs the driver with the failpoint fp armed ("" for none). It
// returns at once; call waitReady before using it.
func (e *env) start(fp string) *driverProc {
	t := e.t
	t.Helper()
	e.runs++
	name := fmt.Sprintf("run%d", e.runs)
	if fp != "" {
		name += "-" + fp
	}
	logPath := filepath.Join(e.dir, name+".log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)

	cmd := exec.Command(e.bin,
		"--endpoint", "unix://"+e.sock,
		"--state-dir", e.stateDir,
		"--pool", "default="+e.poolDir,
		"--node-id", nodeID,
		"-v=2",
	)
	// Never inherit a failpoint from the environment of go test: only the
	// run that asks for one gets it.
	cmd.Env = make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, failpoint.EnvVar+"=") && !strings.HasPrefix(kv, "GORACE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if fp != "" {
		cmd.Env = append(cmd.Env, failpoint.EnvVar+"="+fp)
	}
	if raceEnabled {
		cmd.Env = append(cmd.Env, "GORACE=halt_on_error=1 atexit_sleep_ms=0")
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that nothing aimed at the test's group
	// reaches it; and it dies with the test process if that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	_ = logf.Close() // the child has its own descriptor

	d := &driverProc{t: t, params: e.params, name: name, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), logPath: logPath}
	go func() {
		_ = cmd.Wait()
		d.state = cmd.ProcessState
		close(d.done)
	}()
	t.Cleanup(func() {
		if d.client != nil {
			d.client.Close()
		}
		if !d.exited() {
			// Only this process, by its PID (os.Process holds a pidfd).
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			d.dumpLog()
		}
	})
	t.Logf("started hostvol %s (pid %d)", name, d.pid)
	return d
}

func (d *driverProc) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *driverProc) dumpLog() {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		d.t.Logf("driver %s log: %v", d.name, err)
		return
	}
	s := string(b)
	const max = 8000
	if len(s) > max {
		s = "...\n" + s[len(s)-max:]
	}
	d.t.Logf("driver %s (pid %d) log:\n%s", d.name, d.pid, s)
}

// requireRunning fails the test if the process has exited.
func (d *driverProc) requireRunning(before string) {
	d.t.Helper()
	if d.exited() { // d.state is only read once done is closed
		require.FailNow(d.t, "driver exited", "driver %s (pid %d) exited before %s: %v", d.name, d.pid, before, d.state)
	}
}

// waitReady waits until the driver answers Probe with ready=true, failing
// early if the process exits. It polls; the timeout is a bound, not an
// assertion about speed.
func (d *driverProc) waitReady(e *env) {
	t := d.t
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	// The socket first: a gRPC channel that fails its first connection
	// backs off, so do not create it before the socket accepts.
	for {
		d.requireRunning("serving")
		c, err := net.DialTimeout("unix", e.sock, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		require.True(t, time.Now().Before(deadline), "driver %s: socket %s not accepting after %v: %v", d.name, e.sock, startTimeout, err)
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := endpoint.Dial(e.sock,
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}),
	)
	require.NoError(t, err)
	d.client = testutil.NewClient(conn)
	for {
		d.requireRunning("ready")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := d.client.Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && resp.GetReady().GetValue() {
			return
		}
		require.True(t, time.Now().Before(deadline), "driver %s not ready after %v (last Probe: %v, err %v)", d.name, startTimeout, resp, err)
		time.Sleep(10 * time.Millisecond)
	}
}

// waitExit waits for the process to end and returns how it ended.
func (d *driverProc) waitExit() *os.ProcessState {
	d.t.Helper()
	select {
	case <-d.done:
		return d.state
	case <-time.After(startTimeout):
		require.FailNow(d.t, "driver did not exit", "driver %s (pid %d) still running after %v", d.name, d.pid, startTimeout)
		return nil
	}
}

// requireKilled asserts that the process ended by SIGKILL.
func (d *driverProc) requireKilled() {
	d.t.Helper()
	ps := d.waitExit()
	ws, ok := ps.Sys().(syscall.WaitStatus)
	require.True(d.t, ok, "wait status of %s: %T", d.name, ps.Sys())
	require.True(d.t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "driver %s ended with %q, want killed by SIGKILL", d.name, ps.String())
}

// stop sends SIGTERM and requires a clean exit.
func (d *driverProc) stop() {
	d.t.Helper()
	require.NoError(d.t, d.cmd.Process.Signal(syscall.SIGTERM))
	ps := d.waitExit()
	require.True(d.t, ps.Success(), "driver %s ended with %q after SIGTERM, want exit 0", d.name, ps.String())
	if d.client != nil {
		d.client.Close()
		d.client = nil
	}
}

func ctxRPC() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), rpcTimeout)
}

func createReq(name string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: volumeSize},
		VolumeCapabilities: []*csi.VolumeCapability{testutil.DirKind.Capability()},
	}
}

func (d *driverProc) create(name string) (*csi.CreateVolumeResponse, error) {
	ctx, cancel := ctxRPC()
	defer cancel()
	req := createReq(name)
	req.Parameters = d.params
	return d.client.CreateVolume(ctx, req)
}

func (d *driverProc) delete(id string) error {
	ctx, cancel := ctxRPC()
	defer cancel()
	_, err := d.client.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
	return err
}

// list returns every volume ListVolumes reports, following pages.
func (d *driverProc) list() []string {
	d.t.Helper()
	ids := []string{}
	token := ""
	for range 10000 {
		ctx, cancel := ctxRPC()
		resp, err := d.client.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 7, StartingToken: token})
		cancel()
		require.NoError(d.t, err, "ListVolumes")
		for _, en := range resp.GetEntries() {
			ids = append(ids, en.GetVolume().GetVolumeId())
		}
		if token = resp.GetNextToken(); token == "" {
			sort.Strings(ids)
			return ids
		}
	}
	require.FailNow(d.t, "ListVolumes never ended")
	return nil
}

// requireConnectionLost asserts that an RPC failed because the driver died
// under it.
func requireConnectionLost(t *testing.T, err error, what string) {
	t.Helper()
	require.Error(t, err, "%s succeeded, but the failpoint should have killed the driver", what)
	require.Equal(t, codes.Unavailable, status.Code(err), "%s: want UNAVAILABLE (connection lost), got %v", what, err)
}

// record is the part of a volume record (testutil.Layout.RecordPath) these
// tests look at.
type record struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Pool  string `json:"pool"`
	Kind  string `json:"kind"`
	State string `json:"state"`
	// Frozen is the staging path of a clone's source while a reflink
	// has it frozen.
	Frozen string `json:"frozen"`
	Quota  *struct {
		Method      string `json:"method"`
		SubvolumeID uint64 `json:"subvolumeID"`
	} `json:"quota"`
}

// diskState is what the driver left on disk.
type diskState struct {
	records    map[string]record   // by volume ID
	badRecords []string            // record files that do not decode
	tmpFiles   []string            // temporary files of interrupted writes
	otherFiles []string            // anything else in the records directory
	data       map[string][]string // pool data dirs: ID -> top-level entries
	dataOdd    []string            // entries of the data root that are not directories
	nodeStates []string            // files in the node states directory
	// snapshots are the snapshot records (snapshot_crash_test.go), by ID.
	snapshots map[string]snapRecord
}

func readDisk(t *testing.T, e *env) diskState {
	t.Helper()
	s := diskState{records: map[string]record{}, data: map[string][]string{}}
	ents, err := os.ReadDir(e.layout.RecordsDir())
	require.NoError(t, err)
	for _, en := range ents {
		n := en.Name()
		id, isRecord := testutil.RecordKey(n)
		switch {
		case strings.HasPrefix(n, "."):
			s.tmpFiles = append(s.tmpFiles, n)
		case isRecord && en.Type().IsRegular():
			b, err := os.ReadFile(e.layout.RecordPath(id))
			require.NoError(t, err)
			var r record
			if err := json.Unmarshal(b, &r); err != nil {
				s.badRecords = append(s.badRecords, fmt.Sprintf("%s: %v", n, err))
				continue
			}
			s.records[id] = r
		default:
			s.otherFiles = append(s.otherFiles, n)
		}
	}
	ents, err = os.ReadDir(e.layout.DataRoot())
	require.NoError(t, err)
	for _, en := range ents {
		if !en.IsDir() {
			s.dataOdd = append(s.dataOdd, en.Name())
			continue
		}
		sub, err := os.ReadDir(e.layout.DataDir(en.Name()))
		require.NoError(t, err)
		names := make([]string, 0, len(sub))
		for _, x := range sub {
			names = append(names, x.Name())
		}
		sort.Strings(names)
		s.data[en.Name()] = names
	}
	ents, err = os.ReadDir(e.layout.NodeStatesDir())
	if !errors.Is(err, fs.ErrNotExist) {
		require.NoError(t, err)
	}
	for _, en := range ents {
		s.nodeStates = append(s.nodeStates, en.Name())
	}
	s.snapshots = readSnapshotRecords(t, e)
	return s
}

// describe renders one volume's on-disk state, e.g.
// "record=deleting data=present(3 entries: b.txt c.txt nested)".
func (s diskState) describe(id string) string {
	rec := "absent"
	if r, ok := s.records[id]; ok {
		rec = r.State
	}
	data := "absent"
	if names, ok := s.data[id]; ok {
		data = fmt.Sprintf("present(%d entries: %s)", len(names), strings.Join(names, " "))
	}
	return fmt.Sprintf("record=%s data=%s", rec, data)
}

// summary counts records by state and data dirs, for logs.
func (s diskState) summary() string {
	byState := map[string]int{}
	for _, r := range s.records {
		byState[r.State]++
	}
	states := make([]string, 0, len(byState))
	for st, n := range byState {
		states = append(states, fmt.Sprintf("%s=%d", st, n))
	}
	sort.Strings(states)
	orphans := 0
	for id := range s.data {
		if _, ok := s.records[id]; !ok {
			orphans++
		}
	}
	return fmt.Sprintf("records: %d [%s]; temporary record files: %d; data dirs: %d (without record: %d); node state files: %d",
		len(s.records), strings.Join(states, " "), len(s.tmpFiles), len(s.data), orphans, len(s.nodeStates))
}

// requireConsistent checks the invariants of a driver at rest: every record
// is ready and has its data, every data dir has a record, nothing is left
// half-written, no node state outlives its volume, and ListVolumes reports
// exactly the records. It returns the records.
func requireConsistent(t *testing.T, e *env, d *driverProc) map[string]record {
	t.Helper()
	s := readDisk(t, e)
	require.Empty(t, s.badRecords, "unreadable records")
	require.Empty(t, s.tmpFiles, "temporary record files left after start-up")
	require.Empty(t, s.otherFiles, "unexpected files in %s", e.layout.RecordsDir())
	require.Empty(t, s.dataOdd, "non-directory entries in %s", e.layout.DataRoot())
	for key, r := range s.records {
		require.Equal(t, key, r.ID, "record file %s holds volume %q", e.layout.RecordPath(key), r.ID)
		require.Equal(t, "ready", r.State, "volume %s (%q) is %q after restart: %s", key, r.Name, r.State, s.describe(key))
		require.Equal(t, "default", r.Pool, "volume %s pool", key)
		if r.Kind == "loop" || r.Kind == "block" {
			fi, err := os.Lstat(e.layout.ImagePath(key))
			require.NoError(t, err, "ready %s volume %s (%q) has no image", r.Kind, key, r.Name)
			require.True(t, fi.Mode().IsRegular(), "image of %s is %v, not a file", key, fi.Mode())
			continue
		}
		fi, err := os.Lstat(e.layout.DataDir(key))
		require.NoError(t, err, "ready volume %s (%q) has no data dir", key, r.Name)
		require.True(t, fi.IsDir(), "data of %s is %v, not a directory", key, fi.Mode())
	}
	for id := range s.data {
		_, ok := s.records[id]
		require.True(t, ok, "data dir %s has no record: %s", e.layout.DataDir(id), s.describe(id))
	}
	if e.btrfs {
		// Exactly the qgroups of the volumes and snapshots there are (and
		// the top level's, 0/5): none dangles after a crash at any step.
		want := []uint64{5}
		for id, sr := range s.snapshots {
			if sr.SubvolumeID != 0 {
				require.Equal(t, "ready", sr.State, "snapshot %s", id)
				want = append(want, sr.SubvolumeID)
			}
		}
		for key, r := range s.records {
			require.NotNil(t, r.Quota, "volume %s on a btrfs pool has no qgroup limit", key)
			require.Equal(t, string(quota.BtrfsQgroup), r.Quota.Method)
			require.NotZero(t, r.Quota.SubvolumeID, "ready volume %s has no subvolume ID", key)
			want = append(want, r.Quota.SubvolumeID)
		}
		got, err := quota.BtrfsQgroups(e.poolDir)
		require.NoError(t, err)
		require.ElementsMatch(t, want, got, "qgroups of the btrfs pool")
	}
	for _, n := range s.nodeStates {
		id, _ := testutil.RecordKey(n)
		_, ok := s.records[id]
		require.True(t, ok, "node state %s outlives its volume", filepath.Join(e.layout.NodeStatesDir(), n))
	}
	want := make([]string, 0, len(s.records))
	for id := range s.records {
		want = append(want, id)
	}
	sort.Strings(want)
	require.Equal(t, want, d.list(), "ListVolumes disagrees with the records on disk")
	return s.records
}

// requireEmpty checks that nothing at all is left of any volume.
func requireEmpty(t *testing.T, e *env, d *driverProc) {
	t.Helper()
	recs := requireConsistent(t, e, d)
	require.Empty(t, recs, "records left")
	s := readDisk(t, e)
	require.Empty(t, s.data, "data dirs left")
	require.Empty(t, s.nodeStates, "node state left")
}
