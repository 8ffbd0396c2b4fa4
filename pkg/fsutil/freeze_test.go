package fsutil_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestFreezeRefusesAnotherFilesystem: Freeze checks that the path's
// filesystem is the device's before FIFREEZE, so a wrong path never
// freezes another filesystem (here, the one holding the test's temporary
// directory).
func TestFreezeRefusesAnotherFilesystem(t *testing.T) {
	dir := t.TempDir()
	require.ErrorContains(t, fsutil.Freeze(dir, "/dev/null"), "refusing to freeze")
	require.Error(t, fsutil.Freeze(filepath.Join(dir, "missing"), "/dev/null"))
	require.NoError(t, fsutil.Thaw(dir), "thawing what is not frozen is not an error")
}

// TestFreezeBlocksWritesUntilThaw freezes a real ext4 on a loop device: a
// write started while it is frozen completes only after Thaw.
func TestFreezeBlocksWritesUntilThaw(t *testing.T) {
	pfs := testutil.NewPoolFS(t, t.TempDir(), testutil.PoolFSOptions{Type: "ext4", Size: 64 << 20})
	other := testutil.NewPoolFS(t, t.TempDir(), testutil.PoolFSOptions{Type: "ext4", Size: 64 << 20})
	require.ErrorContains(t, fsutil.Freeze(pfs.Path, other.Device), "refusing to freeze", "the device of another filesystem")

	require.NoError(t, fsutil.Freeze(pfs.Path, pfs.Device))
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			_ = fsutil.Thaw(pfs.Path)
		}
	})
	done := make(chan error, 1)
	go func() { done <- os.WriteFile(filepath.Join(pfs.Path, "f"), []byte("x"), 0o644) }()
	select {
	case err := <-done:
		t.Fatalf("a write to a frozen filesystem completed: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, fsutil.Thaw(pfs.Path))
	thawed = true
	require.NoError(t, <-done)
	require.NoError(t, fsutil.Thaw(pfs.Path), "thawing twice is not an error")
	require.NoError(t, fsutil.SyncFS(pfs.Path))
	require.NoError(t, fsutil.FlushDevice(pfs.Device))
}
