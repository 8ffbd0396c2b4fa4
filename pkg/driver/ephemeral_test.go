package driver_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// Inline volumes are asked for by pod authors: what they may ask is
// bounded by the admin's policy (docs/security.md). These run with fakes.

func inlineHandle(name string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(name)))
}

func (h *harness) inlinePublish(t *testing.T, handle string, attrs map[string]string) (string, error) {
	t.Helper()
	target := filepath.Join(h.Dir, "pods", handle[:12], "mount")
	require.NoError(t, os.MkdirAll(filepath.Dir(target), 0o750))
	ctx := map[string]string{params.KeyEphemeral: "true", params.KeyPodName: "p", params.KeyPodNamespace: "ns"}
	for k, v := range attrs {
		ctx[k] = v
	}
	_, err := h.node.NodePublishVolume(t.Context(), &csi.NodePublishVolumeRequest{
		VolumeId: handle, TargetPath: target, VolumeCapability: mountCap(snw), VolumeContext: ctx,
	})
	return target, err
}

func (h *harness) volumeCount(t *testing.T) int {
	t.Helper()
	resp, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
	require.NoError(t, err)
	return len(resp.GetEntries())
}

// TestInlinePolicy: each thing a pod author may try beyond the policy is
// refused with its code, and nothing is made.
func TestInlinePolicy(t *testing.T) {
	pol := params.InlinePolicy{Pools: []string{pool.DefaultName}, Attributes: params.InlineAttributes, MaxBytes: 256 * mib, MaxTotalBytes: 512 * mib}
	unlimited := quota.NewFake()
	unlimited.Method = quota.None
	h := start(t, testutil.Options{Inline: &pol, Quota: unlimited, PoolSpecs: []pool.Spec{
		{Name: pool.DefaultName, Path: mkdir(t, "default")},
		{Name: "shared", Path: mkdir(t, "shared"), Shared: true},
	}})
	cases := []struct {
		name  string
		attrs map[string]string
		code  codes.Code
	}{
		{name: "size_limit_optional", attrs: map[string]string{"sizeLimit": "optional"}, code: codes.InvalidArgument},
		{name: "size_limit_required_by_name", attrs: map[string]string{"sizeLimit": "required"}, code: codes.InvalidArgument},
		{name: "shared_pool", attrs: map[string]string{"type": "loop", "pool": "shared"}, code: codes.InvalidArgument},
		{name: "above_max_size", attrs: map[string]string{"type": "loop", "size": "257Mi"}, code: codes.OutOfRange},
		{name: "xfs_minimum_above_max_size", attrs: map[string]string{"type": "loop", "size": "10Mi", params.KeyFsType: "xfs"}, code: codes.OutOfRange},
		{name: "unlimited_directory", attrs: map[string]string{"size": "10Mi"}, code: codes.FailedPrecondition},
		{name: "block_rwx", attrs: map[string]string{"allowBlockRWX": "true"}, code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target, err := h.inlinePublish(t, inlineHandle(tc.name), tc.attrs)
			requireCode(t, tc.code, err)
			require.NoDirExists(t, target)
			require.Zero(t, h.volumeCount(t), "nothing made")
		})
	}
}

// TestInlineTotalCap: the inline volumes of a node hold at most
// MaxTotalBytes together, also when pods start at once; the cap frees up
// as they go.
func TestInlineTotalCap(t *testing.T) {
	pol := params.InlinePolicy{Pools: []string{pool.DefaultName}, Attributes: params.InlineAttributes, MaxBytes: 64 * mib, MaxTotalBytes: 100 * mib}
	h := start(t, testutil.Options{Inline: &pol})
	loop32 := map[string]string{"type": "loop", "size": "32Mi"}

	var wg sync.WaitGroup
	codesSeen := make([]codes.Code, 8)
	for i := range codesSeen {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.inlinePublish(t, inlineHandle(fmt.Sprint("pod", i)), loop32)
			codesSeen[i] = status.Code(err)
		}()
	}
	wg.Wait()
	ok := 0
	for _, c := range codesSeen {
		switch c {
		case codes.OK:
			ok++
		case codes.ResourceExhausted, codes.Aborted:
		default:
			t.Fatalf("unexpected code %v among %v", c, codesSeen)
		}
	}
	require.Equal(t, 3, ok, "three 32 MiB volumes fit 100 MiB: %v", codesSeen)
	require.Equal(t, 3, h.volumeCount(t))

	_, err := h.inlinePublish(t, inlineHandle("late"), loop32)
	requireCode(t, codes.ResourceExhausted, err)
	require.ErrorContains(t, err, "inline volumes on node")

	// A retry of a pod's publish is not a new volume.
	for i, c := range codesSeen {
		if c == codes.OK {
			target, err := h.inlinePublish(t, inlineHandle(fmt.Sprint("pod", i)), loop32)
			require.NoError(t, err, "a retried publish")
			_, err = h.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: inlineHandle(fmt.Sprint("pod", i)), TargetPath: target})
			require.NoError(t, err)
			break
		}
	}
	_, err = h.inlinePublish(t, inlineHandle("late"), loop32)
	require.NoError(t, err, "room again once a pod went")
}

// TestInlineTurnedOff: with no pool allowed, inline publishes are
// FAILED_PRECONDITION.
func TestInlineTurnedOff(t *testing.T) {
	h := start(t, testutil.Options{Inline: &params.InlinePolicy{}})
	_, err := h.inlinePublish(t, inlineHandle("off"), map[string]string{"type": "loop"})
	requireCode(t, codes.FailedPrecondition, err)
	require.ErrorContains(t, err, "turned off")
}

// TestPersistentIDAsInline: ephemeral=true on one of hostvol's own volume
// IDs is refused; the volume is not shadowed by an empty inline volume.
func TestPersistentIDAsInline(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("claim"))
	_, err := h.inlinePublish(t, id, map[string]string{"type": "loop"})
	requireCode(t, codes.InvalidArgument, err)
	require.Equal(t, 1, h.volumeCount(t))
}

// TestInlineVolumeNotStagedOrPublishedByID: an inline volume belongs to its
// pod's publish; the CO cannot stage or publish it by its volume ID.
func TestInlineVolumeNotStagedOrPublishedByID(t *testing.T) {
	h := start(t, testutil.Options{})
	_, err := h.inlinePublish(t, inlineHandle("mine"), map[string]string{"type": "loop", "size": "32Mi"})
	require.NoError(t, err)
	resp, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
	require.NoError(t, err)
	id := resp.GetEntries()[0].GetVolume().GetVolumeId()
	_, err = h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: filepath.Join(h.Dir, "s"), VolumeCapability: mountCap(snw)})
	requireCode(t, codes.FailedPrecondition, err)
	_, err = h.node.NodePublishVolume(t.Context(), &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: filepath.Join(h.Dir, "t"), VolumeCapability: mountCap(snw)})
	requireCode(t, codes.FailedPrecondition, err)
}

// TestSingleWriterVolumeStaysExclusive: a volume created for
// SINGLE_NODE_SINGLE_WRITER only is published at one target at a time,
// whatever access mode the publishes name.
func TestSingleWriterVolumeStaysExclusive(t *testing.T) {
	h := start(t, testutil.Options{})
	req := createReq("rwop-only")
	req.VolumeCapabilities = []*csi.VolumeCapability{mountCap(snsw)}
	id := h.create(t, req)
	_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, filepath.Join(h.Dir, "a"), mountCap(snw), false))
	require.NoError(t, err)
	_, err = h.node.NodePublishVolume(t.Context(), publishReq(id, filepath.Join(h.Dir, "b"), mountCap(snw), false))
	requireCode(t, codes.FailedPrecondition, err)

	v, err := h.ctrl.ValidateVolumeCapabilities(t.Context(), &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw)}})
	require.NoError(t, err)
	require.Nil(t, v.GetConfirmed(), "a shared writer mode is not confirmed for a ReadWriteOncePod volume")

	// The idempotency check knows the difference.
	req.VolumeCapabilities = []*csi.VolumeCapability{mountCap(snw)}
	_, err = h.ctrl.CreateVolume(t.Context(), req)
	requireCode(t, codes.AlreadyExists, err)
}

// TestSharedPoolLoopMultiNode: a loop filesystem in a shared pool refuses
// multi-node access modes; raw block takes them with allowBlockRWX.
func TestSharedPoolLoopMultiNode(t *testing.T) {
	h := sharedPool(t, "node-a", t.TempDir())
	for _, mode := range []csi.VolumeCapability_AccessMode_Mode{
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
	} {
		req := createReq("loop-" + mode.String())
		req.Parameters = map[string]string{"pool": "shared", "type": "loop"}
		req.CapacityRange = &csi.CapacityRange{RequiredBytes: 32 * mib}
		req.VolumeCapabilities = []*csi.VolumeCapability{mountCap(mode)}
		_, err := h.ctrl.CreateVolume(t.Context(), req)
		requireCode(t, codes.InvalidArgument, err)
	}
	req := createReq("block-rwx")
	req.Parameters = map[string]string{"pool": "shared", "allowBlockRWX": "true"}
	req.VolumeCapabilities = []*csi.VolumeCapability{blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}
	h.create(t, req)
	req = createReq("loop-rwx-local")
	req.Parameters = map[string]string{"type": "loop"}
	req.CapacityRange = &csi.CapacityRange{RequiredBytes: 32 * mib}
	req.VolumeCapabilities = []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}
	h.create(t, req) // a node-local pool: pinned to its node, one kernel
}

func mkdir(t *testing.T, name string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.Mkdir(d, 0o755))
	return d
}

// TestInlineVolumeNotExpanded: an inline volume keeps the size its pod
// asked for; growing it would step past the node's inline caps.
func TestInlineVolumeNotExpanded(t *testing.T) {
	h := start(t, testutil.Options{})
	_, err := h.inlinePublish(t, inlineHandle("fixed"), map[string]string{"type": "loop", "size": "32Mi"})
	require.NoError(t, err)
	resp, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
	require.NoError(t, err)
	id := resp.GetEntries()[0].GetVolume().GetVolumeId()
	_, err = h.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
	requireCode(t, codes.FailedPrecondition, err)
	_, err = h.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 32 * mib}})
	require.NoError(t, err, "its own size is no growth")
}
