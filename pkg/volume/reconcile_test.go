package volume_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// TestLoadDetachesOrphanDevices: at start-up a loop device attached to a
// pool image that no staging holds (a stage killed after its attach) is
// detached; one whose volume is staged, one that is mounted without a
// record, and one attached to a file outside the pools are left alone.
func TestLoadDetachesOrphanDevices(t *testing.T) {
	e, m := loadedLoopEnv(t)
	staged, err := m.Controller.Create(loopReq("staged", fsutil.Ext4, 20*mib))
	require.NoError(t, err)
	orphan, err := m.Controller.Create(loopReq("orphan", fsutil.Ext4, 20*mib))
	require.NoError(t, err)
	mounted, err := m.Controller.Create(loopReq("mounted", fsutil.Ext4, 20*mib))
	require.NoError(t, err)
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: staged.ID, StagingPath: filepath.Join(e.dir, "staging")}))

	attach := func(path string) string {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		require.NoError(t, err)
		defer f.Close()
		dev, err := e.loop.Attach(f, loop.AttachOptions{})
		require.NoError(t, err)
		return dev
	}
	orphanDev := attach(e.pool.ImagePath(orphan.ID))
	mountedDev := attach(e.pool.ImagePath(mounted.ID))
	require.NoError(t, e.mounter.Mount(mountedDev, filepath.Join(e.dir, "somewhere"), "ext4", nil))
	foreign := filepath.Join(e.dir, "foreign.img")
	require.NoError(t, os.WriteFile(foreign, make([]byte, 4096), 0o600))
	foreignDev := attach(foreign)
	before := e.loop.Attached()
	require.Len(t, before, 4)

	m = e.load(t) // a restart
	after := e.loop.Attached()
	require.NotContains(t, after, orphanDev, "the orphan is detached")
	require.Contains(t, after, mountedDev, "a mounted device is the next stage's or unstage's")
	require.Contains(t, after, foreignDev, "a device of a file outside the pools is not hostvol's")
	require.Len(t, after, 3, "the staged volume's device stays")
	_ = m
}

// TestLoadWhenLoopDevicesUnreadable: loop devices that cannot be read at
// start-up are left alone, and do not keep the node from starting.
func TestLoadWhenLoopDevicesUnreadable(t *testing.T) {
	e, m := loadedLoopEnv(t)
	v, err := m.Controller.Create(loopReq("kept", fsutil.Ext4, 20*mib))
	require.NoError(t, err)
	f, err := os.OpenFile(e.pool.ImagePath(v.ID), os.O_RDWR, 0)
	require.NoError(t, err)
	dev, err := e.loop.Attach(f, loop.AttachOptions{})
	f.Close()
	require.NoError(t, err)
	e.loop.SetError(loop.OpList, errors.New("ioctl: input/output error"))
	m = e.load(t)
	require.True(t, m.Ready())
	require.Contains(t, e.loop.Attached(), dev, "never detached on doubt")
}
