package volume_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// reasons returns the (severity, reason) pairs of conditions, for
// assertions that do not depend on message text.
func reasons(cs []volume.Condition) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Severity.String()+"/"+c.Reason)
	}
	return out
}

// healthy returns a check that a health call succeeded with no condition:
// healthy(t)(m.Controller.Health(id)).
func healthy(t *testing.T) func([]volume.Condition, error) {
	return func(cs []volume.Condition, err error) {
		t.Helper()
		require.NoError(t, err)
		require.Empty(t, cs, "conditions: %+v", cs)
	}
}

func requireConditions(t *testing.T, cs []volume.Condition, err error, want ...string) {
	t.Helper()
	require.NoError(t, err)
	require.ElementsMatch(t, want, reasons(cs), "conditions: %+v", cs)
	for _, c := range cs {
		require.NotEmpty(t, c.Message)
	}
}

const (
	dataMissing        = "Inaccessible/" + volume.ReasonDataMissing
	poolUnavailable    = "Inaccessible/" + volume.ReasonPoolUnavailable
	loopDetached       = "Inaccessible/" + volume.ReasonLoopDeviceDetached
	stagingMissing     = "Inaccessible/" + volume.ReasonStagingMountMissing
	notStagedAtPath    = "Inaccessible/" + volume.ReasonNotStagedAtPath
	notPublishedAtPath = "Inaccessible/" + volume.ReasonNotPublishedAtPath
)

func TestHealthDirVolume(t *testing.T) {
	e, m := loadedEnv(t)
	v, err := m.Controller.Create(req("dir"))
	require.NoError(t, err)
	staging := filepath.Join(e.dir, "staging")
	target := filepath.Join(e.dir, "target")

	healthy(t)(m.Controller.Health(v.ID))
	healthy(t)(m.Node.NodeHealth(v.ID, "", ""))
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging}))
	require.NoError(t, m.Node.Publish(publishReq(v.ID, target)))
	healthy(t)(m.Node.NodeHealth(v.ID, target, staging))

	t.Run("paths_not_used", func(t *testing.T) {
		other := filepath.Join(e.dir, "other")
		cs, err := m.Node.NodeHealth(v.ID, other, other)
		requireConditions(t, cs, err, notPublishedAtPath, notStagedAtPath)
		require.NoDirExists(t, other, "a path hostvol did not mount is never touched")
	})
	t.Run("target_mount_gone", func(t *testing.T) {
		require.NoError(t, e.mounter.Unmount(target))
		cs, err := m.Node.NodeHealth(v.ID, target, "")
		requireConditions(t, cs, err, notPublishedAtPath)
		healthy(t)(m.Controller.Health(v.ID))
	})
	t.Run("data_removed", func(t *testing.T) {
		require.NoError(t, os.Remove(e.pool.DirPath(v.ID)))
		cs, err := m.Controller.Health(v.ID)
		requireConditions(t, cs, err, dataMissing)
		require.Contains(t, cs[0].Message, v.ID)
		cs, err = m.Node.NodeHealth(v.ID, "", staging)
		requireConditions(t, cs, err, dataMissing)
	})
	t.Run("data_replaced_by_symlink", func(t *testing.T) {
		require.NoError(t, os.Symlink("/", e.pool.DirPath(v.ID)))
		cs, err := m.Controller.Health(v.ID)
		requireConditions(t, cs, err, dataMissing)
		require.NoError(t, os.Remove(e.pool.DirPath(v.ID)))
		require.NoError(t, os.Mkdir(e.pool.DirPath(v.ID), 0o777))
		healthy(t)(m.Controller.Health(v.ID))
	})
}

func TestHealthUnknownVolume(t *testing.T) {
	e, m := loadedEnv(t)
	v, err := m.Controller.Create(req("here"))
	require.NoError(t, err)
	id := volumeid.FromName("nope")
	_, err = m.Controller.Health(id)
	require.ErrorIs(t, err, volume.ErrNotFound)
	_, err = m.Node.NodeHealth(id, "", "")
	require.ErrorIs(t, err, volume.ErrNotFound)

	// Another node sharing the state directory (as in a test) knows the
	// record but must not answer for a volume that lives elsewhere.
	other := e.open(t, "other-node")
	require.NoError(t, other.Load())
	_, err = other.Node.NodeHealth(v.ID, "", "")
	require.ErrorIs(t, err, volume.ErrNotFound)
}

func TestHealthPoolReplaced(t *testing.T) {
	e, m := loadedEnv(t)
	v, err := m.Controller.Create(req("dir"))
	require.NoError(t, err)
	healthy(t)(m.Controller.Health(v.ID))
	require.Equal(t, []volume.PoolHealth{{Name: pool.DefaultName}}, m.Node.PoolHealth())

	// The directory hostvol opened moves away (as when a pool's mount is
	// lazily unmounted): the path is missing.
	moved := filepath.Join(e.dir, "moved")
	require.NoError(t, os.Rename(e.poolDir, moved))
	cs, err := m.Controller.Health(v.ID)
	requireConditions(t, cs, err, poolUnavailable)
	requirePool(t, m, "Inaccessible/"+volume.ReasonPoolMissing)

	// Something else appears at the path: not the pool either.
	require.NoError(t, os.Mkdir(e.poolDir, 0o755))
	cs, err = m.Controller.Health(v.ID)
	requireConditions(t, cs, err, poolUnavailable)
	requirePool(t, m, "Inaccessible/"+volume.ReasonPoolMissing)

	// A file at the path.
	require.NoError(t, os.Remove(e.poolDir))
	require.NoError(t, os.WriteFile(e.poolDir, nil, 0o644))
	requirePool(t, m, "Inaccessible/"+volume.ReasonPoolMissing)

	// Back in place: healthy again.
	require.NoError(t, os.Remove(e.poolDir))
	require.NoError(t, os.Rename(moved, e.poolDir))
	healthy(t)(m.Controller.Health(v.ID))
	require.Equal(t, []volume.PoolHealth{{Name: pool.DefaultName}}, m.Node.PoolHealth())
}

func requirePool(t *testing.T, m *volume.Manager, want ...string) {
	t.Helper()
	ph := m.Node.PoolHealth()
	require.Len(t, ph, 1)
	require.Equal(t, pool.DefaultName, ph[0].Name)
	require.ElementsMatch(t, want, reasons(ph[0].Conditions), "conditions: %+v", ph[0].Conditions)
}

func TestHealthLoopVolume(t *testing.T) {
	e, m := loadedLoopEnv(t)
	v, err := m.Controller.Create(loopReq("l", fsutil.Ext4, 20*mib))
	require.NoError(t, err)
	staging := filepath.Join(e.dir, "staging")
	target := filepath.Join(e.dir, "target")

	healthy(t)(m.Controller.Health(v.ID))
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging}))
	require.NoError(t, m.Node.Publish(publishReq(v.ID, target)))
	healthy(t)(m.Controller.Health(v.ID))
	healthy(t)(m.Node.NodeHealth(v.ID, target, staging))
	dev := only(t, e.loop.Attached())

	t.Run("staging_unmounted", func(t *testing.T) {
		require.NoError(t, e.mounter.Unmount(staging))
		cs, err := m.Controller.Health(v.ID)
		requireConditions(t, cs, err, stagingMissing)
		require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging}), "staging again mends it")
		healthy(t)(m.Controller.Health(v.ID))
	})
	t.Run("device_detached", func(t *testing.T) {
		// The fake detaches a device whose filesystem is still "mounted",
		// which the kernel never does (test/health shows the real case).
		// With no device behind the image, nothing mounted can show the
		// volume: the staging mount and the target are not its own.
		require.NoError(t, e.loop.Detach(dev))
		cs, err := m.Controller.Health(v.ID)
		requireConditions(t, cs, err, loopDetached, stagingMissing)
		cs, err = m.Node.NodeHealth(v.ID, target, staging)
		requireConditions(t, cs, err, loopDetached, stagingMissing, notPublishedAtPath)
	})
	t.Run("reboot", func(t *testing.T) {
		// No loop devices, no mounts; the node state still says staged
		// until the CO stages again.
		e.mounter = mount.NewFakeMounter(nil)
		e.loop = loop.NewFake()
		m = e.load(t)
		cs, err := m.Controller.Health(v.ID)
		requireConditions(t, cs, err, stagingMissing, loopDetached)
		cs, err = m.Node.NodeHealth(v.ID, target, "")
		requireConditions(t, cs, err, stagingMissing, loopDetached, notPublishedAtPath)
		require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging}))
		healthy(t)(m.Controller.Health(v.ID))
	})
	t.Run("image_removed", func(t *testing.T) {
		require.NoError(t, os.Remove(e.pool.ImagePath(v.ID)))
		cs, err := m.Controller.Health(v.ID)
		requireConditions(t, cs, err, dataMissing)
	})
}

func TestHealthBlockVolume(t *testing.T) {
	e, m := loadedLoopEnv(t)
	v, err := m.Controller.Create(volume.CreateRequest{Name: "b", Kind: volume.KindBlock, Pool: pool.DefaultName, RequiredBytes: 3 * mib})
	require.NoError(t, err)
	staging := filepath.Join(e.dir, "staging")
	healthy(t)(m.Controller.Health(v.ID))
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging, Block: true}))
	healthy(t)(m.Node.NodeHealth(v.ID, "", staging))
	require.NoError(t, e.loop.Detach(only(t, e.loop.Attached())))
	cs, err := m.Node.NodeHealth(v.ID, "", staging)
	requireConditions(t, cs, err, loopDetached)
	require.NoError(t, m.Node.Unstage(v.ID, staging))
	healthy(t)(m.Controller.Health(v.ID))
}

// only returns the one device of a fake loop manager.
func only(t *testing.T, attached map[string]loop.Image) string {
	t.Helper()
	require.Len(t, attached, 1)
	for dev := range attached {
		return dev
	}
	return ""
}

func TestListHealth(t *testing.T) {
	e, m := loadedEnv(t)
	var ids []string
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		v, err := m.Controller.Create(req(name))
		require.NoError(t, err)
		ids = append(ids, v.ID)
	}
	list, next, err := m.Controller.ListHealth("", 0)
	require.NoError(t, err)
	require.Empty(t, list, "healthy volumes are omitted")
	require.Empty(t, next)

	broken := map[string]bool{}
	for _, id := range ids[:3] {
		require.NoError(t, os.Remove(e.pool.DirPath(id)))
		broken[id] = true
	}
	// Pages of one: every broken volume once, in ID order, then the end.
	var got []string
	after := ""
	for range len(ids) + 1 {
		list, next, err := m.Controller.ListHealth(after, 1)
		require.NoError(t, err)
		require.LessOrEqual(t, len(list), 1)
		for _, h := range list {
			require.True(t, broken[h.ID], "%s listed but healthy", h.ID)
			require.Equal(t, []string{dataMissing}, reasons(h.Conditions))
			got = append(got, h.ID)
		}
		if next == "" {
			break
		}
		after = next
	}
	require.ElementsMatch(t, ids[:3], got)
	require.IsIncreasing(t, got)

	// A volume whose lock is held is skipped, not waited for.
	unlock, ok := m.HoldLock(got[0])
	require.True(t, ok)
	list, _, err = m.Controller.ListHealth("", 0)
	unlock()
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.NotEqual(t, got[0], list[0].ID)
}
