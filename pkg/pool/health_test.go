package pool

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCheck moves the pool's directory around: the path must keep naming
// the directory opened at start-up. A read-only pool needs a mount and is
// tested as root in test/health.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pool")
	require.NoError(t, os.Mkdir(path, 0o755))
	p, err := Open(Spec{Name: "a", Path: path})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })

	c := p.Check()
	require.Empty(t, c.Problem)
	require.False(t, c.ReadOnly)
	require.Positive(t, c.FS.TotalBytes)
	require.Positive(t, c.FS.AvailableBytes)

	moved := filepath.Join(dir, "moved")
	require.NoError(t, os.Rename(path, moved))
	c = p.Check()
	require.Contains(t, c.Problem, "does not exist")
	require.Zero(t, c.FS, "no figures from a path that is not the pool")

	require.NoError(t, os.Mkdir(path, 0o755))
	require.Contains(t, p.Check().Problem, "no longer the directory hostvol opened")

	require.NoError(t, os.Remove(path))
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	require.Contains(t, p.Check().Problem, "not a directory")

	require.NoError(t, os.Remove(path))
	require.NoError(t, os.Symlink(moved, path))
	require.Empty(t, p.Check().Problem, "a symlink to the pool's directory is the pool (the path is the admin's)")

	require.NoError(t, os.Remove(path))
	require.NoError(t, os.Rename(moved, path))
	require.Empty(t, p.Check().Problem)
}
