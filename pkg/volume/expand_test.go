package volume_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

func TestExpand(t *testing.T) {
	e, m := loadedLoopEnv(t)
	v, err := m.Controller.Create(loopReq("l", fsutil.Ext4, 20*mib))
	require.NoError(t, err)

	size, node, err := m.Controller.Expand(v.ID, 30*mib+1, 0)
	require.NoError(t, err)
	require.True(t, node)
	require.Equal(t, 30*mib+4096, size)
	fi, err := os.Stat(e.pool.ImagePath(v.ID))
	require.NoError(t, err)
	require.Equal(t, size, fi.Size())

	again, node, err := m.Controller.Expand(v.ID, 25*mib, 0)
	require.NoError(t, err, "already large enough")
	require.Equal(t, size, again)
	require.True(t, node, "the node has not followed yet")

	_, _, err = m.Controller.Expand(v.ID, 10*mib, 20*mib)
	require.ErrorIs(t, err, volume.ErrOutOfRange, "a limit below the size would shrink it")

	// Not staged: the node follows at the next stage (ext4: offline grow).
	staging := filepath.Join(e.dir, "staging")
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging}))
	require.Len(t, e.fs.GrownOffline, 1)
	got, err := m.Controller.Get(v.ID)
	require.NoError(t, err)
	require.False(t, got.NodeExpandPending)

	// Staged: NodeExpandVolume refreshes the device and grows online.
	_, _, err = m.Controller.Expand(v.ID, 40*mib, 0)
	require.NoError(t, err)
	n, err := m.Node.Expand(t.Context(), v.ID, staging, 0, 0)
	require.NoError(t, err)
	require.Equal(t, 40*mib, n)
	require.Equal(t, []string{staging}, e.fs.Grown)
	dev := ""
	for d := range e.loop.Attached() {
		dev = d
	}
	devSize, err := e.loop.Size(dev)
	require.NoError(t, err)
	require.Equal(t, 40*mib, devSize)

	_, err = m.Node.Expand(t.Context(), v.ID, filepath.Join(e.dir, "elsewhere"), 0, 0)
	require.ErrorIs(t, err, volume.ErrNotFound, "only where the volume is staged or published")

	d, err := m.Controller.Create(req("dir"))
	require.NoError(t, err)
	size, node, err = m.Controller.Expand(d.ID, 2*mib, 0)
	require.NoError(t, err)
	require.False(t, node, "directory volumes need nothing on the node")
	require.Equal(t, 2*mib, size)
}

// Sizes near the largest int64 must neither overflow the 4 KiB rounding
// (it once reached GrowImage as -9223372036854771712) nor the promise
// check (before+size wrapped negative and passed it). A size no image can
// have is OUT_OF_RANGE; a size that rounds but that no pool holds is
// RESOURCE_EXHAUSTED. Nothing changes either way.
func TestExpandHugeSize(t *testing.T) {
	const maxImage = math.MaxInt64 / 4096 * 4096
	cases := []struct {
		name     string
		kind     volume.Kind
		required int64
		want     error
	}{
		{name: "loop_max_int64", kind: volume.KindLoop, required: math.MaxInt64, want: volume.ErrOutOfRange},
		{name: "loop_max_int64_minus_100", kind: volume.KindLoop, required: math.MaxInt64 - 100, want: volume.ErrOutOfRange},
		{name: "loop_just_over_the_largest_image", kind: volume.KindLoop, required: maxImage + 1, want: volume.ErrOutOfRange},
		{name: "loop_largest_image", kind: volume.KindLoop, required: maxImage, want: volume.ErrNoSpace},
		{name: "loop_largest_image_minus_a_block", kind: volume.KindLoop, required: maxImage - 4096 - 1, want: volume.ErrNoSpace},
		{name: "block_max_int64", kind: volume.KindBlock, required: math.MaxInt64, want: volume.ErrOutOfRange},
		{name: "block_2_pow_62", kind: volume.KindBlock, required: 1 << 62, want: volume.ErrNoSpace},
		{name: "dir_max_int64", kind: volume.KindDir, required: math.MaxInt64, want: volume.ErrNoSpace},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newLoopEnv(t)
			m := e.load(t)
			r := volume.CreateRequest{Name: "v", Kind: tc.kind, Pool: pool.DefaultName, RequiredBytes: 20 * mib}
			if tc.kind == volume.KindLoop {
				r.FsType = fsutil.Ext4
			}
			if tc.kind == volume.KindDir {
				r.SizeLimit = volume.SizeLimitOptional
			}
			v, err := m.Controller.Create(r)
			require.NoError(t, err)

			_, _, err = m.Controller.Expand(v.ID, tc.required, 0)
			require.ErrorIs(t, err, tc.want)

			got, err := m.Controller.Get(v.ID)
			require.NoError(t, err)
			require.Equal(t, v.CapacityBytes, got.CapacityBytes, "the record is unchanged")
			require.False(t, got.NodeExpandPending)
			if tc.kind.HasImage() {
				fi, err := os.Stat(e.pool.ImagePath(v.ID))
				require.NoError(t, err)
				require.Equal(t, v.CapacityBytes, fi.Size(), "the image is unchanged")
			}
		})
	}
}
