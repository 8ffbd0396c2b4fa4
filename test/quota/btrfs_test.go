package quota

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	hvquota "github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// btrfs pools: quotas enabled, one subvolume and qgroup limit per volume.
var btrfsFS = FS{
	Name:   "btrfs",
	Method: hvquota.BtrfsQgroup,
	Errno:  unix.EDQUOT,
	Gone: func(t *testing.T, pool string, h hvquota.Handle) {
		t.Helper()
		require.NotZero(t, h.SubvolumeID)
		ids, err := hvquota.BtrfsQgroups(pool)
		require.NoError(t, err)
		require.NotContains(t, ids, h.SubvolumeID, "qgroup 0/%d of a deleted volume is left", h.SubvolumeID)
		require.Equal(t, []uint64{5}, ids, "only the top level's qgroup is left")
	},
}

func TestBtrfsEnforcedLimit(t *testing.T) {
	EnforcedLimit(t, btrfsFS, testutil.BtrfsPool(t, 512<<20))
}

func TestBtrfsConcurrentCreate(t *testing.T) {
	Concurrent(t, btrfsFS, testutil.BtrfsPool(t, 512<<20))
}

// TestUnlimitedPool runs on a plain temporary directory: whatever its
// filesystem, this host's kernel enforces no project quota there.
func TestUnlimitedPool(t *testing.T) {
	testutil.RequireRoot(t)
	Unlimited(t, t.TempDir(), hostFilesystem(t))
}

func hostFilesystem(t *testing.T) string {
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(t.TempDir(), &st))
	return hvquota.FilesystemName(int64(st.Type))
}
