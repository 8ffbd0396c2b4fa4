package volume_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// loopEnv is an env whose Manager has a fake loop manager and a fake
// filesystem tool: the loop and block life cycle, as any user.
type loopEnv struct {
	*env
	loop *loop.Fake
	fs   *fsutil.Fake
}

func newLoopEnv(t *testing.T) *loopEnv {
	t.Helper()
	return &loopEnv{env: newEnv(t), loop: loop.NewFake(), fs: &fsutil.Fake{}}
}

func (e *loopEnv) load(t *testing.T) *volume.Manager {
	t.Helper()
	m, err := volume.New(volume.Config{NodeID: "node", StateDir: e.stateDir, Pools: []*pool.Pool{e.pool},
		Mounter: e.mounter, Loop: e.loop, FS: e.fs, InlineMaxBytes: 4 << 30, InlineMaxTotalBytes: 16 << 30})
	require.NoError(t, err)
	require.NoError(t, m.Load())
	return m
}

func loopReq(name, fsType string, size int64) volume.CreateRequest {
	return volume.CreateRequest{Name: name, Kind: volume.KindLoop, FsType: fsType, Pool: pool.DefaultName, RequiredBytes: size}
}

func TestLoopCreateFormatsSparseImage(t *testing.T) {
	e := newLoopEnv(t)
	m := e.load(t)
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

func TestLoopStagePublishLifecycle(t *testing.T) {
	e := newLoopEnv(t)
	m := e.load(t)
	v, err := m.Controller.Create(loopReq("l", fsutil.Ext4, 20*mib))
	require.NoError(t, err)
	staging := filepath.Join(e.dir, "staging")
	target := filepath.Join(e.dir, "target")

	require.ErrorIs(t, m.Node.Publish(publishReq(v.ID, target)), volume.ErrNotStaged, "publish needs the staging mount")
	require.ErrorIs(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging, Block: true}), volume.ErrInvalid)
	require.ErrorIs(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging, FsType: fsutil.XFS}), volume.ErrInvalid)

	stage := volume.StageRequest{ID: v.ID, StagingPath: staging, MountFlags: []string{"discard"}}
	require.NoError(t, m.Node.Stage(stage))
	require.NoError(t, m.Node.Stage(stage), "staging again is idempotent")
	require.Equal(t, 1, e.loop.Attaches(), "never a second loop device for one image")
	mps, err := e.mounter.List()
	require.NoError(t, err)
	require.Len(t, mps, 1)
	require.Equal(t, "ext4", mps[0].Type)
	require.Contains(t, mps[0].Opts, "discard")

	require.NoError(t, m.Node.Publish(publishReq(v.ID, target)))
	require.ErrorIs(t, m.Controller.Delete(v.ID), volume.ErrInUse)
	require.ErrorIs(t, m.Node.Unstage(v.ID, staging), volume.ErrInUse, "unpublish first")

	require.NoError(t, m.Node.Unpublish(v.ID, target))
	require.NoError(t, m.Node.Unstage(v.ID, staging))
	require.NoError(t, m.Node.Unstage(v.ID, staging), "unstaging again is idempotent")
	require.Empty(t, e.loop.Attached())
	require.NoError(t, m.Controller.Delete(v.ID))
	require.NoFileExists(t, e.pool.ImagePath(v.ID))
}

// After a reboot the loop device and the mounts are gone while the records
// remain: staging again attaches and mounts from the record.
func TestLoopRestageAfterReboot(t *testing.T) {
	e := newLoopEnv(t)
	m := e.load(t)
	v, err := m.Controller.Create(loopReq("l", fsutil.Ext4, 20*mib))
	require.NoError(t, err)
	staging := filepath.Join(e.dir, "staging")
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging}))

	// Reboot: new mounter, no loop devices, a new Manager on the same state.
	e.mounter = mount.NewFakeMounter(nil)
	e.loop = loop.NewFake()
	m = e.load(t)
	require.NoError(t, m.Controller.Delete(v.ID) /* nothing attached or mounted any more */)

	v, err = m.Controller.Create(loopReq("l2", fsutil.Ext4, 20*mib))
	require.NoError(t, err)
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging}))
	e.mounter = mount.NewFakeMounter(nil)
	e.loop = loop.NewFake()
	m = e.load(t)
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging}))
	require.Equal(t, 1, e.loop.Attaches())
	mps, err := e.mounter.List()
	require.NoError(t, err)
	require.Len(t, mps, 1)
}

func TestBlockPublishBindsDeviceOntoFile(t *testing.T) {
	e := newLoopEnv(t)
	m := e.load(t)
	v, err := m.Controller.Create(volume.CreateRequest{Name: "b", Kind: volume.KindBlock, Pool: pool.DefaultName, RequiredBytes: 3 * mib})
	require.NoError(t, err)
	staging := filepath.Join(e.dir, "staging")
	target := filepath.Join(e.dir, "pod", "dev")
	require.ErrorIs(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging}), volume.ErrInvalid, "mount access on a block volume")
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging, Block: true}))
	pr := publishReq(v.ID, target)
	pr.Block = true
	require.NoError(t, m.Node.Publish(pr))
	fi, err := os.Stat(target)
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular(), "the target is a file the device is bound onto")
	mps, err := e.mounter.List()
	require.NoError(t, err)
	require.Len(t, mps, 1)
	dev := mps[0].Device
	require.Contains(t, e.loop.Attached(), dev)

	st, err := m.Node.Stats(v.ID, target)
	require.NoError(t, err)
	require.Equal(t, 3*mib, st.TotalBytes)
	require.NoError(t, m.Node.Unpublish(v.ID, target))
	require.NoFileExists(t, target)
	require.NoError(t, m.Node.Unstage(v.ID, staging))
	require.Empty(t, e.loop.Attached())
}

func TestExpand(t *testing.T) {
	e := newLoopEnv(t)
	m := e.load(t)
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

// Promised space: a sparse image counts with its full capacity, so a pool
// never promises the same bytes twice.
func TestPromisedCapacity(t *testing.T) {
	e := newLoopEnv(t)
	m := e.load(t)
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

// A block volume staged at one path may be staged at another once that
// staging is gone (its loop device vanished with a reboot), not before.
func TestBlockRestageElsewhereAfterReboot(t *testing.T) {
	e := newLoopEnv(t)
	m := e.load(t)
	v, err := m.Controller.Create(volume.CreateRequest{Name: "b", Kind: volume.KindBlock, Pool: pool.DefaultName, RequiredBytes: 3 * mib})
	require.NoError(t, err)
	a, b := filepath.Join(e.dir, "a"), filepath.Join(e.dir, "b")
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: a, Block: true}))
	require.ErrorIs(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: b, Block: true}), volume.ErrAlreadyExists)

	e.mounter = mount.NewFakeMounter(nil)
	e.loop = loop.NewFake()
	m = e.load(t)
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: b, Block: true}))
	require.Len(t, e.loop.Attached(), 1)
}

// A size near the largest int64 must not overflow when rounded to whole
// blocks (it once became negative and reached truncate(2)).
func TestLoopCreateHugeSize(t *testing.T) {
	e := newLoopEnv(t)
	m := e.load(t)
	for _, size := range []int64{math.MaxInt64, math.MaxInt64 - 100, 1 << 62} {
		_, err := m.Controller.Create(loopReq(fmt.Sprintf("huge-%d", size), fsutil.Ext4, size))
		require.ErrorIs(t, err, volume.ErrNoSpace, "size %d", size)
	}
	entries, err := os.ReadDir(filepath.Join(e.poolDir, "images"))
	require.NoError(t, err)
	require.Empty(t, entries)
}

// An inline volume on the fake layer: one publish creates, stages and
// publishes it; a retry changes nothing; a second target keeps it alive
// through the first unpublish; the last unpublish deletes it.
func TestEphemeralLifecycle(t *testing.T) {
	e := newLoopEnv(t)
	m := e.load(t)
	handle := "csi-" + strings.Repeat("ab", 32)
	req := volume.EphemeralRequest{
		Create:  volume.CreateRequest{Name: volume.EphemeralName(handle), Kind: volume.KindLoop, FsType: fsutil.Ext4, Pool: pool.DefaultName, RequiredBytes: 20 * mib, PVCName: "pod", PVCNamespace: "ns"},
		Publish: volume.PublishRequest{TargetPath: filepath.Join(e.dir, "t1"), Writer: true},
	}
	_, ok := m.Node.EphemeralID(handle)
	require.False(t, ok)
	require.NoError(t, m.Node.PublishEphemeral(req))
	require.NoError(t, m.Node.PublishEphemeral(req), "a retry")
	require.Equal(t, 1, e.loop.Attaches())
	id, ok := m.Node.EphemeralID(handle)
	require.True(t, ok)
	v, err := m.Controller.Get(id)
	require.NoError(t, err)
	require.True(t, v.Ephemeral)
	require.Equal(t, "pod", v.PVCName)

	// A CreateVolume of the same name is not the inline volume.
	_, err = m.Controller.Create(volume.CreateRequest{Name: volume.EphemeralName(handle), Kind: volume.KindLoop, FsType: fsutil.Ext4, Pool: pool.DefaultName, RequiredBytes: 20 * mib})
	require.ErrorIs(t, err, volume.ErrAlreadyExists)

	second := req
	second.Publish.TargetPath = filepath.Join(e.dir, "t2")
	require.NoError(t, m.Node.PublishEphemeral(second))
	handled, err := m.Node.UnpublishInline(handle, req.Publish.TargetPath)
	require.NoError(t, err)
	require.True(t, handled)
	_, ok = m.Node.EphemeralID(handle)
	require.True(t, ok, "still published at t2")
	_, err = m.Node.UnpublishInline(handle, second.Publish.TargetPath)
	require.NoError(t, err)
	_, ok = m.Node.EphemeralID(handle)
	require.False(t, ok, "deleted with its last target")
	require.Empty(t, e.loop.Attached())
	require.NoFileExists(t, e.pool.ImagePath(id))
	mps, err := e.mounter.List()
	require.NoError(t, err)
	require.Empty(t, mps)

	block := req
	block.Create.Kind = volume.KindBlock
	require.ErrorIs(t, m.Node.PublishEphemeral(block), volume.ErrInvalid)
}
