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

// Records that cannot be read are kept (never deleted) and reported: List
// lists them in ID order with the others, pages included, and the health
// calls report them as RecordUnreadable. Node-local ones are remembered
// from start-up; a shared pool's are read when listed.
func TestUnreadableRecords(t *testing.T) {
	e := newEnv(t)
	sharedDir := filepath.Join(e.dir, "shared")
	require.NoError(t, os.Mkdir(sharedDir, 0o755))
	sp, err := pool.Open(pool.Spec{Name: "shared", Path: sharedDir, Shared: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sp.Close() })
	open := func() *volume.Manager {
		m, err := volume.New(volume.Config{NodeID: "node", StateDir: e.stateDir, Pools: []*pool.Pool{e.pool, sp}, Mounter: e.mounter})
		require.NoError(t, err)
		require.NoError(t, m.Load())
		return m
	}
	m := open()
	var good []string
	for i := range 4 {
		v, err := m.Controller.Create(req(fmt.Sprintf("good-%d", i)))
		require.NoError(t, err)
		good = append(good, v.ID)
	}
	local := []string{volumeid.FromName("corrupt-1"), volumeid.FromName("corrupt-2")}
	for _, id := range local {
		require.NoError(t, os.WriteFile(filepath.Join(e.stateDir, "volumes", id+".json"), []byte("{not json"), 0o600))
	}
	sharedID := volumeid.FromName("corrupt-shared")
	sharedRecord := filepath.Join(sharedDir, ".hostvol", "records", sharedID+".json")
	require.NoError(t, os.WriteFile(sharedRecord, []byte(`{"id": 7}`), 0o600))

	m = open() // the restart that finds them
	all, next, err := m.Controller.List("", 0)
	require.NoError(t, err)
	require.Empty(t, next)
	var ids []string
	unreadable := map[string]string{}
	for _, l := range all {
		ids = append(ids, l.ID)
		if l.Unreadable != "" {
			unreadable[l.ID] = l.Unreadable
			require.Zero(t, l.CapacityBytes)
		}
	}
	require.ElementsMatch(t, append(append(append([]string{}, good...), local...), sharedID), ids)
	require.IsIncreasing(t, ids)
	require.Len(t, unreadable, 3)
	for _, id := range local {
		require.Contains(t, unreadable[id], filepath.Join(e.stateDir, "volumes", id+".json"))
		require.Contains(t, unreadable[id], "record corrupt")
	}
	require.Contains(t, unreadable[sharedID], sharedRecord)

	t.Run("pages", func(t *testing.T) {
		for _, max := range []int{1, 2, 3} {
			var got []string
			after := ""
			for range len(ids) + 1 {
				page, next, err := m.Controller.List(after, max)
				require.NoError(t, err)
				require.LessOrEqual(t, len(page), max)
				for _, l := range page {
					got = append(got, l.ID)
				}
				if next == "" {
					break
				}
				after = next
			}
			require.Equal(t, ids, got, "max %d", max)
		}
	})
	t.Run("health", func(t *testing.T) {
		for id := range unreadable {
			cs, err := m.Controller.Health(id)
			require.NoError(t, err)
			require.Equal(t, []string{"Inaccessible/" + volume.ReasonRecordUnreadable}, reasons(cs), "volume %s", id)
			require.Equal(t, volume.Inaccessible, cs[0].Severity)
			require.Contains(t, cs[0].Message, id)
		}
		list, next, err := m.Controller.ListHealth("", 0)
		require.NoError(t, err)
		require.Empty(t, next)
		listed := map[string][]string{}
		for _, h := range list {
			listed[h.ID] = reasons(h.Conditions)
		}
		for id := range unreadable {
			require.Equal(t, []string{"Inaccessible/" + volume.ReasonRecordUnreadable}, listed[id], "volume %s", id)
		}
		page, next, err := m.Controller.ListHealth("", 1)
		require.NoError(t, err)
		require.Len(t, page, 1)
		require.NotEmpty(t, next)
	})
	t.Run("never_deleted", func(t *testing.T) {
		for _, id := range local {
			require.ErrorIs(t, m.Controller.Delete(id), records.ErrCorrupt)
			require.FileExists(t, filepath.Join(e.stateDir, "volumes", id+".json"))
		}
		require.ErrorIs(t, m.Controller.Delete(sharedID), records.ErrCorrupt)
		require.FileExists(t, sharedRecord)
	})
}
