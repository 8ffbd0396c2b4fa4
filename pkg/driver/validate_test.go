package driver_test

// Hostile input (validate.go): volume IDs, names and paths that try to
// leave the pools, and strings long enough to flood the logs. Each must get
// a clear gRPC error and leave the filesystem as it was.

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// hostileID is a volume ID a request may carry, and how hostvol must judge it.
type hostileID struct {
	name      string
	id        string
	malformed bool // INVALID_ARGUMENT; otherwise an unknown format: NOT_FOUND
}

func hostileIDs(existing string) []hostileID {
	hexPart := strings.TrimPrefix(existing, "hv-")
	return []hostileID{
		{name: "dot", id: ".", malformed: true},
		{name: "dotdot", id: "..", malformed: true},
		{name: "dotdot_dotdot", id: "../..", malformed: true},
		{name: "traversal_to_etc_passwd", id: "../../etc/passwd", malformed: true},
		{name: "absolute_path", id: "/etc/passwd", malformed: true},
		{name: "prefixed_traversal", id: "hv-../../x", malformed: true},
		{name: "valid_id_then_traversal", id: existing + "/../../x", malformed: true},
		{name: "trailing_slash", id: existing + "/", malformed: true},
		{name: "backslash", id: `hv-..\..\x`, malformed: true},
		{name: "nul_inside", id: existing[:10] + "\x00" + existing[11:], malformed: true},
		{name: "nul_then_traversal", id: existing + "\x00/../../x", malformed: true},
		{name: "newline", id: existing[:10] + "\n" + existing[11:], malformed: true},
		{name: "trailing_newline", id: existing + "\n", malformed: true},
		{name: "too_long_129_bytes", id: "hv-" + strings.Repeat("a", 126), malformed: true},
		{name: "too_long_10_kib", id: strings.Repeat("a", 10<<10), malformed: true},
		{name: "too_long_10_kib_traversal", id: strings.Repeat("../", 10<<10/3), malformed: true},
		{name: "unknown_format", id: "reallyfakevolumeid"},
		{name: "max_length_unknown_format", id: "hv-" + strings.Repeat("a", volumeid.MaxLen-3)},
		{name: "upper_case_hex_of_existing", id: "hv-" + strings.ToUpper(hexPart)},
		{name: "upper_case_prefix_of_existing", id: "HV-" + hexPart},
		{name: "existing_id_one_short", id: existing[:len(existing)-1]},
		{name: "dots_without_slash", id: "hv-.x"},
	}
}

// idRPC calls one RPC that takes a volume ID, with every other field valid.
type idRPC struct {
	name string
	call func(ctx context.Context, h *harness, id string) error
	// foreignOK: an unknown-format ID is OK rather than NOT_FOUND
	// (DeleteVolume is idempotent).
	foreignOK bool
}

func idRPCs(dir string) []idRPC {
	target := filepath.Join(dir, "target")
	staging := filepath.Join(dir, "staging")
	return []idRPC{
		{name: "delete_volume", foreignOK: true, call: func(ctx context.Context, h *harness, id string) error {
			_, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
			return err
		}},
		{name: "validate_volume_capabilities", call: func(ctx context.Context, h *harness, id string) error {
			_, err := h.ctrl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{
				VolumeId: id, VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw)},
			})
			return err
		}},
		{name: "node_stage_volume", call: func(ctx context.Context, h *harness, id string) error {
			_, err := h.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
				VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw),
			})
			return err
		}},
		{name: "node_unstage_volume", call: func(ctx context.Context, h *harness, id string) error {
			_, err := h.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
			return err
		}},
		{name: "node_publish_volume", call: func(ctx context.Context, h *harness, id string) error {
			req := publishReq(id, target, mountCap(snw), false)
			req.StagingTargetPath = staging
			_, err := h.node.NodePublishVolume(ctx, req)
			return err
		}},
		{name: "node_unpublish_volume", call: func(ctx context.Context, h *harness, id string) error {
			_, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
			return err
		}},
		{name: "node_get_volume_stats", call: func(ctx context.Context, h *harness, id string) error {
			_, err := h.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
			return err
		}},
	}
}

func TestHostileVolumeIDs(t *testing.T) {
	h, existing, before := startHostile(t)

	for _, rpc := range idRPCs(h.Dir) {
		t.Run(rpc.name, func(t *testing.T) {
			for _, tc := range hostileIDs(existing) {
				t.Run(tc.name, func(t *testing.T) {
					err := rpc.call(t.Context(), h, tc.id)
					switch {
					case tc.malformed:
						requireCode(t, codes.InvalidArgument, err)
					case rpc.foreignOK:
						requireCode(t, codes.OK, err)
					default:
						requireCode(t, codes.NotFound, err)
					}
				})
			}
		})
	}

	require.Equal(t, before, snapshotTree(t, h.Dir), "a request with a hostile volume ID changed the filesystem")
	_, ok := h.mountAt(t, filepath.Join(h.Dir, "published"))
	require.True(t, ok, "the existing volume's mount must be untouched")
	_, err := h.ctrl.ValidateVolumeCapabilities(t.Context(), &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: existing, VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw)},
	})
	require.NoError(t, err, "the existing volume must survive")
}

func TestCreateVolumeHostileNames(t *testing.T) {
	h := start(t, testutil.Options{})
	plantSentinels(t, h.Dir)
	outside := func() map[string]string {
		s := snapshotTree(t, h.Dir)
		for p := range s {
			if p == h.poolPath() || strings.HasPrefix(p, h.poolPath()+"/") ||
				p == h.StateDir || strings.HasPrefix(p, h.StateDir+"/") {
				delete(s, p)
			}
		}
		return s
	}
	before := outside()

	cases := []struct {
		name    string
		volName string
		code    codes.Code
	}{
		{name: "dotdot", volName: "../..", code: codes.OK},
		{name: "traversal", volName: "../../etc/passwd", code: codes.OK},
		{name: "absolute", volName: "/etc/passwd", code: codes.OK},
		{name: "nul_inside", volName: "a\x00b", code: codes.OK},
		{name: "newline", volName: "a\nb", code: codes.OK},
		{name: "looks_like_an_id", volName: "hv-00000000000000000000000000000000", code: codes.OK},
		{name: "longest_allowed", volName: strings.Repeat("n", 1024), code: codes.OK},
		{name: "too_long_10_kib", volName: strings.Repeat("n", 10<<10), code: codes.InvalidArgument},
		{name: "empty", volName: "", code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := h.ctrl.CreateVolume(t.Context(), createReq(tc.volName))
			requireCode(t, tc.code, err)
			if tc.code != codes.OK {
				return
			}
			id := resp.GetVolume().GetVolumeId()
			require.Equal(t, volumeid.FromName(tc.volName), id)
			fi, err := os.Lstat(h.dataDir(id))
			require.NoError(t, err)
			require.True(t, fi.IsDir())
			_, err = h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
			require.NoError(t, err)
			require.NoDirExists(t, h.dataDir(id))
		})
	}
	require.Equal(t, before, outside(), "CreateVolume touched something outside the pool and state directories")
}

func TestHostilePaths(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("vol"))
	good := filepath.Join(h.Dir, "good")
	plantSentinels(t, h.Dir)
	before := snapshotTree(t, h.Dir)

	paths := []struct {
		name string
		path string
	}{
		{name: "relative", path: "target"},
		{name: "relative_traversal", path: "../../etc"},
		{name: "dot", path: "."},
		{name: "nul_inside", path: filepath.Join(h.Dir, "a\x00b")},
		{name: "root", path: "/"},
		{name: "root_double_slash", path: "//"},
		{name: "root_dot", path: "/."},
		{name: "root_via_dotdot", path: "/.."},
		{name: "longer_than_path_max", path: "/" + strings.Repeat("a", 4096)},
		{name: "ten_kib", path: filepath.Join(h.Dir, strings.Repeat("b/", 5<<10))},
	}
	type pathRPC struct {
		name string
		call func(ctx context.Context, p string) error
		// optional: an empty path is valid (NodePublishVolume's staging
		// path is absent for inline ephemeral volumes).
		optional bool
		// code for a hostile path; INVALID_ARGUMENT unless set.
		code codes.Code
	}
	rpcs := []pathRPC{
		{name: "node_stage_volume_staging", call: func(ctx context.Context, p string) error {
			_, err := h.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: p, VolumeCapability: mountCap(snw)})
			return err
		}},
		{name: "node_unstage_volume_staging", call: func(ctx context.Context, p string) error {
			_, err := h.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: p})
			return err
		}},
		{name: "node_publish_volume_target", call: func(ctx context.Context, p string) error {
			_, err := h.node.NodePublishVolume(ctx, publishReq(id, p, mountCap(snw), false))
			return err
		}},
		{name: "node_publish_volume_staging", optional: true, call: func(ctx context.Context, p string) error {
			req := publishReq(id, good, mountCap(snw), false)
			req.StagingTargetPath = p
			_, err := h.node.NodePublishVolume(ctx, req)
			return err
		}},
		{name: "node_unpublish_volume_target", call: func(ctx context.Context, p string) error {
			_, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: p})
			return err
		}},
		// volume_path only has to match where the volume was published
		// or staged: anything else is NOT_FOUND (csi-sanity sends a
		// relative "some/path" and expects exactly that), and is never
		// looked up on the filesystem.
		{name: "node_get_volume_stats_path", code: codes.NotFound, call: func(ctx context.Context, p string) error {
			_, err := h.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: p})
			return err
		}},
	}
	for _, rpc := range rpcs {
		t.Run(rpc.name, func(t *testing.T) {
			for _, tc := range paths {
				t.Run(tc.name, func(t *testing.T) {
					want := codes.InvalidArgument
					if rpc.code != codes.OK {
						want = rpc.code
					}
					requireCode(t, want, rpc.call(t.Context(), tc.path))
				})
			}
			if !rpc.optional {
				t.Run("empty", func(t *testing.T) {
					requireCode(t, codes.InvalidArgument, rpc.call(t.Context(), ""))
				})
			}
		})
	}
	require.Equal(t, before, snapshotTree(t, h.Dir), "a request with a hostile path changed the filesystem")
	require.Empty(t, h.mounter.GetLog(), "no mount may be made for a hostile path")
}

// A 10 KB string in a request (an ID, a name, a path, a parameter, a
// token, a mount flag) is echoed cut to a few hundred bytes with its full
// length, whichever check refuses it, not whole into the error and the
// "Call failed" log line.
func TestLongRequestStringsAreCut(t *testing.T) {
	h := start(t, testutil.Options{})
	existing := h.create(t, createReq("existing"))
	long := strings.Repeat("a", 10<<10)
	longName := strings.Repeat("n", 1000) // names are refused above 1024 bytes
	target := filepath.Join(h.Dir, "target")
	ephemeral := func(attrs map[string]string) *csi.NodePublishVolumeRequest {
		ctx := map[string]string{"csi.storage.k8s.io/ephemeral": "true"}
		maps.Copy(ctx, attrs)
		return &csi.NodePublishVolumeRequest{VolumeId: "csi-" + strings.Repeat("ab", 32), TargetPath: target, VolumeCapability: mountCap(snw), VolumeContext: ctx}
	}
	fsCap := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: long}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: snw},
	}
	cases := []struct {
		name   string
		length int // of the string that must appear cut
		call   func() error
	}{
		{name: "create_volume_name", length: len(longName), call: func() error {
			r := createReq(longName)
			r.VolumeCapabilities = nil
			_, err := h.ctrl.CreateVolume(t.Context(), r)
			return err
		}},
		{name: "create_volume_parameter_key", length: len(long), call: func() error {
			r := createReq("v")
			r.Parameters = map[string]string{long: "x"}
			_, err := h.ctrl.CreateVolume(t.Context(), r)
			return err
		}},
		{name: "create_volume_parameter_value", length: len(long), call: func() error {
			r := createReq("v")
			r.Parameters = map[string]string{"type": long}
			_, err := h.ctrl.CreateVolume(t.Context(), r)
			return err
		}},
		{name: "create_volume_pool_name", length: len(long), call: func() error {
			r := createReq("v")
			r.Parameters = map[string]string{"pool": long}
			_, err := h.ctrl.CreateVolume(t.Context(), r)
			return err
		}},
		{name: "create_volume_fs_type", length: len(long), call: func() error {
			r := createReq("v")
			r.VolumeCapabilities = []*csi.VolumeCapability{fsCap}
			_, err := h.ctrl.CreateVolume(t.Context(), r)
			return err
		}},
		{name: "delete_volume_id", length: len(long), call: func() error {
			_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: long})
			return err
		}},
		{name: "controller_expand_volume_no_range", length: len(long), call: func() error {
			_, err := h.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{VolumeId: long})
			return err
		}},
		{name: "list_volumes_token", length: len(long), call: func() error {
			_, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{StartingToken: long})
			return err
		}},
		{name: "list_volume_health_token", length: len(long), call: func() error {
			_, err := h.ctrl.ControllerListVolumeHealth(t.Context(), &csi.ControllerListVolumeHealthRequest{StartingToken: long})
			return err
		}},
		{name: "node_stage_volume_no_capability", length: len(long), call: func() error {
			_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: long, StagingTargetPath: target})
			return err
		}},
		{name: "node_stage_volume_relative_path", length: len(long), call: func() error {
			_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: existing, StagingTargetPath: long, VolumeCapability: mountCap(snw)})
			return err
		}},
		{name: "node_stage_volume_mount_flag", length: len(long), call: func() error {
			_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: existing, StagingTargetPath: target, VolumeCapability: mountCap(snw, long)})
			return err
		}},
		{name: "node_publish_volume_id_and_path", length: len(long), call: func() error {
			_, err := h.node.NodePublishVolume(t.Context(), publishReq(long, long, mountCap(snw), false))
			return err
		}},
		{name: "node_publish_inline_size", length: len(long), call: func() error {
			_, err := h.node.NodePublishVolume(t.Context(), ephemeral(map[string]string{"size": long}))
			return err
		}},
		{name: "node_publish_inline_attribute_key", length: len(long), call: func() error {
			_, err := h.node.NodePublishVolume(t.Context(), ephemeral(map[string]string{long: "x"}))
			return err
		}},
		{name: "node_unpublish_volume_id", length: len(long), call: func() error {
			_, err := h.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: long, TargetPath: target})
			return err
		}},
		{name: "node_get_volume_stats_no_path", length: len(long), call: func() error {
			_, err := h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: long})
			return err
		}},
		{name: "node_expand_volume_no_path", length: len(long), call: func() error {
			_, err := h.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{VolumeId: long})
			return err
		}},
		{name: "node_get_volume_health_relative_path", length: len(long), call: func() error {
			_, err := h.node.NodeGetVolumeHealth(t.Context(), &csi.NodeGetVolumeHealthRequest{VolumeId: long, VolumePublishPath: long})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Error(t, err)
			msg := status.Convert(err).Message()
			require.Less(t, len(msg), 1024, "message: %.2000s", msg)
			require.Contains(t, msg, fmt.Sprintf("... (%d bytes)", tc.length))
		})
	}
}
