package driver_test

import (
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestCreateSnapshotTopology: a snapshot's accessible topology is this
// node's, as NodeGetInfo reports it, with or without a requisite that
// names it; a requisite that excludes it is RESOURCE_EXHAUSTED. (The
// csi-sanity spec that checks the first part compares protobuf messages
// with reflect.DeepEqual; test/sanity/sanity.go says how it runs.)
func TestCreateSnapshotTopology(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("src"))
	ni, err := h.node.NodeGetInfo(t.Context(), &csi.NodeGetInfoRequest{})
	require.NoError(t, err)
	for _, req := range []*csi.TopologyRequirement{nil, {Requisite: []*csi.Topology{ni.GetAccessibleTopology()}, Preferred: []*csi.Topology{ni.GetAccessibleTopology()}}} {
		resp, err := h.ctrl.CreateSnapshot(t.Context(), &csi.CreateSnapshotRequest{Name: "snap", SourceVolumeId: id, AccessibilityRequirements: req})
		require.NoError(t, err)
		require.Len(t, resp.GetSnapshot().GetAccessibleTopology(), 1)
		require.True(t, proto.Equal(ni.GetAccessibleTopology(), resp.GetSnapshot().GetAccessibleTopology()[0]), "%v", resp.GetSnapshot().GetAccessibleTopology())
		require.True(t, resp.GetSnapshot().GetReadyToUse())
		require.Equal(t, volumeid.SnapshotFromName(testutil.DefaultNodeID, "snap"), resp.GetSnapshot().GetSnapshotId())
	}
	_, err = h.ctrl.CreateSnapshot(t.Context(), &csi.CreateSnapshotRequest{Name: "elsewhere", SourceVolumeId: id,
		AccessibilityRequirements: &csi.TopologyRequirement{Requisite: nodeTopology("other-node")}})
	requireCode(t, codes.ResourceExhausted, err)
}

// TestSnapshotRequestsInvalid: what CreateSnapshot, DeleteSnapshot,
// GetSnapshot and ListSnapshots refuse, and with which code.
func TestSnapshotRequestsInvalid(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("src"))
	for _, tc := range []struct {
		name string
		req  *csi.CreateSnapshotRequest
		code codes.Code
	}{
		{"no_name", &csi.CreateSnapshotRequest{SourceVolumeId: id}, codes.InvalidArgument},
		{"no_source", &csi.CreateSnapshotRequest{Name: "s"}, codes.InvalidArgument},
		{"malformed_source", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "../x"}, codes.InvalidArgument},
		{"foreign_source", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "x"}, codes.NotFound},
		{"missing_source", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: volumeid.FromName("none")}, codes.NotFound},
		{"unknown_parameter", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: id, Parameters: map[string]string{"x": "y"}}, codes.InvalidArgument},
		{"bad_allow_live_copy", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: id, Parameters: map[string]string{"allowLiveCopy": "maybe"}}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.ctrl.CreateSnapshot(t.Context(), tc.req)
			requireCode(t, tc.code, err)
		})
	}
	_, err := h.ctrl.DeleteSnapshot(t.Context(), &csi.DeleteSnapshotRequest{})
	requireCode(t, codes.InvalidArgument, err)
	_, err = h.ctrl.DeleteSnapshot(t.Context(), &csi.DeleteSnapshotRequest{SnapshotId: "hs-../../x"})
	requireCode(t, codes.InvalidArgument, err)
	_, err = h.ctrl.DeleteSnapshot(t.Context(), &csi.DeleteSnapshotRequest{SnapshotId: "nothing"})
	require.NoError(t, err, "a foreign ID: nothing to delete")
	_, err = h.ctrl.GetSnapshot(t.Context(), &csi.GetSnapshotRequest{SnapshotId: "nothing"})
	requireCode(t, codes.NotFound, err)
	_, err = h.ctrl.ListSnapshots(t.Context(), &csi.ListSnapshotsRequest{StartingToken: "bogus"})
	requireCode(t, codes.Aborted, err)
	_, err = h.ctrl.ListSnapshots(t.Context(), &csi.ListSnapshotsRequest{MaxEntries: -1})
	requireCode(t, codes.InvalidArgument, err)
	resp, err := h.ctrl.ListSnapshots(t.Context(), &csi.ListSnapshotsRequest{SourceVolumeId: "../x"})
	require.NoError(t, err)
	require.Empty(t, resp.GetEntries())
}
