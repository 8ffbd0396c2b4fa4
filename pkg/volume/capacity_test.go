package volume_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// Promised space: a sparse image counts with its full capacity, so a pool
// never promises the same bytes twice.
func TestPromisedCapacity(t *testing.T) {
	e, m := loadedLoopEnv(t)
	before, err := m.Controller.AvailableBytes(pool.DefaultName)
	require.NoError(t, err)
	v, err := m.Controller.Create(volume.CreateRequest{Name: "b", Kind: volume.KindBlock, Pool: pool.DefaultName, RequiredBytes: 64 * mib})
	require.NoError(t, err)
	after, err := m.Controller.AvailableBytes(pool.DefaultName)
	require.NoError(t, err)
	// The filesystem's free space moves with other tests on the machine:
	// allow slack, but the 64 MiB promise must show.
	require.InDelta(t, before-64*mib, after, float64(16*mib))

	_, err = m.Controller.Create(volume.CreateRequest{Name: "huge", Kind: volume.KindBlock, Pool: pool.DefaultName, RequiredBytes: after + 64*mib})
	require.ErrorIs(t, err, volume.ErrNoSpace)
	require.NoFileExists(t, e.pool.ImagePath(volumeid.FromName("huge")))

	require.NoError(t, m.Controller.Delete(v.ID))
	restored, err := m.Controller.AvailableBytes(pool.DefaultName)
	require.NoError(t, err)
	require.InDelta(t, before, restored, float64(16*mib))
}
