package driver

import (
	"context"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// Volume and storage health (CSI v1.13, alpha). A volume's adverse
// conditions are VolumeHealth entries (DEGRADED or INACCESSIBLE, with a
// CamelCase reason and a message naming the volume); a healthy volume has
// none. CSI v1.13 removed VolumeCondition from NodeGetVolumeStats,
// ListVolumes and ControllerGetVolume, so the health RPCs are the only
// place health is reported. See docs/design/health.md.

// ControllerGetVolume returns a volume and its status. The status is
// empty: published_node_ids means "controller published", which hostvol
// never does (no PUBLISH_UNPUBLISH_VOLUME, so no
// LIST_VOLUMES_PUBLISHED_NODES either).
func (d *Driver) ControllerGetVolume(_ context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkVolumeID(id); err != nil {
		return nil, err
	}
	v, err := d.vols.Controller.Get(id)
	if err != nil {
		return nil, err
	}
	return &csi.ControllerGetVolumeResponse{
		Volume: d.csiVolume(v),
		Status: &csi.ControllerGetVolumeResponse_VolumeStatus{},
	}, nil
}

// ControllerGetVolumeHealth reports a volume's conditions as this process
// sees them: its pool, its data, and how it is staged on this node. It
// takes the volume's try-lock (ABORTED while another operation runs), so
// a stage or unstage half done is never reported as a fault.
func (d *Driver) ControllerGetVolumeHealth(_ context.Context, req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if err := checkVolumeID(id); err != nil {
		return nil, err
	}
	cs, err := d.vols.Controller.Health(id)
	if err != nil {
		return nil, err
	}
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: volumeHealth(id, cs)}, nil
}

// ControllerListVolumeHealth pages through the volumes in ID order, like
// ListVolumes, and lists those with adverse conditions (the spec: "SHOULD
// omit volumes with no known adverse health condition"). A page may hold
// fewer than max_entries entries; the token is the last volume examined.
func (d *Driver) ControllerListVolumeHealth(_ context.Context, req *csi.ControllerListVolumeHealthRequest) (*csi.ControllerListVolumeHealthResponse, error) {
	maxEntries, after, err := page(req.GetMaxEntries(), req.GetStartingToken(), volume.CheckID)
	if err != nil {
		return nil, err
	}
	list, next, err := d.vols.Controller.ListHealth(after, maxEntries)
	if err != nil {
		return nil, err
	}
	return &csi.ControllerListVolumeHealthResponse{NextToken: next, Entries: each(list, func(h volume.VolumeHealth) *csi.VolumeHealth {
		return volumeHealth(h.ID, h.Conditions)
	})}, nil
}

// NodeGetVolumeHealth reports the conditions of a volume of this node.
// Both paths are optional. The spec lets the CO ask about a path where it
// only attempted to stage or publish, so a path hostvol did not stage or
// publish the volume at is a condition (NotStagedAtPath,
// NotPublishedAtPath), not an error, and is never looked at. A volume that
// does not live on this node is NOT_FOUND.
func (d *Driver) NodeGetVolumeHealth(_ context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, errNoVolumeID
	}
	var publish, staging string
	var err error
	if p := req.GetVolumePublishPath(); p != "" {
		if publish, err = checkPath("volume publish path", p, id); err != nil {
			return nil, err
		}
	}
	if p := req.GetStagingTargetPath(); p != "" {
		if staging, err = checkPath("staging target path", p, id); err != nil {
			return nil, err
		}
	}
	if err := checkVolumeID(id); err != nil {
		return nil, err
	}
	cs, err := d.vols.Node.NodeHealth(id, publish, staging)
	if err != nil {
		return nil, err
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: volumeHealth(id, cs)}, nil
}

// NodeGetStorageHealth reports the state directory and the pools of this
// node: a state directory on a read-only filesystem is STORAGE_DEGRADED
// (StateDirReadOnly: volumes in use keep working, nothing new can be
// recorded), one that cannot be examined STORAGE_UNREACHABLE; a pool
// missing (the path is gone, not a directory, or no longer the directory
// opened at start-up) is STORAGE_UNREACHABLE; read-only or nearly full is
// STORAGE_DEGRADED.
// Healthy pools add nothing. The spec allows one entry per (status,
// reason), so pools with the same condition share an entry whose message
// names each of them.
func (d *Driver) NodeGetStorageHealth(context.Context, *csi.NodeGetStorageHealthRequest) (*csi.NodeGetStorageHealthResponse, error) {
	type key struct {
		status csi.StorageHealthErrorType
		reason string
	}
	var order []key
	msgs := map[key][]string{}
	add := func(cs []volume.Condition) {
		for _, c := range cs {
			k := key{storageStatus(c.Severity), c.Reason}
			if _, seen := msgs[k]; !seen {
				order = append(order, k)
			}
			msgs[k] = append(msgs[k], c.Message)
		}
	}
	// The state directory first: while it cannot be written, no pool can
	// take a new volume either.
	add(d.vols.Node.StateDirHealth())
	for _, p := range d.vols.Node.PoolHealth() {
		add(p.Conditions)
	}
	resp := &csi.NodeGetStorageHealthResponse{}
	for _, k := range order {
		resp.BackendHealth = append(resp.BackendHealth, &csi.NodeGetStorageHealthResponse_StorageBackendHealth{
			Status:  k.status,
			Reason:  k.reason,
			Message: strings.Join(msgs[k], "; "),
		})
	}
	return resp, nil
}

// volumeHealth builds the CSI message for a volume's conditions.
func volumeHealth(id string, cs []volume.Condition) *csi.VolumeHealth {
	h := &csi.VolumeHealth{VolumeId: id}
	for _, c := range cs {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status:  volumeStatus(c.Severity),
			Reason:  c.Reason,
			Message: c.Message,
		})
	}
	return h
}

func volumeStatus(s volume.Severity) csi.VolumeHealthErrorType {
	switch s {
	case volume.Degraded:
		return csi.VolumeHealthErrorType_DEGRADED
	case volume.Inaccessible:
		return csi.VolumeHealthErrorType_INACCESSIBLE
	default:
		return csi.VolumeHealthErrorType_UNKNOWN_VOLUME_HEALTH_TYPE
	}
}

func storageStatus(s volume.Severity) csi.StorageHealthErrorType {
	switch s {
	case volume.Degraded:
		return csi.StorageHealthErrorType_STORAGE_DEGRADED
	case volume.Inaccessible:
		return csi.StorageHealthErrorType_STORAGE_UNREACHABLE
	default:
		return csi.StorageHealthErrorType_UNKNOWN_STORAGE_HEALTH_ERROR_TYPE
	}
}
