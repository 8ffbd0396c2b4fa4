package volume_test

import (
	"context"
	"errors"
	"fmt"
	"math"
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
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

func TestCreateGetDelete(t *testing.T) {
	e, m := loadedEnv(t)
	v, err := m.Controller.Create(req("vol"))
	require.NoError(t, err)
	require.Equal(t, volumeid.FromName("vol"), v.ID)
	require.Equal(t, volume.StateReady, v.State)
	require.Equal(t, "node", v.Node)
	require.Equal(t, mib, v.CapacityBytes)
	require.DirExists(t, e.pool.DirPath(v.ID))

	got, err := m.Controller.Get(v.ID)
	require.NoError(t, err)
	require.Equal(t, v, got)

	again, err := m.Controller.Create(req("vol"))
	require.NoError(t, err)
	require.Equal(t, v, again)

	bigger := req("vol")
	bigger.RequiredBytes = 2 * mib
	_, err = m.Controller.Create(bigger)
	require.ErrorIs(t, err, volume.ErrAlreadyExists)

	require.NoError(t, m.Controller.Delete(v.ID))
	_, err = m.Controller.Get(v.ID)
	require.ErrorIs(t, err, volume.ErrNotFound)
	require.NoDirExists(t, e.pool.DirPath(v.ID))
	require.NoError(t, m.Controller.Delete(v.ID), "deleting a missing volume succeeds")
}

func TestCreateSize(t *testing.T) {
	e, m := loadedEnv(t)
	cases := []struct {
		name     string
		required int64
		limit    int64
		want     int64
		wantErr  error
	}{
		{name: "default", want: 8 * mib},
		{name: "required", required: 3 * mib, want: 3 * mib},
		{name: "limit_below_default", limit: 2 * mib, want: 2 * mib},
		{name: "limit_above_default", limit: 16 * mib, want: 8 * mib},
		{name: "required_above_limit", required: 2 * mib, limit: mib, wantErr: volume.ErrOutOfRange},
		{name: "bigger_than_pool", required: 1 << 60, wantErr: volume.ErrNoSpace},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := req(tc.name)
			r.RequiredBytes, r.LimitBytes = tc.required, tc.limit
			v, err := m.Controller.Create(r)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				_, err := m.Controller.Get(volumeid.FromName(tc.name))
				require.ErrorIs(t, err, volume.ErrNotFound)
				require.NoDirExists(t, e.pool.DirPath(volumeid.FromName(tc.name)))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, v.CapacityBytes)
		})
	}
}

func TestCreateUnknownPool(t *testing.T) {
	m := newEnv(t).load(t)
	r := req("vol")
	r.Pool = "nope"
	_, err := m.Controller.Create(r)
	require.ErrorIs(t, err, volume.ErrPoolUnavailable)
}

// TestCreateKeepsDataWithoutRecord: data in the pool that has no record is
// reported by Load and left in place; a CreateVolume that happens to use
// the same ID must not remove it either (only DeleteVolume removes data).
func TestCreateKeepsDataWithoutRecord(t *testing.T) {
	e := newEnv(t)
	id := volumeid.FromName("vol")
	require.NoError(t, os.Mkdir(e.pool.DirPath(id), 0o777))
	precious := filepath.Join(e.pool.DirPath(id), "precious")
	require.NoError(t, os.WriteFile(precious, []byte("data"), 0o644))
	m := e.load(t)

	_, err := m.Controller.Create(req("vol"))
	require.Error(t, err)
	b, err := os.ReadFile(precious)
	require.NoError(t, err, "Create removed data it has no record of")
	require.Equal(t, "data", string(b))
	_, err = m.Controller.Get(id)
	require.ErrorIs(t, err, volume.ErrNotFound)
	require.Empty(t, keys(t, e.records(t)), "no record may point at data hostvol does not own")
}

// TestCreateFinishesHalfDoneCreate: a "creating" record left in this
// process (its rollback failed) is cleared and the volume made afresh.
func TestCreateFinishesHalfDoneCreate(t *testing.T) {
	e, m := loadedEnv(t)
	v := record("vol", volume.StateCreating)
	require.NoError(t, e.records(t).Put(v.ID, v))
	require.NoError(t, os.Mkdir(e.pool.DirPath(v.ID), 0o777))
	require.NoError(t, os.WriteFile(filepath.Join(e.pool.DirPath(v.ID), "partial"), nil, 0o644))

	_, err := m.Controller.Get(v.ID)
	require.ErrorIs(t, err, volume.ErrNotFound, "a volume being created is not visible")
	got, err := m.Controller.Create(req("vol"))
	require.NoError(t, err)
	require.Equal(t, volume.StateReady, got.State)
	require.NoFileExists(t, filepath.Join(e.pool.DirPath(v.ID), "partial"))
}

func TestLoopCreateFormatsSparseImage(t *testing.T) {
	e, m := loadedLoopEnv(t)
	v, err := m.Controller.Create(loopReq("l", fsutil.Ext4, 20*mib+1))
	require.NoError(t, err)
	require.Equal(t, 20*mib+4096, v.CapacityBytes, "rounded up to whole 4 KiB blocks")
	fi, err := os.Stat(e.pool.ImagePath(v.ID))
	require.NoError(t, err)
	require.Equal(t, v.CapacityBytes, fi.Size())
	require.Equal(t, fsutil.Ext4, e.fs.Formatted[e.pool.ImagePath(v.ID)])

	small, err := m.Controller.Create(loopReq("small-xfs", fsutil.XFS, mib))
	require.NoError(t, err)
	require.Equal(t, fsutil.MinSize[fsutil.XFS], small.CapacityBytes, "raised to the filesystem's minimum")

	tooSmall := loopReq("limited-xfs", fsutil.XFS, mib)
	tooSmall.LimitBytes = 100 * mib
	_, err = m.Controller.Create(tooSmall)
	require.ErrorIs(t, err, volume.ErrOutOfRange)

	b, err := m.Controller.Create(volume.CreateRequest{Name: "b", Kind: volume.KindBlock, Pool: pool.DefaultName, RequiredBytes: 3 * mib})
	require.NoError(t, err)
	require.NotContains(t, e.fs.Formatted, e.pool.ImagePath(b.ID), "block volumes are never formatted")
}

func TestLoopFormatFailureLeavesNothing(t *testing.T) {
	e := newLoopEnv(t)
	e.fs.Err = os.ErrPermission
	m := e.load(t)
	_, err := m.Controller.Create(loopReq("l", fsutil.Ext4, 20*mib))
	require.Error(t, err)
	entries, err := os.ReadDir(filepath.Join(e.poolDir, "images"))
	require.NoError(t, err)
	require.Empty(t, entries)
	keys, err := e.records(t).Keys()
	require.NoError(t, err)
	require.Empty(t, keys)
}

// A size near the largest int64 must not overflow when rounded to whole
// blocks (it once became negative and reached truncate(2)).
func TestLoopCreateHugeSize(t *testing.T) {
	e, m := loadedLoopEnv(t)
	for _, size := range []int64{math.MaxInt64, math.MaxInt64 - 100, 1 << 62} {
		_, err := m.Controller.Create(loopReq(fmt.Sprintf("huge-%d", size), fsutil.Ext4, size))
		require.ErrorIs(t, err, volume.ErrNoSpace, "size %d", size)
	}
	entries, err := os.ReadDir(filepath.Join(e.poolDir, "images"))
	require.NoError(t, err)
	require.Empty(t, entries)
}

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
