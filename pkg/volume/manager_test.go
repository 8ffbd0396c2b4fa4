package volume_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	mount "k8s.io/mount-utils"

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

func TestNewValidatesConfig(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		cfg  volume.Config
	}{
		{name: "no_node_id", cfg: volume.Config{StateDir: e.stateDir, Mounter: e.mounter}},
		{name: "no_mounter", cfg: volume.Config{NodeID: "n", StateDir: e.stateDir}},
		{name: "pool_twice", cfg: volume.Config{NodeID: "n", StateDir: e.stateDir, Mounter: e.mounter, Pools: []*pool.Pool{e.pool, e.pool}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := volume.New(tc.cfg)
			require.Error(t, err)
		})
	}
}

func TestCreateGetDelete(t *testing.T) {
	e := newEnv(t)
	m := e.load(t)
	v, err := m.Controller.Create(req("vol"))
	require.NoError(t, err)
	require.Equal(t, volumeid.FromName("vol"), v.ID)
	require.Equal(t, volume.StateReady, v.State)
	require.Equal(t, "node", v.Node)
	require.Equal(t, mib, v.CapacityBytes)
	require.DirExists(t, e.pool.DirPath(v.ID))

	got, err := m.Controller.Get(v.ID)
	require.NoError(t, err)
	require.Equal(t, v, got)

	again, err := m.Controller.Create(req("vol"))
	require.NoError(t, err)
	require.Equal(t, v, again)

	bigger := req("vol")
	bigger.RequiredBytes = 2 * mib
	_, err = m.Controller.Create(bigger)
	require.ErrorIs(t, err, volume.ErrAlreadyExists)

	require.NoError(t, m.Controller.Delete(v.ID))
	_, err = m.Controller.Get(v.ID)
	require.ErrorIs(t, err, volume.ErrNotFound)
	require.NoDirExists(t, e.pool.DirPath(v.ID))
	require.NoError(t, m.Controller.Delete(v.ID), "deleting a missing volume succeeds")
}

func TestCreateSize(t *testing.T) {
	e := newEnv(t)
	m := e.load(t)
	cases := []struct {
		name     string
		required int64
		limit    int64
		want     int64
		wantErr  error
	}{
		{name: "default", want: 8 * mib},
		{name: "required", required: 3 * mib, want: 3 * mib},
		{name: "limit_below_default", limit: 2 * mib, want: 2 * mib},
		{name: "limit_above_default", limit: 16 * mib, want: 8 * mib},
		{name: "required_above_limit", required: 2 * mib, limit: mib, wantErr: volume.ErrOutOfRange},
		{name: "bigger_than_pool", required: 1 << 60, wantErr: volume.ErrNoSpace},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := req(tc.name)
			r.RequiredBytes, r.LimitBytes = tc.required, tc.limit
			v, err := m.Controller.Create(r)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				_, err := m.Controller.Get(volumeid.FromName(tc.name))
				require.ErrorIs(t, err, volume.ErrNotFound)
				require.NoDirExists(t, e.pool.DirPath(volumeid.FromName(tc.name)))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, v.CapacityBytes)
		})
	}
}

func TestCreateUnknownPool(t *testing.T) {
	m := newEnv(t).load(t)
	r := req("vol")
	r.Pool = "nope"
	_, err := m.Controller.Create(r)
	require.ErrorIs(t, err, volume.ErrPoolUnavailable)
}

// TestCreateKeepsDataWithoutRecord: data in the pool that has no record is
// reported by Load and left in place; a CreateVolume that happens to use
// the same ID must not remove it either (only DeleteVolume removes data).
func TestCreateKeepsDataWithoutRecord(t *testing.T) {
	e := newEnv(t)
	id := volumeid.FromName("vol")
	require.NoError(t, os.Mkdir(e.pool.DirPath(id), 0o777))
	precious := filepath.Join(e.pool.DirPath(id), "precious")
	require.NoError(t, os.WriteFile(precious, []byte("data"), 0o644))
	m := e.load(t)

	_, err := m.Controller.Create(req("vol"))
	require.Error(t, err)
	b, err := os.ReadFile(precious)
	require.NoError(t, err, "Create removed data it has no record of")
	require.Equal(t, "data", string(b))
	_, err = m.Controller.Get(id)
	require.ErrorIs(t, err, volume.ErrNotFound)
	require.Empty(t, keys(t, e.records(t)), "no record may point at data hostvol does not own")
}

func keys(t *testing.T, s *records.Store) []string {
	t.Helper()
	k, err := s.Keys()
	require.NoError(t, err)
	return k
}

// TestCreateFinishesHalfDoneCreate: a "creating" record left in this
// process (its rollback failed) is cleared and the volume made afresh.
func TestCreateFinishesHalfDoneCreate(t *testing.T) {
	e := newEnv(t)
	m := e.load(t)
	v := record("vol", volume.StateCreating)
	require.NoError(t, e.records(t).Put(v.ID, v))
	require.NoError(t, os.Mkdir(e.pool.DirPath(v.ID), 0o777))
	require.NoError(t, os.WriteFile(filepath.Join(e.pool.DirPath(v.ID), "partial"), nil, 0o644))

	_, err := m.Controller.Get(v.ID)
	require.ErrorIs(t, err, volume.ErrNotFound, "a volume being created is not visible")
	got, err := m.Controller.Create(req("vol"))
	require.NoError(t, err)
	require.Equal(t, volume.StateReady, got.State)
	require.NoFileExists(t, filepath.Join(e.pool.DirPath(v.ID), "partial"))
}

func TestLoadReconciles(t *testing.T) {
	e := newEnv(t)
	s := e.records(t)
	put := func(v volume.Volume, withData bool, files ...string) {
		require.NoError(t, s.Put(v.ID, v))
		if withData {
			require.NoError(t, os.Mkdir(e.pool.DirPath(v.ID), 0o777))
			for _, f := range files {
				require.NoError(t, os.WriteFile(filepath.Join(e.pool.DirPath(v.ID), f), []byte(f), 0o644))
			}
		}
	}
	ready := record("ready", volume.StateReady)
	put(ready, true, "keep")
	readyNoData := record("ready-no-data", volume.StateReady)
	put(readyNoData, false)
	creating := record("creating", volume.StateCreating)
	put(creating, true, "partial")
	creatingNoData := record("creating-no-data", volume.StateCreating)
	put(creatingNoData, false)
	deleting := record("deleting", volume.StateDeleting)
	put(deleting, true, "half-deleted")
	orphan := volumeid.FromName("orphan")
	require.NoError(t, os.Mkdir(e.pool.DirPath(orphan), 0o777))
	require.NoError(t, os.WriteFile(filepath.Join(e.pool.DirPath(orphan), "orphan"), []byte("orphan"), 0o644))
	corrupt := volumeid.FromName("corrupt")
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), corrupt+".json"), []byte("{not json"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), "README.json"), []byte("not a record"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(), ".tmp-"+ready.ID+"-123"), []byte("torn"), 0o600))

	m := e.open(t, "node")
	require.False(t, m.Ready())
	require.NoError(t, m.Load())
	require.True(t, m.Ready())

	t.Run("ready_kept", func(t *testing.T) {
		got, err := m.Controller.Get(ready.ID)
		require.NoError(t, err)
		require.Equal(t, ready.Name, got.Name)
		require.FileExists(t, filepath.Join(e.pool.DirPath(ready.ID), "keep"))
	})
	t.Run("ready_without_data_keeps_record", func(t *testing.T) {
		_, err := m.Controller.Get(readyNoData.ID)
		require.NoError(t, err)
	})
	t.Run("creating_rolled_back", func(t *testing.T) {
		for _, v := range []volume.Volume{creating, creatingNoData} {
			_, err := m.Controller.Get(v.ID)
			require.ErrorIs(t, err, volume.ErrNotFound)
			require.NoDirExists(t, e.pool.DirPath(v.ID))
			require.NoFileExists(t, filepath.Join(s.Dir(), v.ID+".json"))
		}
	})
	t.Run("deleting_finished", func(t *testing.T) {
		_, err := m.Controller.Get(deleting.ID)
		require.ErrorIs(t, err, volume.ErrNotFound)
		require.NoDirExists(t, e.pool.DirPath(deleting.ID))
		require.NoFileExists(t, filepath.Join(s.Dir(), deleting.ID+".json"))
	})
	t.Run("orphan_data_left_in_place", func(t *testing.T) {
		require.FileExists(t, filepath.Join(e.pool.DirPath(orphan), "orphan"))
	})
	t.Run("corrupt_record_left_in_place", func(t *testing.T) {
		require.FileExists(t, filepath.Join(s.Dir(), corrupt+".json"))
		_, err := m.Controller.Get(corrupt)
		require.ErrorIs(t, err, records.ErrCorrupt)
		require.ErrorIs(t, m.Controller.Delete(corrupt), records.ErrCorrupt, "never delete what cannot be read")
	})
	t.Run("foreign_file_ignored", func(t *testing.T) {
		require.FileExists(t, filepath.Join(s.Dir(), "README.json"))
	})
	t.Run("list_shows_ready_and_unreadable", func(t *testing.T) {
		vols, next, err := m.Controller.List("", 0)
		require.NoError(t, err)
		require.Empty(t, next)
		var ids, unreadable []string
		for _, v := range vols {
			ids = append(ids, v.ID)
			if v.Unreadable != "" {
				unreadable = append(unreadable, v.ID)
			}
		}
		require.ElementsMatch(t, []string{ready.ID, readyNoData.ID, corrupt}, ids)
		require.Equal(t, []string{corrupt}, unreadable)
	})
}

func TestLoadCreatingInMissingPoolFails(t *testing.T) {
	e := newEnv(t)
	v := record("vol", volume.StateCreating)
	v.Pool = "gone"
	require.NoError(t, e.records(t).Put(v.ID, v))
	m := e.open(t, "node")
	require.ErrorIs(t, m.Load(), volume.ErrPoolUnavailable)
	require.False(t, m.Ready())
}

func TestRestartKeepsVolumes(t *testing.T) {
	e := newEnv(t)
	first := e.load(t)
	var ids []string
	for i := range 5 {
		v, err := first.Controller.Create(req(fmt.Sprintf("vol-%d", i)))
		require.NoError(t, err)
		ids = append(ids, v.ID)
	}
	require.NoError(t, first.Controller.Delete(ids[0]))

	second := e.load(t)
	vols, _, err := second.Controller.List("", 0)
	require.NoError(t, err)
	require.Len(t, vols, 4)
	for _, id := range ids[1:] {
		_, err := second.Controller.Get(id)
		require.NoError(t, err)
	}
	_, err = second.Controller.Get(ids[0])
	require.ErrorIs(t, err, volume.ErrNotFound)
}

func TestList(t *testing.T) {
	m := newEnv(t).load(t)
	var all []string
	for i := range 10 {
		v, err := m.Controller.Create(req(fmt.Sprintf("vol-%d", i)))
		require.NoError(t, err)
		all = append(all, v.ID)
	}
	var got []string
	after := ""
	for range 20 {
		vols, next, err := m.Controller.List(after, 3)
		require.NoError(t, err)
		require.LessOrEqual(t, len(vols), 3)
		for _, v := range vols {
			got = append(got, v.ID)
		}
		if next == "" {
			break
		}
		require.Equal(t, vols[len(vols)-1].ID, next)
		after = next
	}
	require.ElementsMatch(t, all, got)
	require.IsIncreasing(t, got)
}

func publishReq(id, target string) volume.PublishRequest {
	return volume.PublishRequest{ID: id, TargetPath: target, Writer: true}
}

func TestPublish(t *testing.T) {
	e := newEnv(t)
	m := e.load(t)
	rw, err := m.Controller.Create(req("rw"))
	require.NoError(t, err)
	roReq := req("ro")
	roReq.ReaderOnly = true
	ro, err := m.Controller.Create(roReq)
	require.NoError(t, err)
	target := func(name string) string { return filepath.Join(e.dir, name) }

	t.Run("writer_on_reader_only", func(t *testing.T) {
		require.ErrorIs(t, m.Node.Publish(publishReq(ro.ID, target("w"))), volume.ErrNotAllowed)
		require.NoDirExists(t, target("w"))
	})
	t.Run("reader_on_reader_only_mounts_read_only", func(t *testing.T) {
		require.NoError(t, m.Node.Publish(volume.PublishRequest{ID: ro.ID, TargetPath: target("r")}))
		mps, err := e.mounter.List()
		require.NoError(t, err)
		var opts []string
		for _, mp := range mps {
			if mp.Path == target("r") {
				opts = mp.Opts
			}
		}
		require.Contains(t, opts, "ro")
		require.NoError(t, m.Node.Unpublish(ro.ID, target("r")))
	})
	t.Run("single_writer", func(t *testing.T) {
		sw := publishReq(rw.ID, target("a"))
		sw.SingleWriter = true
		require.NoError(t, m.Node.Publish(sw))
		require.NoError(t, m.Node.Publish(sw), "idempotent")
		require.ErrorIs(t, m.Node.Publish(publishReq(rw.ID, target("b"))), volume.ErrInUse)
		require.ErrorIs(t, m.Controller.Delete(rw.ID), volume.ErrInUse)
		require.NoError(t, m.Node.Unpublish(rw.ID, target("a")))
		require.NoError(t, m.Node.Publish(publishReq(rw.ID, target("b"))))
		ro := publishReq(rw.ID, target("b"))
		ro.ReadOnly = true
		require.ErrorIs(t, m.Node.Publish(ro), volume.ErrAlreadyExists)
		require.NoError(t, m.Node.Unpublish(rw.ID, target("b")))
	})
	t.Run("unknown_volume", func(t *testing.T) {
		id := volumeid.FromName("nope")
		require.ErrorIs(t, m.Node.Publish(publishReq(id, target("x"))), volume.ErrNotFound)
		require.ErrorIs(t, m.Node.Unpublish(id, target("x")), volume.ErrNotFound)
		require.ErrorIs(t, m.Node.Stage(volume.StageRequest{ID: id, StagingPath: target("s")}), volume.ErrNotFound)
		_, err := m.Node.Stats(id, target("x"))
		require.ErrorIs(t, err, volume.ErrNotFound)
	})
	t.Run("stats_need_a_publication", func(t *testing.T) {
		_, err := m.Node.Stats(rw.ID, target("never"))
		require.ErrorIs(t, err, volume.ErrNotFound)
		require.NoError(t, m.Node.Publish(publishReq(rw.ID, target("s"))))
		st, err := m.Node.Stats(rw.ID, target("s"))
		require.NoError(t, err)
		require.Positive(t, st.TotalBytes)
		require.Positive(t, st.TotalInodes)
		require.NoError(t, m.Node.Unpublish(rw.ID, target("s")))
	})
	t.Run("another_nodes_volume", func(t *testing.T) {
		other := e.open(t, "other-node")
		require.NoError(t, other.Load())
		err := other.Node.Publish(publishReq(rw.ID, target("o")))
		require.True(t, errors.Is(err, volume.ErrNotFound), "error: %v", err)
		require.ErrorIs(t, other.Node.Stage(volume.StageRequest{ID: rw.ID, StagingPath: target("o")}), volume.ErrNotFound)
		require.NoDirExists(t, target("o"))
	})
}

func TestStaleTargetsDroppedAfterReboot(t *testing.T) {
	e := newEnv(t)
	m := e.load(t)
	v, err := m.Controller.Create(req("vol"))
	require.NoError(t, err)
	sw := publishReq(v.ID, filepath.Join(e.dir, "a"))
	sw.SingleWriter = true
	require.NoError(t, m.Node.Publish(sw))

	// Same mounts: the publication is remembered.
	again := e.load(t)
	require.ErrorIs(t, again.Controller.Delete(v.ID), volume.ErrInUse)
	require.ErrorIs(t, again.Node.Publish(publishReq(v.ID, filepath.Join(e.dir, "b"))), volume.ErrInUse)

	// A reboot: the mounts are gone, and so is the publication.
	e.mounter = mount.NewFakeMounter(nil)
	rebooted := e.load(t)
	require.NoError(t, rebooted.Node.Publish(publishReq(v.ID, filepath.Join(e.dir, "b"))))
	require.NoError(t, rebooted.Node.Unpublish(v.ID, filepath.Join(e.dir, "b")))
	require.NoError(t, rebooted.Controller.Delete(v.ID))
	require.NoFileExists(t, filepath.Join(e.stateDir, "node", v.ID+".json"))
}
