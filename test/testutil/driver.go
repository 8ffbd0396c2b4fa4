package testutil

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/seed3e7d50b2/hostvol/pkg/driver"
	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// DriverName is the CSI driver name every test driver serves under.
const DriverName = "hostvol.csi.io"

// DefaultNodeID is the node ID of a test driver unless Options name one.
const DefaultNodeID = "test-node"

// Env is a driver running in-process on a socket in a temporary directory.
type Env struct {
	Endpoint string
	Socket   string
	StateDir string
	Pools    []*pool.Pool
	Driver   *driver.Driver
	Manager  *volume.Manager
	// FakeMounter is the mounter when it is a *mount.FakeMounter (the
	// default), nil when the test runs real mounts.
	FakeMounter *mount.FakeMounter
	// Client is connected to Endpoint; closed in t.Cleanup.
	Client *Client
	// Dir is the temporary directory holding the socket and, unless
	// Options named others, the state directory and the pool.
	Dir string
}

// Options tune StartDriver.
type Options struct {
	NodeID     string          // default: DefaultNodeID
	Mounter    mount.Interface // default: a new FakeMounter
	PoolSpecs  []pool.Spec     // default: one "default" pool in the temp dir
	StateDir   string          // default: in the temp dir
	MaxVolumes int64
	Loop       loop.Manager     // default: loop.NewFake()
	FS         fsutil.Interface // default: a new fsutil.Fake
	// Quota limits directory volumes. Default: a new quota.Fake, whose
	// pools all "enforce" (project IDs and limits in memory).
	Quota quota.System

	// Interceptors are passed to driver.Config (e.g. pkg/metrics').
	Interceptors []grpc.UnaryServerInterceptor
	// Inline bounds inline volumes; nil: params.DefaultInlinePolicy().
	Inline *params.InlinePolicy
	// Unloaded serves the driver before the volume manager has loaded its
	// records, as at start-up; Env.Load loads them.
	Unloaded bool
}

// RealOptions are Options with the adapters cmd/hostvol builds: the
// syscall bind mounter over mount-utils, real loop devices, real mkfs.
func RealOptions() Options {
	return Options{Mounter: mounter.New(mount.New("")), Loop: loop.New(), FS: fsutil.New(utilexec.New()), Quota: quota.New()}
}

// withDefaults fills in what o leaves empty; dir holds the default state
// directory and pool.
func (o Options) withDefaults(t testing.TB, dir string) Options {
	t.Helper()
	if o.NodeID == "" {
		o.NodeID = DefaultNodeID
	}
	if o.Mounter == nil {
		o.Mounter = mount.NewFakeMounter(nil)
	}
	if o.Loop == nil {
		o.Loop = loop.NewFake()
	}
	if o.FS == nil {
		o.FS = &fsutil.Fake{}
	}
	if o.Quota == nil {
		o.Quota = quota.NewFake()
	}
	if o.StateDir == "" {
		o.StateDir = filepath.Join(dir, "state")
	}
	if len(o.PoolSpecs) == 0 {
		pd := filepath.Join(dir, "pool")
		if err := os.MkdirAll(pd, 0o755); err != nil {
			t.Fatal(err)
		}
		o.PoolSpecs = []pool.Spec{{Name: pool.DefaultName, Path: pd}}
	}
	if o.Inline == nil {
		inline := params.DefaultInlinePolicy()
		o.Inline = &inline
	}
	return o
}

// StartDriver starts a driver, dials it, and stops both in t.Cleanup.
func StartDriver(t testing.TB, o Options) *Env {
	t.Helper()
	dir := t.TempDir()
	o = o.withDefaults(t, dir)
	env := &Env{Dir: dir, StateDir: o.StateDir, Socket: filepath.Join(dir, "csi.sock")}
	env.Endpoint = "unix://" + env.Socket
	env.FakeMounter, _ = o.Mounter.(*mount.FakeMounter)
	for _, sp := range o.PoolSpecs {
		p, err := pool.Open(sp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		env.Pools = append(env.Pools, p)
	}
	env.Manager = newManager(t, o, env.Pools)
	if !o.Unloaded {
		env.Load(t)
	}
	drv, err := driver.New(driver.Config{Name: DriverName, Version: "test", NodeID: o.NodeID, MaxVolumes: o.MaxVolumes, Manager: env.Manager, Interceptors: o.Interceptors, Inline: *o.Inline})
	if err != nil {
		t.Fatal(err)
	}
	l, err := endpoint.Listen(env.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = drv.Serve(l)
	}()
	t.Cleanup(func() {
		drv.Stop()
		<-done
	})
	env.Driver = drv
	env.Client = Dial(t, env.Endpoint)
	// Driver.Stop reaches only a server that Serve has set up: wait until
	// it accepts a connection (no call, which interceptors would count),
	// so that a test that ends at once still stops it.
	ctx, cancel := context.WithTimeout(context.Background(), RPCTimeout)
	defer cancel()
	conn := env.Client.Conn
	conn.Connect()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		require.True(t, conn.WaitForStateChange(ctx, st), "the driver at %s accepts no connection (%v)", env.Endpoint, st)
	}
	return env
}

// newManager builds the volume manager of a driver; t.Cleanup closes it.
func newManager(t testing.TB, o Options, pools []*pool.Pool) *volume.Manager {
	t.Helper()
	inlineMax := o.Inline.MaxBytes
	if len(o.Inline.Pools) == 0 {
		inlineMax = 0
	}
	mgr, err := volume.New(volume.Config{
		NodeID: o.NodeID, StateDir: o.StateDir, Pools: pools, Mounter: o.Mounter, Loop: o.Loop, FS: o.FS, Quota: o.Quota,
		InlineMaxBytes: inlineMax, InlineMaxTotalBytes: o.Inline.MaxTotalBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Close() })
	return mgr
}

// Load loads the volume manager's records (Options.Unloaded left it to
// the test).
func (e *Env) Load(t testing.TB) {
	t.Helper()
	require.NoError(t, e.Manager.Load(), "loading the volume records")
}

// Record is volume id's record, as the volume manager holds it.
func (e *Env) Record(t testing.TB, id string) volume.Volume {
	t.Helper()
	v, err := e.Manager.Controller.Get(id)
	require.NoError(t, err, "volume %s", id)
	return v
}

// Enforcement is how the driver limits directory volumes in the pool
// named poolName.
func (e *Env) Enforcement(t testing.TB, poolName string) quota.Info {
	t.Helper()
	info, err := e.Manager.Controller.Enforcement(poolName)
	require.NoError(t, err, "enforcement of pool %s", poolName)
	return info
}

// Pool is the driver's first pool.
func (e *Env) Pool() *pool.Pool { return e.Pools[0] }

// Layout is where the driver keeps the volumes of its first pool.
func (e *Env) Layout() Layout { return Layout{StateDir: e.StateDir, Pool: e.Pools[0]} }

// Stop stops the driver and closes its client (t.Cleanup does it too;
// stopping twice is harmless).
func (e *Env) Stop() {
	e.Client.Close()
	e.Driver.Stop()
}

// Node is a hostvol node whose driver can be stopped and started again on
// the same state directory and pool, the way a reboot or a DaemonSet
// rollout restarts it. It runs the real OS adapters (RealOptions).
type Node struct {
	t        testing.TB
	StateDir string
	PoolPath string
	// Env and Client are those of the driver started last.
	Env    *Env
	Client *Client
}

// NewNode makes a state directory and a pool directory under dir (unless
// poolPath is given: an existing directory, e.g. a pool filesystem) and
// starts a driver on them with the real OS adapters.
func NewNode(t testing.TB, dir, poolPath string) *Node {
	t.Helper()
	n := &Node{t: t, StateDir: filepath.Join(dir, "state"), PoolPath: poolPath}
	if n.PoolPath == "" {
		n.PoolPath = filepath.Join(dir, "pool")
		if err := os.MkdirAll(n.PoolPath, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.Start()
	return n
}

// Start starts a new driver instance on the node's state directory and
// pool. Stop the previous one first.
func (n *Node) Start() {
	n.t.Helper()
	o := RealOptions()
	o.StateDir = n.StateDir
	o.PoolSpecs = []pool.Spec{{Name: pool.DefaultName, Path: n.PoolPath}}
	n.Env = StartDriver(n.t, o)
	n.Client = n.Env.Client
}

// Stop stops the running driver instance.
func (n *Node) Stop() {
	n.t.Helper()
	n.Env.Stop()
}

// Pool is the running driver's pool.
func (n *Node) Pool() *pool.Pool { return n.Env.Pool() }

// Layout is where the running driver keeps its volumes.
func (n *Node) Layout() Layout { return n.Env.Layout() }
