package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// ControllerGetCapabilities lists the controller RPCs hostvol implements.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	rpcs := []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		// No EXPAND_VOLUME: Kubernetes would call ControllerExpandVolume
		// through an external-resizer that may run on any node, and only the
		// volume's own node can grow it. Without the capability the resizer
		// only records the new size and the kubelet of the volume's node
		// calls NodeExpandVolume, which grows it (docs/design/expansion.md).
		// ControllerExpandVolume is still served, for
		// "hostvol client expand" and tests.
		// GET_VOLUME and the volume health RPCs: health.go. No
		// LIST_VOLUMES_PUBLISHED_NODES: it needs PUBLISH_UNPUBLISH_VOLUME,
		// and hostvol never controller-publishes.
		csi.ControllerServiceCapability_RPC_GET_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
		// Snapshots, restores and clones: snapshot.go, and
		// docs/design/snapshots.md.
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: each(rpcs, func(r csi.ControllerServiceCapability_RPC_Type) *csi.ControllerServiceCapability {
		return &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: r}}}
	})}, nil
}

// each returns f of every element of in, in order.
func each[T, U any](in []T, f func(T) U) []U {
	out := make([]U, 0, len(in))
	for _, x := range in {
		out = append(out, f(x))
	}
	return out
}

// page checks a paged request's max_entries and starting_token (the last
// volume ID of the previous page): a negative count is INVALID_ARGUMENT, a
// token hostvol did not give is ABORTED, as the spec asks.
func page(maxEntries int32, token string, check func(string) error) (int, string, error) {
	if maxEntries < 0 {
		return 0, "", status.Error(codes.InvalidArgument, "max_entries must not be negative")
	}
	if token != "" && check(token) != nil {
		return 0, "", status.Errorf(codes.Aborted, "starting_token %s is not valid", untrusted.Quote(token))
	}
	return int(maxEntries), token, nil
}

// nodeSegments is this node's topology.
func (d *Driver) nodeSegments() map[string]string {
	return map[string]string{params.TopologyKey: d.cfg.NodeID}
}

// topologyAllows reports whether this node appears in a list of topologies.
// A topology that does not mention hostvol's key constrains nothing of ours.
func (d *Driver) topologyAllows(tops []*csi.Topology) bool {
	for _, t := range tops {
		v, ok := t.GetSegments()[params.TopologyKey]
		if !ok || v == d.cfg.NodeID {
			return true
		}
	}
	return false
}

// accessibleTopology is where a volume of the pool can be used: this node
// for a node-local pool, anywhere (nil) for a shared one.
func (d *Driver) accessibleTopology(p *pool.Pool) []*csi.Topology {
	if p != nil && p.Shared {
		return nil
	}
	return []*csi.Topology{{Segments: d.nodeSegments()}}
}

// listedVolume is a ListVolumes entry: a volume, or an unreadable record.
func (d *Driver) listedVolume(l volume.Listed) *csi.Volume {
	if l.Unreadable == "" {
		return d.csiVolume(l.Volume)
	}
	var top []*csi.Topology
	if p := d.vols.Controller.Pool(l.Pool); p == nil || !p.Shared {
		// A node-local record: it lives in this node's state directory.
		top = []*csi.Topology{{Segments: d.nodeSegments()}}
	}
	return &csi.Volume{
		VolumeId:           l.ID,
		VolumeContext:      map[string]string{params.KeyRecordUnreadable: l.Unreadable},
		AccessibleTopology: top,
	}
}

func (d *Driver) csiVolume(v volume.Volume) *csi.Volume {
	vc := params.Context(v.Kind, v.Pool, v.FsType)
	if v.Ephemeral {
		// An inline volume, listed for admins: it goes with its pod.
		vc["ephemeral"] = "true"
		vc["pod"] = v.PVCNamespace + "/" + v.PVCName
	}
	return &csi.Volume{
		VolumeId:           v.ID,
		CapacityBytes:      v.CapacityBytes,
		VolumeContext:      vc,
		AccessibleTopology: d.accessibleTopology(d.vols.Controller.Pool(v.Pool)),
		ContentSource:      csiContentSource(v),
	}
}

// CreateVolume creates a directory volume in the pool the class names.
func (d *Driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	shape, err := checkCreate(req)
	if err != nil {
		return nil, err
	}
	required, limit := req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes()
	p, err := params.Parse(req.GetParameters())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", untrusted.Quote(name), err)
	}
	kind, fsType, err := volumeKind(p, shape)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", untrusted.Quote(name), err)
	}
	if err := d.checkPlacement(req, p.Pool, kind, fsType, shape); err != nil {
		return nil, err
	}
	snapID, srcVolID, err := contentSource(name, req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	v, err := d.vols.Controller.Create(volume.CreateRequest{
		Name:          name,
		Kind:          kind,
		FsType:        fsType,
		Pool:          p.Pool,
		RequiredBytes: required,
		LimitBytes:    limit,
		DefaultBytes:  DefaultVolumeSize,
		ReaderOnly:    shape.readerOnly,
		SingleWriter:  shape.singleWriter,
		MultiNode:     shape.multiNode || shape.multiReader,
		PVCName:       p.PVCName,
		PVCNamespace:  p.PVCNamespace,
		SizeLimit:     p.SizeLimit,
		InodeLimit:    p.InodeLimit,

		SourceSnapshotID: snapID,
		SourceVolumeID:   srcVolID,
		AllowLiveCopy:    p.AllowLiveCopy,
	})
	if err != nil {
		return nil, err
	}
	return &csi.CreateVolumeResponse{Volume: d.csiVolume(v)}, nil
}

// checkCreate validates what a CreateVolume asks for besides its
// parameters: a name, capabilities, no mutable parameters (not
// supported), a capacity range that holds together.
func checkCreate(req *csi.CreateVolumeRequest) (volumeShape, error) {
	name := req.GetName()
	if name == "" {
		return volumeShape{}, status.Error(codes.InvalidArgument, "volume name is required")
	}
	if len(name) > maxNameLen {
		return volumeShape{}, status.Errorf(codes.InvalidArgument, "volume name is %d bytes, more than %d", len(name), maxNameLen)
	}
	shape, err := checkCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return volumeShape{}, status.Errorf(codes.InvalidArgument, "volume %s: %v", untrusted.Quote(name), err)
	}
	if len(req.GetMutableParameters()) > 0 {
		return volumeShape{}, status.Errorf(codes.InvalidArgument, "volume %s: mutable parameters are not supported", untrusted.Quote(name))
	}
	required, limit := req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes()
	if required < 0 || limit < 0 {
		return volumeShape{}, status.Errorf(codes.InvalidArgument, "volume %s: capacity range must not be negative", untrusted.Quote(name))
	}
	if limit > 0 && required > limit {
		return volumeShape{}, status.Errorf(codes.OutOfRange, "volume %s: required %d bytes exceeds limit %d", untrusted.Quote(name), required, limit)
	}
	return shape, nil
}

// checkPlacement checks that the volume can live where it is asked to: a
// pool of this node; no loop filesystem with multi-node access in a shared
// pool; a node-local pool only when the requisite topology (if any)
// includes this node.
func (d *Driver) checkPlacement(req *csi.CreateVolumeRequest, poolName string, kind volume.Kind, fsType string, shape volumeShape) error {
	name := req.GetName()
	pl := d.vols.Controller.Pool(poolName)
	if pl == nil {
		return status.Errorf(codes.InvalidArgument, "volume %s: pool %q is not configured on node %q", untrusted.Quote(name), poolName, d.cfg.NodeID)
	}
	if pl.Shared && kind == volume.KindLoop && (shape.multiNode || shape.multiReader) {
		// Every node reaches a shared pool's image, and two kernels that
		// mount one ext4 or XFS image at once corrupt it.
		return status.Errorf(codes.InvalidArgument, "volume %q: a %s filesystem on a loop device is mounted by one node at a time; pool %q is shared, so multi-node access modes (ReadWriteMany, ReadOnlyMany) are refused for it (use a directory volume, or raw block with %s)", name, fsType, poolName, params.KeyAllowBlockRWX)
	}
	// Without requisite topology the spec lets the SP choose any topology:
	// preferred terms are a hint, and this node is the only place a
	// node-local volume can be.
	if ar := req.GetAccessibilityRequirements(); !pl.Shared && len(ar.GetRequisite()) > 0 && !d.topologyAllows(ar.GetRequisite()) {
		return status.Errorf(codes.ResourceExhausted, "volume %s: pool %q is local to node %q, which the requisite topology excludes", untrusted.Quote(name), poolName, d.cfg.NodeID)
	}
	return nil
}

// volumeKind decides what a CreateVolume makes: block access makes a raw
// block volume (an image, never formatted) whatever the class's type; mount
// access makes what the class's type says. A loop volume's filesystem comes
// from the capability or the fstype parameter (ext4 by default); directory
// volumes ignore fs_type.
func volumeKind(p params.Params, sh volumeShape) (volume.Kind, string, error) {
	if sh.block {
		if sh.multiNode && !p.AllowBlockRWX {
			return "", "", fmt.Errorf("raw block volumes with a multi-node writer mode are refused unless the StorageClass sets %s: \"true\"", params.KeyAllowBlockRWX)
		}
		return volume.KindBlock, "", nil
	}
	if p.Type != volume.KindLoop {
		return volume.KindDir, "", nil
	}
	fsType := p.FsType
	if sh.fsType != "" {
		if fsType != "" && fsType != sh.fsType {
			return "", "", fmt.Errorf("fstype parameter %s conflicts with the capability's %s", fsType, sh.fsType)
		}
		fsType = sh.fsType
	}
	if fsType == "" {
		fsType = fsutil.Ext4
	}
	return volume.KindLoop, fsType, nil
}

// DeleteVolume removes a volume and its data. Per the spec, a volume that
// does not exist "MUST reply 0 OK".
func (d *Driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	return deleteByID(req.GetVolumeId(), checkVolumeID, d.vols.Controller.Delete, &csi.DeleteVolumeResponse{})
}

// deleteByID is a Delete RPC: the ID checked (one hostvol never makes
// names nothing, which the spec says "MUST reply 0 OK"), then deleted.
func deleteByID[R any](id string, check, del func(string) error, ok *R) (*R, error) {
	if err := check(id); err != nil {
		if status.Code(err) == codes.NotFound {
			return ok, nil
		}
		return nil, err
	}
	return reply(ok, del(id))
}

// ValidateVolumeCapabilities confirms the capabilities a volume supports.
func (d *Driver) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if err := checkVolumeID(id); err != nil {
		return nil, err
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: volume capabilities are required", id)
	}
	v, err := d.vols.Controller.Get(id)
	if err != nil {
		return nil, err
	}
	if _, err := params.Parse(req.GetParameters()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	for _, c := range req.GetVolumeCapabilities() {
		ci, err := checkCapability(c)
		if err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
		}
		if v.ReaderOnly && ci.writer {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: "volume was created read-only; writer access modes are not supported"}, nil
		}
		if v.SingleWriter && ci.writer && !ci.singleWriter {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: "volume was created for SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod); every publish is exclusive"}, nil
		}
		if ci.block != (v.Kind == volume.KindBlock) {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("volume is a %s volume; %s access is not supported", v.Kind, accessName(ci.block))}, nil
		}
		if v.Kind == volume.KindLoop && ci.fsType != "" && ci.fsType != v.FsType {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("volume has a %s filesystem, not %s", v.FsType, ci.fsType)}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
		MutableParameters:  req.GetMutableParameters(),
	}}, nil
}

func accessName(block bool) string {
	if block {
		return "block"
	}
	return "mount"
}

// ControllerExpandVolume grows a volume. Loop and block volumes grow their
// sparse image and need the node to follow (node_expansion_required);
// directory volumes get their limit raised online (project quota, qgroup),
// or only their size recorded where the pool limits nothing. Shrinking is
// OUT_OF_RANGE.
// Not advertised (see ControllerGetCapabilities): in a cluster,
// NodeExpandVolume does this step on the volume's node.
func (d *Driver) ControllerExpandVolume(_ context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, errNoVolumeID
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: capacity range is required", untrusted.Quote(id))
	}
	required, limit := req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes()
	if required < 0 || limit < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: capacity range must not be negative", untrusted.Quote(id))
	}
	if err := checkVolumeID(id); err != nil {
		return nil, err
	}
	if err := optionalCapability(id, req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	size, nodeExpansion, err := d.vols.Controller.Expand(id, required, limit)
	if err != nil {
		return nil, err
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: nodeExpansion}, nil
}

// ListVolumes pages through volumes in ID order. The token is the last ID
// of the previous page, so volumes created or deleted between pages neither
// break the listing nor repeat.
func (d *Driver) ListVolumes(_ context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	maxEntries, after, err := page(req.GetMaxEntries(), req.GetStartingToken(), volume.CheckID)
	if err != nil {
		return nil, err
	}
	vols, next, err := d.vols.Controller.List(after, maxEntries)
	if err != nil {
		return nil, err
	}
	return &csi.ListVolumesResponse{NextToken: next, Entries: each(vols, func(v volume.Listed) *csi.ListVolumesResponse_Entry {
		return &csi.ListVolumesResponse_Entry{Volume: d.listedVolume(v)}
	})}, nil
}

// GetCapacity reports what the class's pool can still hold on this node.
// A pool this node does not have, or a topology that excludes it, has 0.
func (d *Driver) GetCapacity(_ context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	p, err := params.Parse(req.GetParameters())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	dirs := p.Type == volume.KindDir
	for _, c := range req.GetVolumeCapabilities() {
		ci, err := checkCapability(c)
		if err != nil {
			return &csi.GetCapacityResponse{}, nil
		}
		dirs = dirs && !ci.block
	}
	pl := d.vols.Controller.Pool(p.Pool)
	if pl == nil {
		return &csi.GetCapacityResponse{}, nil
	}
	if dirs && d.vols.Controller.CheckSizeLimit(p.Pool, p.SizeLimit, p.InodeLimit) != nil {
		// CreateVolume would refuse this class's directory volumes here
		// (sizeLimit: required on a pool that cannot enforce it): none
		// fit, so the scheduler places their pods on nodes where they do.
		return &csi.GetCapacityResponse{}, nil
	}
	if t := req.GetAccessibleTopology(); t != nil && !pl.Shared && !d.topologyAllows([]*csi.Topology{t}) {
		return &csi.GetCapacityResponse{}, nil
	}
	avail, err := d.vols.Controller.AvailableBytes(p.Pool)
	if err != nil {
		if errors.Is(err, volume.ErrPoolUnavailable) {
			return &csi.GetCapacityResponse{}, nil
		}
		return nil, err
	}
	return &csi.GetCapacityResponse{
		AvailableCapacity: avail,
		MaximumVolumeSize: wrapperspb.Int64(avail),
	}, nil
}
