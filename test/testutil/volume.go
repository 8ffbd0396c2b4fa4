package testutil

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
)

const mib = int64(1) << 20

// Kind is one shape of volume a test creates: its class parameters,
// access type and default size.
type Kind struct {
	Name   string
	Params map[string]string
	Block  bool
	FSType string // of a loop filesystem volume; "" otherwise
	Size   int64
}

// The kinds of volume the suites run on. A plain temporary directory
// cannot limit a directory volume's size, so DirKind's class accepts that;
// XFS needs 300 MiB at the least.
var (
	DirKind   = Kind{Name: "dir", Params: map[string]string{"sizeLimit": "optional"}, Size: 64 * mib}
	Ext4Kind  = Kind{Name: "ext4", Params: map[string]string{"type": "loop"}, FSType: "ext4", Size: 64 * mib}
	XFSKind   = Kind{Name: "xfs", Params: map[string]string{"type": "loop", "csi.storage.k8s.io/fstype": "xfs"}, FSType: "xfs", Size: 300 * mib}
	BlockKind = Kind{Name: "block", Params: map[string]string{}, Block: true, Size: 64 * mib}
)

// HasImage says whether volumes of the kind are image files on loop
// devices (loop filesystems and raw block) rather than directories.
func (k Kind) HasImage() bool { return k.Block || k.FSType != "" }

// Capability is a SINGLE_NODE_WRITER capability of the kind's access type.
func (k Kind) Capability() *csi.VolumeCapability {
	return Capability(k.Block, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
}

// Capability is a block or mount capability with the access mode.
func Capability(block bool, mode csi.VolumeCapability_AccessMode_Mode, mountFlags ...string) *csi.VolumeCapability {
	c := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode}}
	if block {
		c.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	} else {
		c.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: mountFlags}}
	}
	return c
}

// ClientSource gives the client of the driver running now: a Client
// itself, an Env, or a Node (whose client changes when it restarts).
type ClientSource interface{ CSI() *Client }

// CSI is c itself.
func (c *Client) CSI() *Client { return c }

// CSI is the driver's client.
func (e *Env) CSI() *Client { return e.Client }

// CSI is the client of the driver started last.
func (n *Node) CSI() *Client { return n.Client }

// Volume is a volume under test with the staging and target paths the
// kubelet would give it. Its methods fail the test on an error, and their
// ...Err variants return it.
type Volume struct {
	T        testing.TB
	Src      ClientSource
	Kind     Kind
	Name, ID string
	Capacity int64
	Staging  string
	Target   string
	// Staged says whether the volume was staged through Stage and not
	// unstaged through Unstage since (the ...Err variants, which tests
	// call concurrently, leave it alone).
	Staged bool
}

// CreateVolume creates a volume of kind k named name with size bytes (0:
// the kind's size), with staging and target paths under dir/mnt/name; the
// staging directory is made (the CO makes it).
func CreateVolume(t testing.TB, src ClientSource, dir string, k Kind, name string, size int64) *Volume {
	t.Helper()
	return CreateVolumeFrom(t, src, dir, k, name, size, nil)
}

// CreateVolumeFrom is CreateVolume with a content source: a snapshot
// (SnapshotSource) or a volume (VolumeSource) to restore or clone.
func CreateVolumeFrom(t testing.TB, src ClientSource, dir string, k Kind, name string, size int64, from *csi.VolumeContentSource) *Volume {
	t.Helper()
	if size == 0 {
		size = k.Size
	}
	resp, err := src.CSI().CreateVolume(Ctx(t), &csi.CreateVolumeRequest{
		Name:                name,
		CapacityRange:       &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities:  []*csi.VolumeCapability{k.Capability()},
		Parameters:          k.Params,
		VolumeContentSource: from,
	})
	require.NoError(t, err, "CreateVolume %s", name)
	v := &Volume{
		T: t, Src: src, Kind: k, Name: name,
		ID:       resp.GetVolume().GetVolumeId(),
		Capacity: resp.GetVolume().GetCapacityBytes(),
		Staging:  filepath.Join(dir, "mnt", name, "staging"),
		Target:   filepath.Join(dir, "mnt", name, "target"),
	}
	require.NoError(t, os.MkdirAll(v.Staging, 0o750))
	return v
}

func (v *Volume) c() *Client { return v.Src.CSI() }

// StageErr stages the volume at its staging path.
func (v *Volume) StageErr() error {
	_, err := v.c().NodeStageVolume(Ctx(v.T), &csi.NodeStageVolumeRequest{
		VolumeId:          v.ID,
		StagingTargetPath: v.Staging,
		VolumeCapability:  v.Kind.Capability(),
	})
	return err
}

// Stage stages the volume.
func (v *Volume) Stage() {
	v.T.Helper()
	require.NoError(v.T, v.StageErr(), "NodeStageVolume %s", v.Name)
	v.Staged = true
}

// UnstageErr unstages the volume.
func (v *Volume) UnstageErr() error {
	_, err := v.c().NodeUnstageVolume(Ctx(v.T), &csi.NodeUnstageVolumeRequest{VolumeId: v.ID, StagingTargetPath: v.Staging})
	return err
}

// Unstage unstages the volume.
func (v *Volume) Unstage() {
	v.T.Helper()
	require.NoError(v.T, v.UnstageErr(), "NodeUnstageVolume %s", v.Name)
	v.Staged = false
}

// PublishErr publishes the staged volume at target.
func (v *Volume) PublishErr(target string, readOnly bool) error {
	_, err := v.c().NodePublishVolume(Ctx(v.T), &csi.NodePublishVolumeRequest{
		VolumeId:          v.ID,
		StagingTargetPath: v.Staging,
		TargetPath:        target,
		VolumeCapability:  v.Kind.Capability(),
		Readonly:          readOnly,
	})
	return err
}

// PublishAt publishes the volume read-write at target.
func (v *Volume) PublishAt(target string) {
	v.T.Helper()
	require.NoError(v.T, v.PublishErr(target, false), "NodePublishVolume %s at %s", v.Name, target)
}

// Publish publishes the volume read-write at its target.
func (v *Volume) Publish() { v.T.Helper(); v.PublishAt(v.Target) }

// PublishReadOnly publishes the volume read-only at its target.
func (v *Volume) PublishReadOnly() {
	v.T.Helper()
	require.NoError(v.T, v.PublishErr(v.Target, true), "NodePublishVolume %s read-only", v.Name)
}

// UnpublishErr unpublishes the volume from target.
func (v *Volume) UnpublishErr(target string) error {
	_, err := v.c().NodeUnpublishVolume(Ctx(v.T), &csi.NodeUnpublishVolumeRequest{VolumeId: v.ID, TargetPath: target})
	return err
}

// UnpublishAt unpublishes the volume from target.
func (v *Volume) UnpublishAt(target string) {
	v.T.Helper()
	require.NoError(v.T, v.UnpublishErr(target), "NodeUnpublishVolume %s at %s", v.Name, target)
}

// Unpublish unpublishes the volume from its target.
func (v *Volume) Unpublish() { v.T.Helper(); v.UnpublishAt(v.Target) }

// Up stages and publishes.
func (v *Volume) Up() { v.T.Helper(); v.Stage(); v.Publish() }

// Down unpublishes and unstages.
func (v *Volume) Down() { v.T.Helper(); v.Unpublish(); v.Unstage() }

// DeleteErr deletes the volume.
func (v *Volume) DeleteErr() error {
	_, err := v.c().DeleteVolume(Ctx(v.T), &csi.DeleteVolumeRequest{VolumeId: v.ID})
	return err
}

// Delete deletes the volume.
func (v *Volume) Delete() {
	v.T.Helper()
	require.NoError(v.T, v.DeleteErr(), "DeleteVolume %s", v.Name)
}

// Expand grows the volume to size bytes through ControllerExpandVolume.
func (v *Volume) Expand(size int64) *csi.ControllerExpandVolumeResponse {
	v.T.Helper()
	resp, err := v.c().ControllerExpandVolume(Ctx(v.T), &csi.ControllerExpandVolumeRequest{
		VolumeId:         v.ID,
		CapacityRange:    &csi.CapacityRange{RequiredBytes: size},
		VolumeCapability: v.Kind.Capability(),
	})
	require.NoError(v.T, err, "ControllerExpandVolume %s to %d", v.Name, size)
	return resp
}

// NodeExpandErr grows the published volume to size bytes on the node.
func (v *Volume) NodeExpandErr(size int64) (*csi.NodeExpandVolumeResponse, error) {
	return v.c().NodeExpandVolume(Ctx(v.T), &csi.NodeExpandVolumeRequest{
		VolumeId:          v.ID,
		VolumePath:        v.Target,
		StagingTargetPath: v.Staging,
		CapacityRange:     &csi.CapacityRange{RequiredBytes: size},
		VolumeCapability:  v.Kind.Capability(),
	})
}

// Stats is NodeGetVolumeStats at path.
func (v *Volume) Stats(path string) *csi.NodeGetVolumeStatsResponse {
	v.T.Helper()
	resp, err := v.c().NodeGetVolumeStats(Ctx(v.T), &csi.NodeGetVolumeStatsRequest{VolumeId: v.ID, VolumePath: path})
	require.NoError(v.T, err, "NodeGetVolumeStats %s at %s", v.Name, path)
	return resp
}

// Do runs a node operation named as the kubelet's call: "stage",
// "publish" (read-write, at the target), "unpublish" or "unstage".
func (v *Volume) Do(op string) error {
	switch op {
	case "stage":
		return v.StageErr()
	case "publish":
		return v.PublishErr(v.Target, false)
	case "unpublish":
		return v.UnpublishErr(v.Target)
	case "unstage":
		return v.UnstageErr()
	}
	v.T.Fatalf("unknown node operation %q", op)
	return nil
}
