package volume_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// requireNothingCreated checks that a failed create left no image, no
// data directory and no record behind.
func requireNothingCreated(t *testing.T, poolDir, stateDir string) {
	t.Helper()
	for _, d := range []string{filepath.Join(poolDir, "images"), filepath.Join(poolDir, "volumes"), filepath.Join(stateDir, "volumes")} {
		entries, err := os.ReadDir(d)
		require.NoError(t, err)
		require.Empty(t, entries, "%s after a failed create", d)
	}
}

// A format that fails because the pool filled up is ErrNoSpace (the
// driver's RESOURCE_EXHAUSTED), and the creation is rolled back.
func TestFormatNoSpaceIsErrNoSpace(t *testing.T) {
	e := newLoopEnv(t)
	e.fs.Err = fmt.Errorf("mkfs.ext4 -F ...: %w: exit status 1: mkfs.ext4: No space left on device while writing out and closing file system", fsutil.ErrNoSpace)
	m := e.load(t)
	_, err := m.Controller.Create(loopReq("full", fsutil.Ext4, 20*mib))
	require.ErrorIs(t, err, volume.ErrNoSpace)
	requireNothingCreated(t, e.poolDir, e.stateDir)
	avail, err := m.Controller.AvailableBytes(pool.DefaultName)
	require.NoError(t, err)
	st, err := e.pool.Stats()
	require.NoError(t, err)
	require.InDelta(t, st.AvailableBytes, avail, float64(16*mib), "the rollback returned the promise")

	e.fs.Err = errors.New("mkfs.ext4: some other failure")
	_, err = m.Controller.Create(loopReq("other", fsutil.Ext4, 20*mib))
	require.Error(t, err)
	require.NotErrorIs(t, err, volume.ErrNoSpace, "only a full pool is RESOURCE_EXHAUSTED")
	requireNothingCreated(t, e.poolDir, e.stateDir)
}

// fillingFS is the real mkfs, run after the pool was filled up to the last
// byte by something outside hostvol (a file beside the pool's
// directories), so that the promises let the create through and mkfs
// itself hits ENOSPC.
type fillingFS struct {
	fsutil.Interface
	filler string
	filled bool // only the first Format fills
}

func (f *fillingFS) Format(ctx context.Context, fsType, path string) error {
	if !f.filled {
		f.filled = true
		if err := fill(f.filler); err != nil {
			return err
		}
	}
	return f.Interface.Format(ctx, fsType, path)
}

// fill writes zeros to path until its filesystem is full.
func fill(path string) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer fh.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := fh.Write(buf); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return nil
			}
			return err
		}
	}
}

// A full pool while mkfs formats a new loop volume's image, for real: a
// small tmpfs as the pool, filled after the promise check. The create is
// ErrNoSpace because mkfs reported ENOSPC, and nothing of it is left: once
// the space is back, the same create succeeds.
func TestFormatFullPoolForReal(t *testing.T) {
	testutil.RequireRoot(t)
	cases := []struct {
		name     string
		fsType   string
		poolSize int64
	}{
		{name: "ext4", fsType: fsutil.Ext4, poolSize: fsutil.MinSize[fsutil.Ext4] + 8*mib},
		{name: "xfs", fsType: fsutil.XFS, poolSize: fsutil.MinSize[fsutil.XFS] + 8*mib},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name, _, err := fsutil.MkfsArgs(tc.fsType, "x")
			require.NoError(t, err)
			if _, err := utilexec.New().LookPath(name); err != nil {
				t.Fatalf("%s is not installed (make deps installs it)", name)
			}
			dir := t.TempDir()
			poolDir, stateDir := filepath.Join(dir, "pool"), filepath.Join(dir, "state")
			require.NoError(t, os.Mkdir(poolDir, 0o755))
			require.NoError(t, unix.Mount("tmpfs", poolDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", tc.poolSize)))
			t.Cleanup(func() { require.NoError(t, unix.Unmount(poolDir, unix.MNT_DETACH)) })
			p, err := pool.Open(pool.Spec{Name: pool.DefaultName, Path: poolDir})
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close() })
			filler := filepath.Join(poolDir, "filler")
			m, err := volume.New(volume.Config{
				NodeID: "node", StateDir: stateDir, Pools: []*pool.Pool{p}, Mounter: mount.NewFakeMounter(nil),
				Loop: loop.NewFake(), FS: &fillingFS{Interface: fsutil.New(utilexec.New()), filler: filler},
			})
			require.NoError(t, err)
			require.NoError(t, m.Load())

			_, err = m.Controller.Create(loopReq("full", tc.fsType, fsutil.MinSize[tc.fsType]))
			require.ErrorIs(t, err, volume.ErrNoSpace)
			require.ErrorIs(t, err, fsutil.ErrNoSpace, "mkfs itself hit ENOSPC: %v", err)
			requireNothingCreated(t, poolDir, stateDir)

			// The pool holds one such volume: the failed create must have
			// returned its promise as well as its files.
			require.NoError(t, os.Remove(filler))
			v, err := m.Controller.Create(loopReq("full", tc.fsType, fsutil.MinSize[tc.fsType]))
			require.NoError(t, err, "nothing of the failed create is in the way")
			require.NoError(t, m.Controller.Delete(v.ID))
		})
	}
}
