package testutil

import (
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
)

// SnapshotSource is a content source naming a snapshot.
func SnapshotSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
}

// VolumeSource is a content source naming a volume (a clone).
func VolumeSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}
}

// SnapshotErr asks for a snapshot of v named name, once.
func (v *Volume) SnapshotErr(name string, params map[string]string) (*csi.Snapshot, error) {
	resp, err := v.c().CreateSnapshot(Ctx(v.T), &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: v.ID, Parameters: params})
	return resp.GetSnapshot(), err
}

// Snapshot takes a snapshot of v named name and, as the external-snapshotter
// does, calls CreateSnapshot again until it is ready to use.
func (v *Volume) Snapshot(name string) *csi.Snapshot {
	v.T.Helper()
	deadline := time.Now().Add(RPCTimeout)
	for {
		s, err := v.SnapshotErr(name, nil)
		require.NoError(v.T, err, "CreateSnapshot %s of %s", name, v.Name)
		if s.GetReadyToUse() {
			return s
		}
		require.True(v.T, time.Now().Before(deadline), "snapshot %s of %s still not ready", name, v.Name)
		time.Sleep(50 * time.Millisecond)
	}
}

// DeleteSnapshot deletes a snapshot and fails the test on an error.
func DeleteSnapshot(t testing.TB, src ClientSource, id string) {
	t.Helper()
	_, err := src.CSI().DeleteSnapshot(Ctx(t), &csi.DeleteSnapshotRequest{SnapshotId: id})
	require.NoError(t, err, "DeleteSnapshot %s", id)
}
