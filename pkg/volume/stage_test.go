package volume_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

func TestLoopStagePublishLifecycle(t *testing.T) {
	e, m := loadedLoopEnv(t)
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
	e, m := loadedLoopEnv(t)
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

// A block volume staged at one path may be staged at another once that
// staging is gone (its loop device vanished with a reboot), not before.
func TestBlockRestageElsewhereAfterReboot(t *testing.T) {
	e, m := loadedLoopEnv(t)
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
