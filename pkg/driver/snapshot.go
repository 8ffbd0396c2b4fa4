package driver

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// CreateSnapshot takes a snapshot of a volume of this node. It is made on
// the volume's node, where it stays: its accessible topology is this node.
func (d *Driver) CreateSnapshot(_ context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot name is required")
	}
	if len(name) > maxNameLen {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot name is %d bytes, more than %d", len(name), maxNameLen)
	}
	if req.GetSourceVolumeId() == "" {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot %s: source volume ID is required", untrusted.Quote(name))
	}
	if err := checkVolumeID(req.GetSourceVolumeId()); err != nil {
		return nil, err
	}
	sp, err := params.ParseSnapshot(req.GetParameters())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot %s: %v", untrusted.Quote(name), err)
	}
	if ar := req.GetAccessibilityRequirements(); len(ar.GetRequisite()) > 0 && !d.topologyAllows(ar.GetRequisite()) {
		return nil, status.Errorf(codes.ResourceExhausted, "snapshot %s: a snapshot stays on its volume's node %q, which the requisite topology excludes", untrusted.Quote(name), d.cfg.NodeID)
	}
	snap, err := d.vols.Snapshots.Create(volume.SnapshotRequest{
		Name:           name,
		SourceVolumeID: req.GetSourceVolumeId(),
		AllowLiveCopy:  sp.AllowLiveCopy,
	})
	if err != nil {
		return nil, err
	}
	return &csi.CreateSnapshotResponse{Snapshot: d.csiSnapshot(snap)}, nil
}

func (d *Driver) csiSnapshot(s volume.Snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SizeBytes:          s.SizeBytes,
		SnapshotId:         s.ID,
		SourceVolumeId:     s.SourceVolumeID,
		CreationTime:       timestamppb.New(s.CreatedAt),
		ReadyToUse:         s.ReadyToUse(),
		AccessibleTopology: []*csi.Topology{{Segments: d.nodeSegments()}},
	}
}

// checkSnapshotID validates a snapshot ID from a request: required; a
// malformed one is INVALID_ARGUMENT, one hostvol never makes NOT_FOUND.
func checkSnapshotID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "snapshot ID is required")
	}
	if err := volume.CheckSnapshotID(id); err != nil {
		return status.Errorf(codeFor(err), "snapshot ID %s: %v", untrusted.Quote(id), err)
	}
	return nil
}

// DeleteSnapshot removes a snapshot. Per the spec, a snapshot that does
// not exist "MUST reply 0 OK".
func (d *Driver) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	return deleteByID(req.GetSnapshotId(), checkSnapshotID, d.vols.Snapshots.Delete, &csi.DeleteSnapshotResponse{})
}

// GetSnapshot returns one snapshot: ready, or still being copied.
func (d *Driver) GetSnapshot(_ context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if err := checkSnapshotID(id); err != nil {
		return nil, err
	}
	snap, err := d.vols.Snapshots.Get(id)
	if err != nil {
		return nil, err
	}
	return &csi.GetSnapshotResponse{Snapshot: d.csiSnapshot(snap)}, nil
}

// ListSnapshots pages through snapshots in ID order, all or filtered by
// snapshot ID or source volume. A filter naming nothing hostvol could
// have made lists nothing.
func (d *Driver) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	maxEntries, after, err := page(req.GetMaxEntries(), req.GetStartingToken(), volume.CheckSnapshotID)
	if err != nil {
		return nil, err
	}
	f := volume.ListFilter{SnapshotID: req.GetSnapshotId(), SourceVolumeID: req.GetSourceVolumeId()}
	if (f.SnapshotID != "" && volume.CheckSnapshotID(f.SnapshotID) != nil) || (f.SourceVolumeID != "" && volume.CheckID(f.SourceVolumeID) != nil) {
		return &csi.ListSnapshotsResponse{}, nil
	}
	snaps, next, err := d.vols.Snapshots.List(f, after, maxEntries)
	if err != nil {
		return nil, err
	}
	return &csi.ListSnapshotsResponse{NextToken: next, Entries: each(snaps, func(s volume.Snapshot) *csi.ListSnapshotsResponse_Entry {
		return &csi.ListSnapshotsResponse_Entry{Snapshot: d.csiSnapshot(s)}
	})}, nil
}

// contentSource checks a CreateVolume's content source and returns the
// snapshot or volume ID it names (both "" without one).
func contentSource(name string, src *csi.VolumeContentSource) (snapID, volID string, err error) {
	switch {
	case src == nil:
		return "", "", nil
	case src.GetSnapshot() != nil:
		snapID = src.GetSnapshot().GetSnapshotId()
		if err := checkSnapshotID(snapID); err != nil {
			return "", "", status.Errorf(status.Code(err), "volume %s: source %s", untrusted.Quote(name), status.Convert(err).Message())
		}
		return snapID, "", nil
	case src.GetVolume() != nil:
		volID = src.GetVolume().GetVolumeId()
		if err := checkVolumeID(volID); err != nil {
			return "", "", status.Errorf(status.Code(err), "volume %s: source %s", untrusted.Quote(name), status.Convert(err).Message())
		}
		return "", volID, nil
	}
	return "", "", status.Errorf(codes.InvalidArgument, "volume %s: unknown content source type", untrusted.Quote(name))
}

// csiContentSource is a volume's content source as CSI names it, or nil.
func csiContentSource(v volume.Volume) *csi.VolumeContentSource {
	switch {
	case v.SourceSnapshotID != "":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: v.SourceSnapshotID}}}
	case v.SourceVolumeID != "":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: v.SourceVolumeID}}}
	}
	return nil
}
