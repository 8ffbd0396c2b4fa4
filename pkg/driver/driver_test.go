package driver_test

// Tests of the whole driver over its gRPC socket, with mount-utils'
// FakeMounter and real temporary directories: they run as any user. This
// file holds the shared helpers and the cross-cutting cases (hostile input,
// start-up, restart, locking, concurrency); controller_test.go and
// node_test.go hold the per-service cases.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/driver"
	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const (
	mib      = int64(1) << 20
	testNode = "test-node"
)

// harness is a driver served on a socket plus clients for its services.
type harness struct {
	*testutil.Env
	ctrl    csi.ControllerClient
	node    csi.NodeClient
	ident   csi.IdentityClient
	mounter *mount.FakeMounter // nil when the test passed its own mounter
}

// start runs a driver with testutil.StartDriver (a FakeMounter unless the
// options name a mounter) and dials it.
func start(t *testing.T, o testutil.Options) *harness {
	t.Helper()
	h := &harness{}
	if o.Mounter == nil {
		h.mounter = mount.NewFakeMounter(nil)
		o.Mounter = h.mounter
	} else if fm, ok := o.Mounter.(*mount.FakeMounter); ok {
		h.mounter = fm
	}
	if o.NodeID == "" {
		o.NodeID = testNode
	}
	h.Env = testutil.StartDriver(t, o)
	conn := dial(t, h.Endpoint)
	h.ctrl = csi.NewControllerClient(conn)
	h.node = csi.NewNodeClient(conn)
	h.ident = csi.NewIdentityClient(conn)
	return h
}

func dial(t *testing.T, ep string) *grpc.ClientConn {
	t.Helper()
	conn, err := endpoint.Dial(ep)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// poolPath is the path of the harness's first pool.
func (h *harness) poolPath() string { return h.Pools[0].Path }

// dataDir is where a volume's data lives in the first pool.
func (h *harness) dataDir(id string) string { return h.Pools[0].DirPath(id) }

// mountCap is a mount volume capability.
func mountCap(mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

var (
	snw  = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	snsw = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	mnro = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	snro = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
)

// createReq is a 1 MiB single-node-writer request in the default pool.
func createReq(name string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: mib},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw)},
	}
}

// create makes a volume and returns its ID.
func (h *harness) create(t *testing.T, req *csi.CreateVolumeRequest) string {
	t.Helper()
	resp, err := h.ctrl.CreateVolume(t.Context(), req)
	require.NoError(t, err)
	require.NoError(t, volumeid.Validate(resp.GetVolume().GetVolumeId()))
	return resp.GetVolume().GetVolumeId()
}

func publishReq(id, target string, c *csi.VolumeCapability, readOnly bool) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: c, Readonly: readOnly}
}

// publish publishes a volume read-write, single-node-writer, at target.
func (h *harness) publish(t *testing.T, id, target string) {
	t.Helper()
	_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, target, mountCap(snw), false))
	require.NoError(t, err)
}

// mountAt returns the fake mount at path, if any.
func (h *harness) mountAt(t *testing.T, path string) (mount.MountPoint, bool) {
	t.Helper()
	mps, err := h.mounter.List()
	require.NoError(t, err)
	for _, mp := range mps {
		if mp.Path == path {
			return mp, true
		}
	}
	return mount.MountPoint{}, false
}

// requireCode asserts the gRPC code of err (codes.OK for nil).
func requireCode(t *testing.T, want codes.Code, err error) {
	t.Helper()
	require.Equal(t, want, status.Code(err), "error: %v", err)
}

// recordFiles lists the record files in a record directory.
func recordFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// snapshotTree describes every entry under root (type, mode, size, mtime,
// content digest, link target), so that a test can assert that nothing at
// all changed.
func snapshotTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + l
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(sum[:])
		}
		out[p] = desc
		return nil
	})
	require.NoError(t, err)
	return out
}

// plantSentinels puts the files a path traversal from the pool or state
// directories would reach: <dir>/etc/passwd and <dir>/x/keep.
func plantSentinels(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0\n"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "x"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "x", "keep"), []byte("keep"), 0o644))
}

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
	h := start(t, testutil.Options{})
	existing := h.create(t, createReq("existing"))
	// A volume published elsewhere, so that a lookup that wrongly matched
	// would have a publication to act on.
	h.publish(t, existing, filepath.Join(h.Dir, "published"))
	plantSentinels(t, h.Dir)
	before := snapshotTree(t, h.Dir)

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

// TestProbeAndUnavailableBeforeLoad builds a driver by hand on a Manager
// whose Load has not run: only identity calls may answer, and Probe says
// not ready, until Load finishes.
func TestProbeAndUnavailableBeforeLoad(t *testing.T) {
	dir := t.TempDir()
	poolDir := filepath.Join(dir, "pool")
	require.NoError(t, os.Mkdir(poolDir, 0o755))
	p, err := pool.Open(pool.Spec{Name: pool.DefaultName, Path: poolDir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	mgr, err := volume.New(volume.Config{NodeID: testNode, StateDir: filepath.Join(dir, "state"), Pools: []*pool.Pool{p}, Mounter: mount.NewFakeMounter(nil), Quota: quota.NewFake()})
	require.NoError(t, err)
	drv, err := driver.New(driver.Config{Name: "hostvol.csi.io", Version: "test", NodeID: testNode, Manager: mgr})
	require.NoError(t, err)
	ep := "unix://" + filepath.Join(dir, "csi.sock")
	l, err := endpoint.Listen(ep)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = drv.Serve(l)
	}()
	t.Cleanup(func() {
		drv.Stop()
		<-done
	})
	conn := dial(t, ep)
	ident, ctrl, node := csi.NewIdentityClient(conn), csi.NewControllerClient(conn), csi.NewNodeClient(conn)
	ctx := t.Context()
	id := volumeid.FromName("vol")

	probe, err := ident.Probe(ctx, &csi.ProbeRequest{})
	require.NoError(t, err)
	require.False(t, probe.GetReady().GetValue(), "not ready before Load")
	info, err := ident.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	require.NoError(t, err)
	require.Equal(t, "hostvol.csi.io", info.GetName())
	_, err = ident.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	require.NoError(t, err)

	calls := []struct {
		name string
		call func() error
	}{
		{name: "create_volume", call: func() error { _, err := ctrl.CreateVolume(ctx, createReq("vol")); return err }},
		{name: "delete_volume", call: func() error {
			_, err := ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
			return err
		}},
		{name: "list_volumes", call: func() error { _, err := ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{}); return err }},
		{name: "get_capacity", call: func() error { _, err := ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{}); return err }},
		{name: "controller_get_capabilities", call: func() error {
			_, err := ctrl.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
			return err
		}},
		{name: "node_get_info", call: func() error { _, err := node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{}); return err }},
		{name: "node_publish_volume", call: func() error {
			_, err := node.NodePublishVolume(ctx, publishReq(id, filepath.Join(dir, "target"), mountCap(snw), false))
			return err
		}},
		{name: "node_get_volume_stats", call: func() error {
			_, err := node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: filepath.Join(dir, "target")})
			return err
		}},
	}
	for _, tc := range calls {
		t.Run(tc.name+"_before_load", func(t *testing.T) {
			requireCode(t, codes.Unavailable, tc.call())
		})
	}
	require.NoDirExists(t, filepath.Join(dir, "target"))

	require.NoError(t, mgr.Load())
	probe, err = ident.Probe(ctx, &csi.ProbeRequest{})
	require.NoError(t, err)
	require.True(t, probe.GetReady().GetValue(), "ready after Load")
	_, err = ctrl.CreateVolume(ctx, createReq("vol"))
	require.NoError(t, err)
	_, err = node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	require.NoError(t, err)
}

// TestRestartSameStateDir stops a driver and starts another on the same
// state directory and pool: volumes and publications are remembered, and a
// publication whose mount is gone (a reboot) is dropped.
func TestRestartSameStateDir(t *testing.T) {
	base := t.TempDir()
	poolDir := filepath.Join(base, "pool")
	require.NoError(t, os.Mkdir(poolDir, 0o755))
	opts := func(m mount.Interface) testutil.Options {
		return testutil.Options{
			StateDir:  filepath.Join(base, "state"),
			PoolSpecs: []pool.Spec{{Name: pool.DefaultName, Path: poolDir}},
			Mounter:   m,
		}
	}
	mounter := mount.NewFakeMounter(nil)
	first := start(t, opts(mounter))
	var ids []string
	for i := range 3 {
		ids = append(ids, first.create(t, createReq(fmt.Sprintf("vol-%d", i))))
	}
	target := filepath.Join(base, "target")
	first.publish(t, ids[0], target)
	first.Driver.Stop()

	listIDs := func(h *harness) []string {
		resp, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
		require.NoError(t, err)
		require.Empty(t, resp.GetNextToken())
		var got []string
		for _, e := range resp.GetEntries() {
			got = append(got, e.GetVolume().GetVolumeId())
		}
		slices.Sort(got)
		return got
	}
	want := slices.Sorted(slices.Values(ids))

	t.Run("same_mounts", func(t *testing.T) {
		h := start(t, opts(mounter))
		require.Equal(t, want, listIDs(h))
		_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: ids[0]})
		requireCode(t, codes.FailedPrecondition, err)
		require.DirExists(t, h.dataDir(ids[0]))
		// Single-writer and read-only checks see the remembered target too.
		_, err = h.node.NodePublishVolume(t.Context(), publishReq(ids[0], target, mountCap(snw), true))
		requireCode(t, codes.AlreadyExists, err)
		h.Driver.Stop()
	})

	t.Run("after_reboot", func(t *testing.T) {
		h := start(t, opts(mount.NewFakeMounter(nil)))
		require.Equal(t, want, listIDs(h))
		_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: ids[0]})
		require.NoError(t, err)
		require.NoDirExists(t, h.dataDir(ids[0]))
		require.Equal(t, slices.Sorted(slices.Values(ids[1:])), listIDs(h))
		for _, id := range ids[1:] {
			require.DirExists(t, h.dataDir(id))
		}
	})
}

func TestConcurrentCreateSameName(t *testing.T) {
	h := start(t, testutil.Options{})
	const callers = 16
	type result struct {
		id   string
		code codes.Code
	}
	results := make([]result, callers)
	var wg sync.WaitGroup
	startGate := make(chan struct{})
	for i := range callers {
		wg.Go(func() {
			<-startGate
			resp, err := h.ctrl.CreateVolume(context.Background(), createReq("same-name"))
			results[i] = result{id: resp.GetVolume().GetVolumeId(), code: status.Code(err)}
		})
	}
	close(startGate)
	wg.Wait()

	want := volumeid.FromName("same-name")
	oks := 0
	for i, r := range results {
		switch r.code {
		case codes.OK:
			oks++
			require.Equal(t, want, r.id, "caller %d", i)
		case codes.Aborted:
		default:
			t.Fatalf("caller %d: code %s, want OK or Aborted", i, r.code)
		}
	}
	require.Positive(t, oks)
	require.Equal(t, []string{want + ".json"}, recordFiles(t, filepath.Join(h.StateDir, "volumes")))
	entries, err := h.Pools[0].Entries()
	require.NoError(t, err)
	require.Equal(t, []string{want}, entries)
}

// gateMounter is a FakeMounter whose Mount at one target blocks until the
// test releases it, so that a NodePublishVolume can be held in the middle
// of its work while the volume's lock is taken.
type gateMounter struct {
	*mount.FakeMounter
	target  string
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gateMounter) Mount(source, target, fstype string, opts []string) error {
	if target == g.target {
		g.once.Do(func() { close(g.entered) })
		<-g.release
	}
	return g.FakeMounter.Mount(source, target, fstype, opts)
}

func TestPerVolumeLock(t *testing.T) {
	base := t.TempDir()
	gate := &gateMounter{
		FakeMounter: mount.NewFakeMounter(nil),
		target:      filepath.Join(base, "held"),
		entered:     make(chan struct{}),
		release:     make(chan struct{}),
	}
	h := start(t, testutil.Options{Mounter: gate})
	// Registered after StartDriver's cleanup, so it runs first: a failing
	// test must not leave the held call blocking the server's graceful stop.
	release := sync.OnceFunc(func() { close(gate.release) })
	t.Cleanup(release)
	held := h.create(t, createReq("held"))
	other := h.create(t, createReq("other"))

	published := make(chan error, 1)
	go func() {
		_, err := h.node.NodePublishVolume(context.Background(), publishReq(held, gate.target, mountCap(snw), false))
		published <- err
	}()
	<-gate.entered // NodePublishVolume of held now holds its lock.

	ctx := t.Context()
	staging := filepath.Join(base, "staging")
	onHeld := []struct {
		name string
		call func() error
	}{
		{name: "create_volume_same_name", call: func() error { _, err := h.ctrl.CreateVolume(ctx, createReq("held")); return err }},
		{name: "delete_volume", call: func() error {
			_, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: held})
			return err
		}},
		{name: "node_stage_volume", call: func() error {
			_, err := h.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: held, StagingTargetPath: staging, VolumeCapability: mountCap(snw)})
			return err
		}},
		{name: "node_unstage_volume", call: func() error {
			_, err := h.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: held, StagingTargetPath: staging})
			return err
		}},
		{name: "node_publish_volume_other_target", call: func() error {
			_, err := h.node.NodePublishVolume(ctx, publishReq(held, filepath.Join(base, "second"), mountCap(snw), false))
			return err
		}},
		{name: "node_publish_volume_same_target", call: func() error {
			_, err := h.node.NodePublishVolume(ctx, publishReq(held, gate.target, mountCap(snw), false))
			return err
		}},
		{name: "node_unpublish_volume", call: func() error {
			_, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: held, TargetPath: gate.target})
			return err
		}},
	}
	for _, tc := range onHeld {
		t.Run(tc.name, func(t *testing.T) {
			requireCode(t, codes.Aborted, tc.call())
		})
	}

	// No global lock: other volumes, and read-only calls, go on.
	t.Run("other_volume_not_blocked", func(t *testing.T) {
		h.publish(t, other, filepath.Join(base, "other"))
		_, err := h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: other, TargetPath: filepath.Join(base, "other")})
		require.NoError(t, err)
		_, err = h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: other})
		require.NoError(t, err)
		h.create(t, createReq("third"))
	})
	t.Run("reads_not_blocked", func(t *testing.T) {
		_, err := h.ctrl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: held, VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw)}})
		require.NoError(t, err)
		_, err = h.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{})
		require.NoError(t, err)
	})

	release()
	require.NoError(t, <-published)
	_, err := h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: held})
	requireCode(t, codes.FailedPrecondition, err) // published, and now unlocked
	_, err = h.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: held, TargetPath: gate.target})
	require.NoError(t, err)
	_, err = h.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: held})
	require.NoError(t, err)
}

// TestPlantedSymlinks plants links inside a volume that point outside it:
// stats still measure the pool, and DeleteVolume removes the links, never
// what they point at.
func TestPlantedSymlinks(t *testing.T) {
	// A pool that limits nothing: the stats of its directory volumes
	// describe the pool's filesystem, read without following the links.
	unlimited := quota.NewFake()
	unlimited.Method = quota.None
	h := start(t, testutil.Options{Quota: unlimited})
	outside := t.TempDir()
	keep := filepath.Join(outside, "keep")
	require.NoError(t, os.WriteFile(keep, []byte("precious"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(outside, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "sub", "file"), []byte("also precious"), 0o644))
	outsideBefore := snapshotTree(t, outside)
	plantSentinels(t, h.Dir)
	sentinels := func() map[string]string {
		s := snapshotTree(t, filepath.Join(h.Dir, "etc"))
		for k, v := range snapshotTree(t, filepath.Join(h.Dir, "x")) {
			s[k] = v
		}
		return s
	}
	sentinelsBefore := sentinels()

	var poolFS unix.Statfs_t
	require.NoError(t, unix.Statfs(h.poolPath(), &poolFS))

	req := createReq("vol")
	req.Parameters = map[string]string{"sizeLimit": "optional"}
	id := h.create(t, req)
	data := h.dataDir(id)
	require.NoError(t, os.Symlink(outside, filepath.Join(data, "to-outside-dir")))
	require.NoError(t, os.Symlink(keep, filepath.Join(data, "to-outside-file")))
	require.NoError(t, os.Symlink("../../..", filepath.Join(data, "up")))
	require.NoError(t, os.Symlink("/", filepath.Join(data, "root")))
	require.NoError(t, os.Symlink("/proc", filepath.Join(data, "proc")))
	require.NoError(t, os.MkdirAll(filepath.Join(data, "nested", "deeper"), 0o755))
	require.NoError(t, os.Symlink(outside, filepath.Join(data, "nested", "deeper", "to-outside")))
	require.NoError(t, os.Link(keep, filepath.Join(data, "hardlink-to-outside")))

	target := filepath.Join(h.Dir, "target")
	h.publish(t, id, target)
	stats, err := h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	require.NoError(t, err)
	usage := map[csi.VolumeUsage_Unit]*csi.VolumeUsage{}
	for _, u := range stats.GetUsage() {
		usage[u.GetUnit()] = u
	}
	require.Equal(t, int64(poolFS.Blocks)*int64(poolFS.Bsize), usage[csi.VolumeUsage_BYTES].GetTotal(), "stats must describe the pool's filesystem")
	require.Equal(t, int64(poolFS.Files), usage[csi.VolumeUsage_INODES].GetTotal())

	_, err = h.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	require.NoError(t, err)
	_, err = h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	require.NoDirExists(t, data)
	require.Equal(t, outsideBefore, snapshotTree(t, outside), "DeleteVolume followed a planted link")
	require.Equal(t, sentinelsBefore, sentinels())
	b, err := os.ReadFile(keep)
	require.NoError(t, err)
	require.Equal(t, "precious", string(b))
	require.DirExists(t, h.poolPath())
	require.DirExists(t, h.StateDir)
}

// TestDataDirReplacedBySymlink covers a volume's data directory itself
// swapped for a link to elsewhere: hostvol must neither mount, measure nor
// delete what the link points at.
func TestDataDirReplacedBySymlink(t *testing.T) {
	h := start(t, testutil.Options{})
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "keep"), []byte("precious"), 0o644))
	before := snapshotTree(t, outside)

	id := h.create(t, createReq("vol"))
	require.NoError(t, os.Remove(h.dataDir(id)))
	require.NoError(t, os.Symlink(outside, h.dataDir(id)))

	target := filepath.Join(h.Dir, "target")
	_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, target, mountCap(snw), false))
	require.Error(t, err)
	require.Empty(t, h.mounter.GetLog(), "nothing may be mounted from a symlinked data directory")

	_, err = h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	_, err = os.Lstat(h.dataDir(id))
	require.True(t, os.IsNotExist(err), "the planted link itself is removed")
	require.Equal(t, before, snapshotTree(t, outside))
}
