package driver

import (
	"context"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// GetPluginInfo returns the driver name and version.
func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.cfg.Name, VendorVersion: d.cfg.Version}, nil
}

// GetPluginCapabilities advertises the controller service, topology and
// online expansion.
func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	caps := []csi.PluginCapability_Service_Type{
		csi.PluginCapability_Service_CONTROLLER_SERVICE,
		csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS,
		// Snapshots stay on their volume's node (snapshot.go).
		csi.PluginCapability_Service_SNAPSHOT_ACCESSIBILITY_CONSTRAINTS,
	}
	out := make([]*csi.PluginCapability, 0, len(caps)+1)
	for _, c := range caps {
		out = append(out, &csi.PluginCapability{Type: &csi.PluginCapability_Service_{
			Service: &csi.PluginCapability_Service{Type: c},
		}})
	}
	// Volumes grow while in use (loop and block volumes online; ext4 on a
	// host without CAP_SYS_RESOURCE at its next stage, see docs/design/expansion.md).
	out = append(out, &csi.PluginCapability{Type: &csi.PluginCapability_VolumeExpansion_{
		VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE},
	}})
	return &csi.GetPluginCapabilitiesResponse{Capabilities: out}, nil
}

// Probe is ready once the volume records are loaded and reconciled, and
// while the state directory can be written. A state directory that cannot
// (read-only, gone) is FAILED_PRECONDITION with the reason: the spec's
// "plugin not healthy", and the only way a Probe can say why. It costs a
// statfs or two (/healthz calls it every few seconds).
func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	if !d.vols.Ready() {
		return &csi.ProbeResponse{Ready: wrapperspb.Bool(false)}, nil
	}
	if cs := d.vols.Node.StateDirHealth(); len(cs) > 0 {
		msgs := make([]string, 0, len(cs))
		for _, c := range cs {
			msgs = append(msgs, c.Message)
		}
		return nil, status.Error(codes.FailedPrecondition, strings.Join(msgs, "; "))
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}
