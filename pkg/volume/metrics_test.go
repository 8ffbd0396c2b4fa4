package volume_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

func TestVolumeCounts(t *testing.T) {
	e, m := loadedLoopEnv(t)
	require.Equal(t, map[volume.Kind]int{volume.KindDir: 0, volume.KindLoop: 0, volume.KindBlock: 0}, m.Controller.VolumeCounts())

	d, err := m.Controller.Create(req("dir"))
	require.NoError(t, err)
	_, err = m.Controller.Create(req("dir2"))
	require.NoError(t, err)
	_, err = m.Controller.Create(loopReq("loop", fsutil.Ext4, 20*mib))
	require.NoError(t, err)
	b, err := m.Controller.Create(volume.CreateRequest{Name: "block", Kind: volume.KindBlock, Pool: pool.DefaultName, RequiredBytes: mib})
	require.NoError(t, err)
	_, err = m.Controller.Create(req("dir")) // idempotent: no second count
	require.NoError(t, err)
	_, _, err = m.Controller.Expand(d.ID, 2*mib, 0) // re-indexed under the same kind
	require.NoError(t, err)
	require.Equal(t, map[volume.Kind]int{volume.KindDir: 2, volume.KindLoop: 1, volume.KindBlock: 1}, m.Controller.VolumeCounts())

	require.NoError(t, m.Controller.Delete(b.ID))
	require.NoError(t, m.Controller.Delete(b.ID)) // idempotent: no second decrement
	require.Equal(t, map[volume.Kind]int{volume.KindDir: 2, volume.KindLoop: 1, volume.KindBlock: 0}, m.Controller.VolumeCounts())

	restarted := e.load(t)
	require.Equal(t, m.Controller.VolumeCounts(), restarted.Controller.VolumeCounts(), "rebuilt by Load")
}

func TestPoolFigures(t *testing.T) {
	_, m := loadedLoopEnv(t)
	_, err := m.Controller.Create(req("dir")) // 1 MiB directory: promised whole
	require.NoError(t, err)
	_, err = m.Controller.Create(volume.CreateRequest{Name: "block", Kind: volume.KindBlock, Pool: pool.DefaultName, RequiredBytes: 4 * mib})
	require.NoError(t, err) // sparse, nothing written yet: promised whole

	figs := m.Controller.PoolFigures()
	require.Len(t, figs, 1)
	f := figs[0]
	require.NoError(t, f.Err)
	require.Equal(t, pool.DefaultName, f.Name)
	require.Equal(t, 5*mib, f.PromisedBytes)
	require.Positive(t, f.CapacityBytes)
	require.Positive(t, f.FreeBytes)
	require.LessOrEqual(t, f.FreeBytes, f.CapacityBytes)
}

func TestPoolFiguresMissingPool(t *testing.T) {
	e, m := loadedEnv(t)
	_, err := m.Controller.Create(req("dir"))
	require.NoError(t, err)
	// The pool's mount went away under the running driver.
	require.NoError(t, os.RemoveAll(e.poolDir))
	f := m.Controller.PoolFigures()[0]
	require.Error(t, f.Err)
	require.Zero(t, f.CapacityBytes)
	require.Equal(t, mib, f.PromisedBytes, "promises come from memory")
}
