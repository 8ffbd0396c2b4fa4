package volume_test

import (
	"math"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

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
