package volume_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

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
