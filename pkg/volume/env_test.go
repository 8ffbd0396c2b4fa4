package volume_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

const mib = int64(1) << 20

// env is a state directory and a pool that Managers can be opened on,
// again and again, as after a restart.
type env struct {
	dir      string
	stateDir string
	poolDir  string
	pool     *pool.Pool
	mounter  *mount.FakeMounter
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{dir: dir, stateDir: filepath.Join(dir, "state"), poolDir: filepath.Join(dir, "pool"), mounter: mount.NewFakeMounter(nil)}
	require.NoError(t, os.Mkdir(e.poolDir, 0o755))
	p, err := pool.Open(pool.Spec{Name: pool.DefaultName, Path: e.poolDir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	e.pool = p
	return e
}

// open opens a Manager on the env without loading it.
func (e *env) open(t *testing.T, node string) *volume.Manager {
	t.Helper()
	m, err := volume.New(volume.Config{NodeID: node, StateDir: e.stateDir, Pools: []*pool.Pool{e.pool}, Mounter: e.mounter})
	require.NoError(t, err)
	return m
}

// load opens and loads a Manager.
func (e *env) load(t *testing.T) *volume.Manager {
	t.Helper()
	m := e.open(t, "node")
	require.NoError(t, m.Load())
	require.True(t, m.Ready())
	return m
}

// records opens the node-local record store directly.
func (e *env) records(t *testing.T) *records.Store {
	t.Helper()
	s, err := records.Open(filepath.Join(e.stateDir, "volumes"))
	require.NoError(t, err)
	return s
}

func req(name string) volume.CreateRequest {
	return volume.CreateRequest{Name: name, Kind: volume.KindDir, Pool: pool.DefaultName, RequiredBytes: mib, DefaultBytes: 8 * mib}
}

// record is a volume record as Create would write it.
func record(name string, state volume.State) volume.Volume {
	return volume.Volume{
		Schema: 1, ID: volumeid.FromName(name), Name: name, Kind: volume.KindDir, Pool: pool.DefaultName,
		CapacityBytes: mib, Node: "node", CreatedBy: "node", State: state, CreatedAt: time.Now().UTC(),
	}
}

func keys(t *testing.T, s *records.Store) []string {
	t.Helper()
	k, err := s.Keys()
	require.NoError(t, err)
	return k
}

func publishReq(id, target string) volume.PublishRequest {
	return volume.PublishRequest{ID: id, TargetPath: target, Writer: true}
}

// loopEnv is an env whose Manager has a fake loop manager and a fake
// filesystem tool: the loop and block life cycle, as any user.
type loopEnv struct {
	*env
	loop *loop.Fake
	fs   *fsutil.Fake
}

func newLoopEnv(t *testing.T) *loopEnv {
	t.Helper()
	return &loopEnv{env: newEnv(t), loop: loop.NewFake(), fs: &fsutil.Fake{}}
}

func (e *loopEnv) load(t *testing.T) *volume.Manager {
	t.Helper()
	m, err := volume.New(volume.Config{NodeID: "node", StateDir: e.stateDir, Pools: []*pool.Pool{e.pool},
		Mounter: e.mounter, Loop: e.loop, FS: e.fs, InlineMaxBytes: 4 << 30, InlineMaxTotalBytes: 16 << 30})
	require.NoError(t, err)
	require.NoError(t, m.Load())
	return m
}

func loopReq(name, fsType string, size int64) volume.CreateRequest {
	return volume.CreateRequest{Name: name, Kind: volume.KindLoop, FsType: fsType, Pool: pool.DefaultName, RequiredBytes: size}
}

// loadedEnv is newEnv with its manager built and loaded.
func loadedEnv(t *testing.T) (*env, *volume.Manager) {
	e := newEnv(t)
	return e, e.load(t)
}

// loadedLoopEnv is newLoopEnv with its manager built and loaded.
func loadedLoopEnv(t *testing.T) (*loopEnv, *volume.Manager) {
	e := newLoopEnv(t)
	return e, e.load(t)
}
