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
	"sync/atomic"
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
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
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

// Paths of the durable layout: records of node-local volumes, node state,
// and the data directories of the pool.
func (e *env) recordsDir() string { return filepath.Join(e.stateDir, "volumes") }
func (e *env) nodeDir() string    { return filepath.Join(e.stateDir, "node") }
func (e *env) dataRoot() string   { return filepath.Join(e.poolDir, "volumes") }
func (e *env) dataDir(id string) string {
	return filepath.Join(e.dataRoot(), id)
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
	conn    *grpc.ClientConn
	ident   csi.IdentityClient
	ctrl    csi.ControllerClient
	node    csi.NodeClient
}

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
		if d.conn != nil {
			_ = d.conn.Close()
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
	d.conn = conn
	d.ident = csi.NewIdentityClient(conn)
	d.ctrl = csi.NewControllerClient(conn)
	d.node = csi.NewNodeClient(conn)
	for {
		d.requireRunning("ready")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := d.ident.Probe(ctx, &csi.ProbeRequest{})
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
	if d.conn != nil {
		_ = d.conn.Close()
		d.conn = nil
	}
}

func ctxRPC() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), rpcTimeout)
}

func createReq(name string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:          name,
		CapacityRange: &csi.CapacityRange{RequiredBytes: volumeSize},
		VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		}},
	}
}

func (d *driverProc) create(name string) (*csi.CreateVolumeResponse, error) {
	ctx, cancel := ctxRPC()
	defer cancel()
	req := createReq(name)
	req.Parameters = d.params
	return d.ctrl.CreateVolume(ctx, req)
}

func (d *driverProc) delete(id string) error {
	ctx, cancel := ctxRPC()
	defer cancel()
	_, err := d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
	return err
}

// list returns every volume ListVolumes reports, following pages.
func (d *driverProc) list() []string {
	d.t.Helper()
	ids := []string{}
	token := ""
	for range 10000 {
		ctx, cancel := ctxRPC()
		resp, err := d.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 7, StartingToken: token})
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

// record is the part of a volume record (<state>/volumes/<id>.json) these
// tests look at.
type record struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Pool  string `json:"pool"`
	Kind  string `json:"kind"`
	State string `json:"state"`
	Quota *struct {
		Method      string `json:"method"`
		SubvolumeID uint64 `json:"subvolumeID"`
	} `json:"quota"`
}

// diskState is what the driver left on disk.
type diskState struct {
	records    map[string]record   // by file name without .json
	badRecords []string            // record files that do not decode
	tmpFiles   []string            // temporary files of interrupted writes
	otherFiles []string            // anything else in the records directory
	data       map[string][]string // pool data dirs: ID -> top-level entries
	dataOdd    []string            // entries of pool/volumes that are not directories
	nodeStates []string            // files in <state>/node
}

func readDisk(t *testing.T, e *env) diskState {
	t.Helper()
	s := diskState{records: map[string]record{}, data: map[string][]string{}}
	ents, err := os.ReadDir(e.recordsDir())
	require.NoError(t, err)
	for _, en := range ents {
		n := en.Name()
		switch {
		case strings.HasPrefix(n, "."):
			s.tmpFiles = append(s.tmpFiles, n)
		case strings.HasSuffix(n, ".json") && en.Type().IsRegular():
			b, err := os.ReadFile(filepath.Join(e.recordsDir(), n))
			require.NoError(t, err)
			var r record
			if err := json.Unmarshal(b, &r); err != nil {
				s.badRecords = append(s.badRecords, fmt.Sprintf("%s: %v", n, err))
				continue
			}
			s.records[strings.TrimSuffix(n, ".json")] = r
		default:
			s.otherFiles = append(s.otherFiles, n)
		}
	}
	ents, err = os.ReadDir(e.dataRoot())
	require.NoError(t, err)
	for _, en := range ents {
		if !en.IsDir() {
			s.dataOdd = append(s.dataOdd, en.Name())
			continue
		}
		sub, err := os.ReadDir(e.dataDir(en.Name()))
		require.NoError(t, err)
		names := make([]string, 0, len(sub))
		for _, x := range sub {
			names = append(names, x.Name())
		}
		sort.Strings(names)
		s.data[en.Name()] = names
	}
	ents, err = os.ReadDir(e.nodeDir())
	if !errors.Is(err, fs.ErrNotExist) {
		require.NoError(t, err)
	}
	for _, en := range ents {
		s.nodeStates = append(s.nodeStates, en.Name())
	}
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
	require.Empty(t, s.otherFiles, "unexpected files in %s", e.recordsDir())
	require.Empty(t, s.dataOdd, "non-directory entries in %s", e.dataRoot())
	for key, r := range s.records {
		require.Equal(t, key, r.ID, "record file %s.json holds volume %q", key, r.ID)
		require.Equal(t, "ready", r.State, "volume %s (%q) is %q after restart: %s", key, r.Name, r.State, s.describe(key))
		require.Equal(t, "default", r.Pool, "volume %s pool", key)
		if r.Kind == "loop" || r.Kind == "block" {
			fi, err := os.Lstat(filepath.Join(e.poolDir, "images", key+".img"))
			require.NoError(t, err, "ready %s volume %s (%q) has no image", r.Kind, key, r.Name)
			require.True(t, fi.Mode().IsRegular(), "image of %s is %v, not a file", key, fi.Mode())
			continue
		}
		fi, err := os.Lstat(e.dataDir(key))
		require.NoError(t, err, "ready volume %s (%q) has no data dir", key, r.Name)
		require.True(t, fi.IsDir(), "data of %s is %v, not a directory", key, fi.Mode())
	}
	for id := range s.data {
		_, ok := s.records[id]
		require.True(t, ok, "data dir %s has no record: %s", e.dataDir(id), s.describe(id))
	}
	if e.btrfs {
		// Exactly the qgroups of the volumes there are (and the top
		// level's, 0/5): none dangles after a crash at any step.
		want := []uint64{5}
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
		_, ok := s.records[strings.TrimSuffix(n, ".json")]
		require.True(t, ok, "node state %s outlives its volume", filepath.Join(e.nodeDir(), n))
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

// dataWant is what a failpoint should leave of the volume's data.
type dataWant int

const (
	dataAbsent  dataWant = iota // no data dir
	dataEmpty                   // a fresh, empty data dir
	dataFull                    // everything the test wrote
	dataPartial                 // some, not all, of what the test wrote
)

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
	var written []string

	if tc.op == "delete" {
		// A complete volume with some content, made by a clean run.
		d := e.start("")
		d.waitReady(e)
		resp, err := d.create(volumeName)
		require.NoError(t, err, "CreateVolume before the crash")
		require.Equal(t, id, resp.GetVolume().GetVolumeId())
		written, err = fillVolume(e.dataDir(id))
		require.NoError(t, err)
		d.stop()
	}

	// The run that dies at the failpoint.
	d := e.start(tc.point)
	d.waitReady(e)
	switch tc.op {
	case "create":
		_, err := d.create(volumeName)
		requireConnectionLost(t, err, "CreateVolume")
	case "delete":
		requireConnectionLost(t, d.delete(id), "DeleteVolume")
	}
	d.requireKilled()

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
	entries, present := s.data[id]
	switch tc.wantData {
	case dataAbsent:
		require.False(t, present, "data after a crash at %s: %s", tc.point, s.describe(id))
	case dataEmpty:
		require.True(t, present, "data after a crash at %s: %s", tc.point, s.describe(id))
		require.Empty(t, entries)
	case dataFull:
		require.True(t, present, "data after a crash at %s: %s", tc.point, s.describe(id))
		require.Equal(t, written, entries)
	case dataPartial:
		require.True(t, present, "data after a crash at %s: %s", tc.point, s.describe(id))
		require.NotEmpty(t, entries, "want part of the data left: %s", s.describe(id))
		require.Less(t, len(entries), len(written), "want part of the data removed: %s", s.describe(id))
		require.Subset(t, written, entries)
	}

	// Restart without the failpoint: start-up finishes or rolls back.
	d = e.start("")
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
				if _, err := fillVolume(e.dataDir(id)); err != nil {
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
			var written []string
			if tc.op == "delete" {
				d := e.start("")
				d.waitReady(e)
				_, err := d.create(volumeName)
				require.NoError(t, err)
				written, err = fillVolume(e.dataDir(id))
				require.NoError(t, err)
				d.stop()
			}
			d := e.start(tc.point)
			d.waitReady(e)
			if tc.op == "delete" {
				requireConnectionLost(t, d.delete(id), "DeleteVolume")
			} else {
				_, err := d.create(volumeName)
				requireConnectionLost(t, err, "CreateVolume")
			}
			d.requireKilled()
			s := readDisk(t, e)
			t.Logf("on disk after SIGKILL at %s: %s", tc.point, s.describe(id))

			for _, st := range tc.steps {
				// This start-up dies while reconciling, before it is ready.
				d := e.start(st.point)
				d.requireKilled()
				s := readDisk(t, e)
				t.Logf("on disk after SIGKILL at %s during start-up: %s", st.point, s.describe(id))
				require.Equal(t, st.wantRecord, s.records[id].State, "record after a crash at %s during start-up: %s", st.point, s.describe(id))
				entries, present := s.data[id]
				switch st.wantData {
				case dataAbsent:
					require.False(t, present, "data after a crash at %s during start-up: %s", st.point, s.describe(id))
				case dataPartial:
					require.True(t, present, "data after a crash at %s during start-up: %s", st.point, s.describe(id))
					require.NotEmpty(t, entries)
					require.Less(t, len(entries), len(written))
					require.Subset(t, written, entries)
				default:
					require.FailNow(t, "bad table", "unexpected dataWant %v", st.wantData)
				}
			}

			d = e.start("")
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
