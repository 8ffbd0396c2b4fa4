package driver

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// NodeGetCapabilities lists the node RPCs hostvol implements. STAGE_UNSTAGE
// is advertised for every volume kind so that loop-device volumes, which
// need a node-wide mount, do not change the contract later.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	rpcs := []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.NodeServiceCapability_RPC_GET_STORAGE_HEALTH,
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: each(rpcs, func(r csi.NodeServiceCapability_RPC_Type) *csi.NodeServiceCapability {
		return &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: r}}}
	})}, nil
}

// NodeGetInfo returns the node ID, its volume limit and its topology.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             d.cfg.NodeID,
		MaxVolumesPerNode:  d.cfg.MaxVolumes,
		AccessibleTopology: &csi.Topology{Segments: d.nodeSegments()},
	}, nil
}

// NodeStageVolume prepares a volume for publishing on this node.
func (d *Driver) NodeStageVolume(_ context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id := req.GetVolumeId()
	staging, ci, err := pathAndCapability(id, "staging target path", req.GetStagingTargetPath(), req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	if err := checkVolumeID(id); err != nil {
		return nil, err
	}
	return reply(&csi.NodeStageVolumeResponse{}, d.vols.Node.Stage(volume.StageRequest{
		ID:          id,
		StagingPath: staging,
		Block:       ci.block,
		FsType:      ci.fsType,
		MountFlags:  withoutFlags(ci.flags, "ro", "rw"),
	}))
}

// NodeUnstageVolume undoes NodeStageVolume; it succeeds if nothing is staged.
func (d *Driver) NodeUnstageVolume(_ context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id := req.GetVolumeId()
	staging, err := requiredPath(id, "staging target path", req.GetStagingTargetPath())
	if err == nil {
		err = checkVolumeID(id)
	}
	if err != nil {
		return nil, err
	}
	return reply(&csi.NodeUnstageVolumeResponse{}, d.vols.Node.Unstage(id, staging))
}

// NodePublishVolume bind-mounts the volume at the target path. The access
// mode is enforced here: reader-only modes always mount read-only,
// ReadWriteOncePod refuses a second target (FAILED_PRECONDITION), and a
// volume that does not live on this node is NOT_FOUND whatever the request
// claims.
func (d *Driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, errNoVolumeID
	}
	if params.IsEphemeral(req.GetVolumeContext()) {
		return d.publishEphemeral(req)
	}
	targetPath, err := checkPath("target path", req.GetTargetPath(), id)
	if err != nil {
		return nil, err
	}
	var staging string
	if req.GetStagingTargetPath() != "" {
		if staging, err = checkPath("staging target path", req.GetStagingTargetPath(), id); err != nil {
			return nil, err
		}
	}
	ci, err := capabilityOf(id, req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	if err := checkVolumeID(id); err != nil {
		return nil, err
	}
	bindFlags, readOnly, err := publishMode(req, ci)
	if err != nil {
		return nil, err
	}
	return reply(&csi.NodePublishVolumeResponse{}, d.vols.Node.Publish(volume.PublishRequest{
		ID:           id,
		TargetPath:   targetPath,
		StagingPath:  staging,
		ReadOnly:     readOnly,
		Writer:       ci.writer,
		SingleWriter: ci.singleWriter,
		MountFlags:   bindFlags,
		Block:        ci.block,
	}))
}

// publishMode decides how a publish mounts: read-only when the request,
// a mount flag or a reader-only access mode says so (a conflicting rw is
// INVALID_ARGUMENT), with the bind-mount flags other than ro and rw.
func publishMode(req *csi.NodePublishVolumeRequest, ci capInfo) (bindFlags []string, readOnly bool, err error) {
	flags := onlyBindFlags(ci.flags)
	readOnly = req.GetReadonly() || hasFlag(flags, "ro") || !ci.writer
	if readOnly && hasFlag(flags, "rw") {
		return nil, false, status.Errorf(codes.InvalidArgument, "volume %s: mount flag rw conflicts with a read-only publish", req.GetVolumeId())
	}
	return withoutFlags(flags, "ro", "rw"), readOnly, nil
}

// withoutFlags returns flags minus the given ones.
func withoutFlags(flags []string, drop ...string) []string {
	var out []string
	for _, f := range flags {
		if !hasFlag(drop, f) {
			out = append(out, f)
		}
	}
	return out
}

// NodeUnpublishVolume unmounts and removes the target path. A target that
// is already gone succeeds. The last unpublish of an inline volume deletes
// it (ephemeral.go).
func (d *Driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	targetPath, err := requiredPath(id, "target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	if err := checkHandle(id); err != nil {
		return nil, err
	}
	if handled, err := d.vols.Node.UnpublishInline(id, targetPath); handled {
		return reply(&csi.NodeUnpublishVolumeResponse{}, err)
	}
	if err := checkVolumeID(id); err != nil {
		return nil, err
	}
	return reply(&csi.NodeUnpublishVolumeResponse{}, d.vols.Node.Unpublish(id, targetPath))
}

// NodeGetVolumeStats reports bytes and inodes of a volume published or
// staged at the given path. It takes no lock: it only reads.
func (d *Driver) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, errNoVolumeID
	}
	if req.GetVolumePath() == "" {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: volume path is required", untrusted.Quote(id))
	}
	if err := checkHandle(id); err != nil {
		return nil, err
	}
	if eid, ok := d.vols.Node.EphemeralID(id); ok {
		id = eid // the kubelet measures inline volumes by their handle
	}
	if err := checkVolumeID(id); err != nil {
		return nil, err
	}
	st, err := d.vols.Node.Stats(id, req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	if st.TotalInodes == 0 && st.AvailableBytes == 0 {
		// A raw block volume: only its size is known.
		return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: st.TotalBytes},
		}}, nil
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: st.TotalBytes, Available: st.AvailableBytes, Used: st.UsedBytes},
		{Unit: csi.VolumeUsage_INODES, Total: st.TotalInodes, Available: st.FreeInodes, Used: st.UsedInodes},
	}}, nil
}

// NodeExpandVolume grows a volume to the requested size on its node: the
// image (or a directory's recorded limit) first, as ControllerExpandVolume
// would, then the loop device picks up the grown image and the mounted
// filesystem grows online (resize2fs, xfs_growfs); a block volume's device
// only grows. Without a capacity range only the node step runs.
func (d *Driver) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, errNoVolumeID
	}
	if req.GetVolumePath() == "" {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: volume path is required", untrusted.Quote(id))
	}
	if err := optionalCapability(id, req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	if err := checkVolumeID(id); err != nil {
		return nil, err
	}
	// The controller step happens here, on the volume's node: hostvol does
	// not advertise controller EXPAND_VOLUME, so the external-resizer only
	// raised the PV's size and the kubelet asks for that size here.
	cr := req.GetCapacityRange()
	size, err := d.vols.Node.Expand(ctx, id, req.GetVolumePath(), cr.GetRequiredBytes(), cr.GetLimitBytes())
	if err != nil {
		return nil, err
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}
