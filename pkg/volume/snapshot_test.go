package volume_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// writeFile writes a file into a directory volume's data.
func writeFile(t *testing.T, e *env, id, name, data string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(e.pool.DirPath(id), name), []byte(data), 0o644))
}

// readA reads the file "a" of a directory volume's data.
func readA(t *testing.T, e *env, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.pool.DirPath(id), "a"))
	require.NoError(t, err)
	return string(b)
}

func restoreReq(name, snapID string) volume.CreateRequest {
	r := req(name)
	r.SourceSnapshotID = snapID
	return r
}

// TestSnapshotRestoreAndClone takes a snapshot of a directory volume on a
// pool that can only copy (a plain directory): the snapshot holds the data
// as it was, a restore holds the snapshot's data, a clone the source's
// current data, and each survives the deletion of the others, in any
// order.
func TestSnapshotRestoreAndClone(t *testing.T) {
	e, m := loadedEnv(t)
	src, err := m.Controller.Create(req("src"))
	require.NoError(t, err)
	writeFile(t, e, src.ID, "a", "before")

	snap, err := m.Snapshots.Create(volume.SnapshotRequest{Name: "snap", SourceVolumeID: src.ID})
	require.NoError(t, err)
	require.True(t, snap.ReadyToUse(), "a small copy is ready within the first call")
	require.Equal(t, volume.MethodCopy, snap.Method)
	require.Equal(t, src.CapacityBytes, snap.SizeBytes)
	require.Equal(t, volumeid.SnapshotFromName("node", "snap"), snap.ID)
	writeFile(t, e, src.ID, "a", "after")

	again, err := m.Snapshots.Create(volume.SnapshotRequest{Name: "snap", SourceVolumeID: src.ID})
	require.NoError(t, err, "same name, same source: the same snapshot")
	require.Equal(t, snap.ID, again.ID)
	other, err := m.Controller.Create(req("other"))
	require.NoError(t, err)
	_, err = m.Snapshots.Create(volume.SnapshotRequest{Name: "snap", SourceVolumeID: other.ID})
	require.ErrorIs(t, err, volume.ErrAlreadyExists)

	restored, err := m.Controller.Create(restoreReq("restored", snap.ID))
	require.NoError(t, err)
	require.Equal(t, "before", readA(t, e, restored.ID))
	require.Equal(t, snap.ID, restored.SourceSnapshotID)

	clone := req("clone")
	clone.SourceVolumeID = src.ID
	cloned, err := m.Controller.Create(clone)
	require.NoError(t, err)
	require.Equal(t, "after", readA(t, e, cloned.ID))

	// The source goes first; the snapshot still restores.
	require.NoError(t, m.Controller.Delete(src.ID))
	second, err := m.Controller.Create(restoreReq("second", snap.ID))
	require.NoError(t, err)
	require.Equal(t, "before", readA(t, e, second.ID))
	// The snapshot goes before the volumes restored from it.
	require.NoError(t, m.Snapshots.Delete(snap.ID))
	require.NoError(t, m.Snapshots.Delete(snap.ID), "deleting twice is OK")
	require.Equal(t, "before", readA(t, e, restored.ID))
	_, err = m.Snapshots.Get(snap.ID)
	require.ErrorIs(t, err, volume.ErrNotFound)
	_, err = m.Controller.Create(restoreReq("third", snap.ID))
	require.ErrorIs(t, err, volume.ErrNotFound)
	ents, err := os.ReadDir(filepath.Join(e.poolDir, "snapshots"))
	require.NoError(t, err)
	require.Empty(t, ents, "no snapshot data left")
}

// TestRestoreSizes: a restore may be larger than its snapshot, never
// smaller, and must match its kind and pool.
func TestRestoreSizes(t *testing.T) {
	_, m := loadedEnv(t)
	r := req("src")
	r.RequiredBytes = 4 * mib
	src, err := m.Controller.Create(r)
	require.NoError(t, err)
	snap, err := m.Snapshots.Create(volume.SnapshotRequest{Name: "snap", SourceVolumeID: src.ID})
	require.NoError(t, err)

	small := restoreReq("small", snap.ID)
	small.RequiredBytes = 2 * mib
	_, err = m.Controller.Create(small)
	require.ErrorIs(t, err, volume.ErrOutOfRange)
	capped := restoreReq("capped", snap.ID)
	capped.RequiredBytes, capped.LimitBytes = 0, 2*mib
	_, err = m.Controller.Create(capped)
	require.ErrorIs(t, err, volume.ErrOutOfRange)

	dflt := restoreReq("default", snap.ID)
	dflt.RequiredBytes, dflt.DefaultBytes = 0, mib
	v, err := m.Controller.Create(dflt)
	require.NoError(t, err)
	require.Equal(t, 4*mib, v.CapacityBytes, "no size asked: the snapshot's")

	big := restoreReq("big", snap.ID)
	big.RequiredBytes = 16 * mib
	v, err = m.Controller.Create(big)
	require.NoError(t, err)
	require.Equal(t, 16*mib, v.CapacityBytes)

	loop := restoreReq("loop", snap.ID)
	loop.Kind, loop.FsType = volume.KindLoop, "ext4"
	_, err = m.Controller.Create(loop)
	require.ErrorIs(t, err, volume.ErrInvalid)

	// The same request again answers the same volume; with another source
	// it is another volume under a taken name.
	v2, err := m.Controller.Create(big)
	require.NoError(t, err)
	require.Equal(t, v.ID, v2.ID)
	big.SourceSnapshotID = ""
	_, err = m.Controller.Create(big)
	require.ErrorIs(t, err, volume.ErrAlreadyExists)
}

// TestSnapshotTopology: a snapshot ID names its node; a restore asked of
// another node is ErrElsewhere, as is a clone of a volume not here.
func TestSnapshotTopology(t *testing.T) {
	_, m := loadedEnv(t)
	_, err := m.Controller.Create(restoreReq("r", volumeid.SnapshotFromName("node-b", "snap")))
	require.ErrorIs(t, err, volume.ErrElsewhere)
	_, err = m.Controller.Create(restoreReq("r", volumeid.SnapshotFromName("node", "snap")))
	require.ErrorIs(t, err, volume.ErrNotFound)
	require.NotErrorIs(t, err, volume.ErrElsewhere)
	clone := req("c")
	clone.SourceVolumeID = volumeid.FromName("elsewhere")
	_, err = m.Controller.Create(clone)
	require.ErrorIs(t, err, volume.ErrElsewhere)

	require.ErrorIs(t, m.Snapshots.Delete(volumeid.SnapshotFromName("node-b", "snap")), volume.ErrOtherNode,
		"another node's snapshot is not reported deleted")
	require.NoError(t, m.Snapshots.Delete(volumeid.SnapshotFromName("node", "never")))
}

// TestSnapshotOfLiveVolumeRefused: a copy of a volume published read-write
// is refused unless the class allows it; read-only publishes do not count.
func TestSnapshotOfLiveVolumeRefused(t *testing.T) {
	e, m := loadedEnv(t)
	v, err := m.Controller.Create(req("live"))
	require.NoError(t, err)
	target := filepath.Join(e.dir, "target")
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: filepath.Join(e.dir, "staging")}))
	require.NoError(t, m.Node.Publish(publishReq(v.ID, target)))

	_, err = m.Snapshots.Create(volume.SnapshotRequest{Name: "s", SourceVolumeID: v.ID})
	require.ErrorIs(t, err, volume.ErrNotAllowed)
	require.ErrorContains(t, err, "allowLiveCopy")
	clone := req("c")
	clone.SourceVolumeID = v.ID
	_, err = m.Controller.Create(clone)
	require.ErrorIs(t, err, volume.ErrNotAllowed)

	snap, err := m.Snapshots.Create(volume.SnapshotRequest{Name: "s", SourceVolumeID: v.ID, AllowLiveCopy: true})
	require.NoError(t, err)
	require.True(t, snap.ReadyToUse())
	clone.AllowLiveCopy = true
	_, err = m.Controller.Create(clone)
	require.NoError(t, err)

	require.NoError(t, m.Node.Unpublish(v.ID, target))
	ro := publishReq(v.ID, target)
	ro.ReadOnly = true
	require.NoError(t, m.Node.Publish(ro))
	_, err = m.Snapshots.Create(volume.SnapshotRequest{Name: "s2", SourceVolumeID: v.ID})
	require.NoError(t, err, "a read-only publish does not make a copy inconsistent")
}

// TestListSnapshots filters by ID and by source, and pages.
func TestListSnapshots(t *testing.T) {
	_, m := loadedEnv(t)
	var ids []string
	srcs := map[string]string{}
	for i := range 5 {
		v, err := m.Controller.Create(req(fmt.Sprintf("v%d", i)))
		require.NoError(t, err)
		s, err := m.Snapshots.Create(volume.SnapshotRequest{Name: fmt.Sprintf("s%d", i), SourceVolumeID: v.ID})
		require.NoError(t, err)
		ids = append(ids, s.ID)
		srcs[s.ID] = v.ID
	}
	all, next, err := m.Snapshots.List(volume.ListFilter{}, "", 0)
	require.NoError(t, err)
	require.Empty(t, next)
	require.Len(t, all, 5)

	var paged []string
	after := ""
	for {
		page, next, err := m.Snapshots.List(volume.ListFilter{}, after, 2)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), 2)
		for _, s := range page {
			paged = append(paged, s.ID)
		}
		if next == "" {
			break
		}
		after = next
	}
	require.ElementsMatch(t, ids, paged)
	require.IsIncreasing(t, paged)

	one, _, err := m.Snapshots.List(volume.ListFilter{SnapshotID: ids[2]}, "", 0)
	require.NoError(t, err)
	require.Len(t, one, 1)
	require.Equal(t, ids[2], one[0].ID)
	bySrc, _, err := m.Snapshots.List(volume.ListFilter{SourceVolumeID: srcs[ids[3]]}, "", 0)
	require.NoError(t, err)
	require.Len(t, bySrc, 1)
	require.Equal(t, ids[3], bySrc[0].ID)
	none, _, err := m.Snapshots.List(volume.ListFilter{SnapshotID: ids[2], SourceVolumeID: srcs[ids[3]]}, "", 0)
	require.NoError(t, err)
	require.Empty(t, none)
}

// TestSnapshotLoadSettlesRecords: at start-up a snapshot left "creating"
// or "copying" is rolled back (data and record), one left "deleting" is
// finished, and a ready one is listed again.
func TestSnapshotLoadSettlesRecords(t *testing.T) {
	e, m := loadedEnv(t)
	v, err := m.Controller.Create(req("src"))
	require.NoError(t, err)
	writeFile(t, e, v.ID, "a", "data")
	ready, err := m.Snapshots.Create(volume.SnapshotRequest{Name: "ready", SourceVolumeID: v.ID})
	require.NoError(t, err)

	store, err := records.Open(filepath.Join(e.stateDir, "snapshots"))
	require.NoError(t, err)
	var half []string
	for _, st := range []volume.State{volume.StateCreating, volume.StateCopying, volume.StateDeleting} {
		s, err := m.Snapshots.Create(volume.SnapshotRequest{Name: "s-" + string(st), SourceVolumeID: v.ID})
		require.NoError(t, err)
		s.State = st
		require.NoError(t, store.Put(s.ID, s))
		half = append(half, s.ID)
	}

	m = e.load(t)
	list, _, err := m.Snapshots.List(volume.ListFilter{}, "", 0)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, ready.ID, list[0].ID)
	for _, id := range half {
		_, err := os.Stat(filepath.Join(e.poolDir, "snapshots", id))
		require.ErrorIs(t, err, os.ErrNotExist, "data of %s removed", id)
		require.ErrorIs(t, store.Get(id, &volume.Snapshot{}), records.ErrNotFound)
	}
	r, err := m.Controller.Create(restoreReq("restored", ready.ID))
	require.NoError(t, err)
	require.Equal(t, "data", readA(t, e, r.ID))
}

// TestSnapshotCapacity: while it is made, a copy of a directory without a
// limit promises the source's capacity (what it may come to hold); once
// done it holds its own blocks, which statfs shows, and promises nothing.
// A snapshot the pool cannot promise is refused with ErrNoSpace and leaves
// nothing.
func TestSnapshotCapacity(t *testing.T) {
	e, m := loadedEnv(t)
	promised := func() int64 { return m.Controller.PoolFigures()[0].PromisedBytes }
	v, err := m.Controller.Create(req("src"))
	require.NoError(t, err)
	before := promised()
	_, err = m.Snapshots.Create(volume.SnapshotRequest{Name: "s", SourceVolumeID: v.ID})
	require.NoError(t, err)
	require.Equal(t, before, promised(), "a finished copy pins nothing beyond its own blocks")

	avail, err := m.Controller.AvailableBytes(pool.DefaultName)
	require.NoError(t, err)
	big := req("big")
	big.RequiredBytes = avail / 4096 * 6 / 10 * 4096
	bv, err := m.Controller.Create(big)
	require.NoError(t, err)
	_, err = m.Snapshots.Create(volume.SnapshotRequest{Name: "too-big", SourceVolumeID: bv.ID})
	require.ErrorIs(t, err, volume.ErrNoSpace)
	_, err = m.Snapshots.Get(volumeid.SnapshotFromName("node", "too-big"))
	require.ErrorIs(t, err, volume.ErrNotFound)
	ents, err := os.ReadDir(filepath.Join(e.poolDir, "snapshots"))
	require.NoError(t, err)
	require.Len(t, ents, 1, "only the first snapshot's data")
}

// TestSnapshotWaitsForSlowCopy is the background path: with no wait, a
// copy answers ready_to_use=false, is listed so, and later reads ready.
func TestSnapshotWaitsForSlowCopy(t *testing.T) {
	e, m := loadedEnv(t)
	v, err := m.Controller.Create(req("src"))
	require.NoError(t, err)
	for i := range 50 {
		writeFile(t, e, v.ID, fmt.Sprintf("f%d", i), "x")
	}
	volume.SetSnapshotSyncWait(m, 0)
	s, err := m.Snapshots.Create(volume.SnapshotRequest{Name: "s", SourceVolumeID: v.ID})
	require.NoError(t, err)
	deadline := time.Now().Add(10 * time.Second)
	for !s.ReadyToUse() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		s, err = m.Snapshots.Create(volume.SnapshotRequest{Name: "s", SourceVolumeID: v.ID})
		require.NoError(t, err)
	}
	require.True(t, s.ReadyToUse())
	got, err := m.Snapshots.Get(s.ID)
	require.NoError(t, err)
	require.True(t, got.ReadyToUse())
}
