package quota

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestOpenTempDir detects the method of a temporary directory, as any
// user: whatever the machine, it is an answer with a reason, not an error.
func TestOpenTempDir(t *testing.T) {
	dir := t.TempDir()
	enf, err := New().Open(dir)
	require.NoError(t, err)
	defer enf.Close()
	info := enf.Info()
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &st))
	require.Equal(t, FilesystemName(int64(st.Type)), info.Filesystem)
	t.Logf("%s: %s %+v", dir, info.Method, info)
	if info.Method == None {
		require.NotEmpty(t, info.Reason, "none says why")
	}
}

func TestOpenMissing(t *testing.T) {
	_, err := New().Open("/nonexistent/hostvol-pool")
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestUnenforced(t *testing.T) {
	u := Unenforced("tmpfs", "no quotas here")
	require.Equal(t, Info{Method: None, Filesystem: "tmpfs", Reason: "no quotas here"}, u.Info())
	_, err := u.Reserve("v")
	require.ErrorIs(t, err, ErrUnsupported)
	require.ErrorContains(t, err, "no quotas here")
	require.ErrorIs(t, u.SetLimits(Handle{}, Limits{Bytes: 1}), ErrUnsupported)
	_, err = u.Usage(Handle{})
	require.ErrorIs(t, err, ErrUnsupported)
	require.NoError(t, u.Clear(Handle{Method: XFSProject, ProjectID: 1}), "nothing to clear")
}

func TestFilesystemName(t *testing.T) {
	require.Equal(t, "xfs", FilesystemName(unix.XFS_SUPER_MAGIC))
	require.Equal(t, "btrfs", FilesystemName(unix.BTRFS_SUPER_MAGIC))
	require.Equal(t, "0x1234", FilesystemName(0x1234))
}
