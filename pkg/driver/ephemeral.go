package driver

import (
	"errors"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// CSI inline volumes (pkg/volume/ephemeral.go): the kubelet publishes a
// handle of its own with csi.storage.k8s.io/ephemeral=true in the volume
// context (the CSIDriver's podInfoOnMount makes it add that key), never
// stages, and unpublishes the same handle when the pod goes.

// checkHandle validates an inline volume's handle: anything the kubelet may
// make up, but nothing that is malformed as an ID.
func checkHandle(handle string) error {
	if err := volume.CheckID(handle); err != nil && !errors.Is(err, volume.ErrNotFound) {
		return status.Errorf(codes.InvalidArgument, "volume ID %s: %v", untrusted.Quote(handle), err)
	}
	return nil
}

// publishEphemeral creates an inline volume from the pod's volumeAttributes
// on its first publish and publishes it.
func (d *Driver) publishEphemeral(req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	handle := req.GetVolumeId()
	targetPath, ci, err := pathAndCapability(handle, "target path", req.GetTargetPath(), req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	if err := checkHandle(handle); err != nil {
		return nil, err
	}
	if volume.CheckID(handle) == nil {
		// The kubelet makes inline handles up ("csi-<sha256>"); one of
		// hostvol's own IDs is a persistent volume, which ephemeral=true
		// must not turn into an empty inline volume.
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is a persistent volume; %s=true is for the handles the kubelet gives inline volumes", handle, params.KeyEphemeral)
	}
	if ci.block {
		return nil, status.Errorf(codes.InvalidArgument, "inline volume %s: inline volumes are filesystems; raw block needs a PersistentVolumeClaim", handle)
	}
	in, err := params.ParseInline(req.GetVolumeContext(), d.cfg.Inline)
	switch {
	case errors.Is(err, params.ErrInlineOff):
		return nil, status.Errorf(codes.FailedPrecondition, "inline volume %s: inline volumes are turned off on node %q (--inline-pools)", handle, d.cfg.NodeID)
	case errors.Is(err, params.ErrInlineTooLarge):
		return nil, status.Errorf(codes.OutOfRange, "inline volume %s: %v (--inline-max-size)", handle, err)
	case err != nil:
		return nil, status.Errorf(codes.InvalidArgument, "inline volume %s: %v", handle, err)
	}
	kind, fsType, err := volumeKind(in.Params, volumeShape{fsType: ci.fsType})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "inline volume %s: %v", handle, err)
	}
	if d.vols.Controller.Pool(in.Pool) == nil {
		return nil, status.Errorf(codes.InvalidArgument, "inline volume %s: pool %q is not configured on node %q", handle, in.Pool, d.cfg.NodeID)
	}
	bindFlags, readOnly, err := publishMode(req, ci)
	if err != nil {
		return nil, err
	}
	name := volume.EphemeralName(handle)
	return reply(&csi.NodePublishVolumeResponse{}, d.vols.Node.PublishEphemeral(volume.EphemeralRequest{
		Create: volume.CreateRequest{
			Name:          name,
			Kind:          kind,
			FsType:        fsType,
			Pool:          in.Pool,
			RequiredBytes: in.SizeBytes,
			DefaultBytes:  min(DefaultVolumeSize, d.cfg.Inline.MaxBytes),
			PVCName:       in.PodName,
			PVCNamespace:  in.PodNamespace,
			SizeLimit:     in.SizeLimit,
			InodeLimit:    in.InodeLimit,
		},
		Publish: volume.PublishRequest{
			TargetPath:   targetPath,
			ReadOnly:     readOnly,
			Writer:       ci.writer,
			SingleWriter: ci.singleWriter,
			MountFlags:   bindFlags,
		},
		MountFlags: withoutFlags(ci.flags, "ro", "rw"),
	}))
}
