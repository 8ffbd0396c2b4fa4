package pool_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestDetectCopy probes real filesystems: ext4 clones nothing, XFS (reflink=1,
// mkfs.xfs's default) clones files, btrfs clones files and is btrfs. The
// probe leaves nothing in the pool.
func TestDetectCopy(t *testing.T) {
	testutil.RequireRootAndTools(t, "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs")
	for _, tc := range []struct {
		fs             string
		btrfs, reflink bool
	}{
		{fs: "ext4"},
		{fs: "xfs", reflink: true},
		{fs: "btrfs", btrfs: true, reflink: true},
	} {
		t.Run(tc.fs, func(t *testing.T) {
			path := testutil.NewPoolFS(t, t.TempDir(), testutil.PoolFSOptions{Type: tc.fs, Size: 300 << 20}).Path
			p, err := pool.Open(pool.Spec{Name: "p", Path: path})
			require.NoError(t, err)
			t.Cleanup(func() { p.Close() })
			// A crash during an earlier probe left its files behind.
			require.NoError(t, os.WriteFile(filepath.Join(path, "images", ".reflink-probe.src"), []byte("x"), 0o600))

			cs, err := p.DetectCopy()
			require.NoError(t, err)
			require.Equal(t, tc.btrfs, cs.Btrfs)
			require.Equal(t, tc.reflink, cs.Reflink, "reason: %s", cs.NoReflink)
			if !tc.reflink {
				require.NotEmpty(t, cs.NoReflink)
			}
			entries, err := os.ReadDir(filepath.Join(path, "images"))
			require.NoError(t, err)
			require.Empty(t, entries, "the probe removes its files")
		})
	}
}
