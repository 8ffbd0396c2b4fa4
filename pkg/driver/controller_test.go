package driver_test

import (
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// twoPools starts a driver with the default pool and a second node-local
// pool named "second".
func twoPools(t *testing.T) *harness {
	t.Helper()
	base := t.TempDir()
	var specs []pool.Spec
	for _, name := range []string{pool.DefaultName, "second"} {
		p := filepath.Join(base, name)
		require.NoError(t, os.Mkdir(p, 0o755))
		specs = append(specs, pool.Spec{Name: name, Path: p})
	}
	return start(t, testutil.Options{PoolSpecs: specs})
}

// requireNoVolumes asserts that no record and no data exist.
func requireNoVolumes(t *testing.T, h *harness) {
	t.Helper()
	require.Empty(t, recordFiles(t, h.Layout().RecordsDir()))
	require.Empty(t, recordFiles(t, h.Layout().NodeStatesDir()))
	for _, p := range h.Pools {
		entries, err := p.Entries()
		require.NoError(t, err)
		require.Empty(t, entries, "pool %s", p.Name)
	}
}

func nodeTopology(node string) []*csi.Topology {
	return []*csi.Topology{{Segments: map[string]string{params.TopologyKey: node}}}
}

func TestCreateVolumeInvalid(t *testing.T) {
	h := twoPools(t)
	cases := []struct {
		name   string
		modify func(*csi.CreateVolumeRequest)
		code   codes.Code
	}{
		{name: "no_name", modify: func(r *csi.CreateVolumeRequest) { r.Name = "" }, code: codes.InvalidArgument},
		{name: "unknown_parameter", modify: func(r *csi.CreateVolumeRequest) { r.Parameters = map[string]string{"fstype": "ext4"} }, code: codes.InvalidArgument},
		{name: "parameter_key_case", modify: func(r *csi.CreateVolumeRequest) { r.Parameters = map[string]string{"Type": "dir"} }, code: codes.InvalidArgument},
		{name: "bad_type", modify: func(r *csi.CreateVolumeRequest) { r.Parameters = map[string]string{"type": "nfs"} }, code: codes.InvalidArgument},
		{name: "empty_type", modify: func(r *csi.CreateVolumeRequest) { r.Parameters = map[string]string{"type": ""} }, code: codes.InvalidArgument},
		{name: "unknown_pool", modify: func(r *csi.CreateVolumeRequest) { r.Parameters = map[string]string{"pool": "nope"} }, code: codes.InvalidArgument},
		{name: "pool_name_traversal", modify: func(r *csi.CreateVolumeRequest) { r.Parameters = map[string]string{"pool": "../second"} }, code: codes.InvalidArgument},
		{name: "required_above_limit", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: 2 * mib, LimitBytes: mib}
		}, code: codes.OutOfRange},
		{name: "negative_required", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: -1}
		}, code: codes.InvalidArgument},
		{name: "negative_limit", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{LimitBytes: -mib}
		}, code: codes.InvalidArgument},
		{name: "no_capabilities", modify: func(r *csi.CreateVolumeRequest) { r.VolumeCapabilities = nil }, code: codes.InvalidArgument},
		{name: "capability_without_access_mode", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}}
		}, code: codes.InvalidArgument},
		{name: "capability_without_access_type", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{{AccessMode: &csi.VolumeCapability_AccessMode{Mode: snw}}}
		}, code: codes.InvalidArgument},
		{name: "unknown_access_mode", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_UNKNOWN)}
		}, code: codes.InvalidArgument},
		{name: "block_multi_node_writer_without_opt_in", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}
		}, code: codes.InvalidArgument},
		{name: "loop_unknown_fstype", modify: func(r *csi.CreateVolumeRequest) {
			r.Parameters = map[string]string{"type": "loop"}
			r.VolumeCapabilities = []*csi.VolumeCapability{{
				AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "vfat"}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: snw},
			}}
		}, code: codes.InvalidArgument},
		{name: "loop_fstype_conflict", modify: func(r *csi.CreateVolumeRequest) {
			r.Parameters = map[string]string{"type": "loop", "csi.storage.k8s.io/fstype": "xfs"}
			r.VolumeCapabilities = []*csi.VolumeCapability{{
				AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: snw},
			}}
		}, code: codes.InvalidArgument},
		{name: "loop_xfs_under_minimum_within_limit", modify: func(r *csi.CreateVolumeRequest) {
			r.Parameters = map[string]string{"type": "loop", "csi.storage.k8s.io/fstype": "xfs"}
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: mib, LimitBytes: 100 * mib}
		}, code: codes.OutOfRange},
		{name: "block_among_mount", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = append(r.VolumeCapabilities, blockCap(snw))
		}, code: codes.InvalidArgument},
		{name: "unsupported_mount_flag", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{mountCap(snw, "suid")}
		}, code: codes.InvalidArgument},
		{name: "snapshot_source_not_hostvol", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeContentSource = snapshotSource("snap")
		}, code: codes.NotFound},
		{name: "snapshot_source_malformed", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeContentSource = snapshotSource("../snap")
		}, code: codes.InvalidArgument},
		{name: "snapshot_source_missing", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeContentSource = snapshotSource(volumeid.SnapshotFromName(testutil.DefaultNodeID, "none"))
		}, code: codes.NotFound},
		{name: "snapshot_source_on_another_node", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeContentSource = snapshotSource(volumeid.SnapshotFromName("other-node", "snap"))
		}, code: codes.ResourceExhausted},
		{name: "volume_source_elsewhere", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
				Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: volumeid.FromName("other")},
			}}
		}, code: codes.ResourceExhausted},
		{name: "volume_source_not_hostvol", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
				Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: "other"},
			}}
		}, code: codes.NotFound},
		{name: "empty_content_source", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeContentSource = &csi.VolumeContentSource{}
		}, code: codes.InvalidArgument},
		{name: "mutable_parameters", modify: func(r *csi.CreateVolumeRequest) {
			r.MutableParameters = map[string]string{"iops": "100"}
		}, code: codes.InvalidArgument},
		{name: "bigger_than_pool_filesystem", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: 1 << 60}
		}, code: codes.ResourceExhausted},
		{name: "bigger_than_second_pool_filesystem", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: 1 << 60}
			r.Parameters = map[string]string{"pool": "second"}
		}, code: codes.ResourceExhausted},
		{name: "requisite_names_another_node", modify: func(r *csi.CreateVolumeRequest) {
			r.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: nodeTopology("other-node")}
		}, code: codes.ResourceExhausted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := createReq("vol-" + tc.name)
			tc.modify(req)
			_, err := h.ctrl.CreateVolume(t.Context(), req)
			requireCode(t, tc.code, err)
			requireNoVolumes(t, h)
		})
	}
}

func TestCreateVolume(t *testing.T) {
	h := twoPools(t)
	here := nodeTopology(testNode)
	cases := []struct {
		name         string
		modify       func(*csi.CreateVolumeRequest)
		wantCapacity int64
		wantPool     string
	}{
		{name: "defaults", modify: func(*csi.CreateVolumeRequest) {}, wantCapacity: mib, wantPool: pool.DefaultName},
		{name: "explicit_parameters", modify: func(r *csi.CreateVolumeRequest) {
			r.Parameters = map[string]string{
				"type": "dir", "pool": "second",
				"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "ns",
				"csi.storage.k8s.io/pv/name": "pv-1",
			}
		}, wantCapacity: mib, wantPool: "second"},
		{name: "limit_caps_default_size", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{LimitBytes: 2 * mib}
		}, wantCapacity: 2 * mib, wantPool: pool.DefaultName},
		{name: "required_equals_limit", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: 3 * mib, LimitBytes: 3 * mib}
		}, wantCapacity: 3 * mib, wantPool: pool.DefaultName},
		{name: "requisite_includes_this_node", modify: func(r *csi.CreateVolumeRequest) {
			r.AccessibilityRequirements = &csi.TopologyRequirement{
				Requisite: append(nodeTopology("other-node"), here...),
				Preferred: nodeTopology("other-node"),
			}
		}, wantCapacity: mib, wantPool: pool.DefaultName},
		{name: "only_preferred_excludes_this_node", modify: func(r *csi.CreateVolumeRequest) {
			// Without requisite terms the SP may choose any topology.
			r.AccessibilityRequirements = &csi.TopologyRequirement{Preferred: nodeTopology("other-node")}
		}, wantCapacity: mib, wantPool: pool.DefaultName},
		{name: "requisite_of_foreign_key", modify: func(r *csi.CreateVolumeRequest) {
			r.AccessibilityRequirements = &csi.TopologyRequirement{
				Requisite: []*csi.Topology{{Segments: map[string]string{"topology.kubernetes.io/zone": "a"}}},
			}
		}, wantCapacity: mib, wantPool: pool.DefaultName},
		{name: "reader_only", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{mountCap(mnro)}
		}, wantCapacity: mib, wantPool: pool.DefaultName},
		{name: "allowed_mount_flags", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{mountCap(snw, "noexec", "nosuid,nodev")}
		}, wantCapacity: mib, wantPool: pool.DefaultName},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := createReq("vol-" + tc.name)
			tc.modify(req)
			resp, err := h.ctrl.CreateVolume(t.Context(), req)
			require.NoError(t, err)
			v := resp.GetVolume()
			require.Equal(t, volumeid.FromName(req.GetName()), v.GetVolumeId())
			require.Equal(t, tc.wantCapacity, v.GetCapacityBytes())
			require.Equal(t, map[string]string{"type": "dir", "pool": tc.wantPool}, v.GetVolumeContext())
			require.Len(t, v.GetAccessibleTopology(), 1)
			require.Equal(t, map[string]string{params.TopologyKey: testNode}, v.GetAccessibleTopology()[0].GetSegments())
			var dataPool *pool.Pool
			for _, p := range h.Pools {
				if p.Name == tc.wantPool {
					dataPool = p
				}
			}
			fi, err := os.Stat(dataPool.DirPath(v.GetVolumeId()))
			require.NoError(t, err)
			require.True(t, fi.IsDir())
			require.FileExists(t, h.Layout().RecordPath(v.GetVolumeId()))
		})
	}
}

func TestCreateVolumeIdempotent(t *testing.T) {
	h := twoPools(t)
	base := createReq("vol")
	base.CapacityRange = &csi.CapacityRange{RequiredBytes: 2 * mib}
	first, err := h.ctrl.CreateVolume(t.Context(), base)
	require.NoError(t, err)
	id := first.GetVolume().GetVolumeId()

	cases := []struct {
		name   string
		modify func(*csi.CreateVolumeRequest)
		code   codes.Code
	}{
		{name: "same_parameters", modify: func(*csi.CreateVolumeRequest) {}, code: codes.OK},
		{name: "explicit_defaults", modify: func(r *csi.CreateVolumeRequest) {
			r.Parameters = map[string]string{"type": "dir", "pool": pool.DefaultName}
		}, code: codes.OK},
		{name: "smaller_required_fits", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: mib}
		}, code: codes.OK},
		{name: "limit_above_capacity", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: mib, LimitBytes: 4 * mib}
		}, code: codes.OK},
		{name: "larger_capacity", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: 3 * mib}
		}, code: codes.AlreadyExists},
		{name: "limit_below_capacity", modify: func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{LimitBytes: mib}
		}, code: codes.AlreadyExists},
		{name: "different_pool", modify: func(r *csi.CreateVolumeRequest) {
			r.Parameters = map[string]string{"pool": "second"}
		}, code: codes.AlreadyExists},
		{name: "reader_only_capabilities", modify: func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{mountCap(mnro)}
		}, code: codes.AlreadyExists},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := createReq("vol")
			req.CapacityRange = &csi.CapacityRange{RequiredBytes: 2 * mib}
			tc.modify(req)
			resp, err := h.ctrl.CreateVolume(t.Context(), req)
			requireCode(t, tc.code, err)
			if tc.code == codes.OK {
				require.Equal(t, id, resp.GetVolume().GetVolumeId())
				require.Equal(t, 2*mib, resp.GetVolume().GetCapacityBytes())
			}
			// Never a second record or a copy of the data.
			require.Equal(t, []string{testutil.RecordFile(id)}, recordFiles(t, h.Layout().RecordsDir()))
			for _, p := range h.Pools {
				entries, err := p.Entries()
				require.NoError(t, err)
				if p.Name == pool.DefaultName {
					require.Equal(t, []string{id}, entries)
				} else {
					require.Empty(t, entries)
				}
			}
		})
	}
}

// sharedPool starts a driver for node with a node-local default pool and a
// shared pool at sharedPath, on its own state directory.
func sharedPool(t *testing.T, node, sharedPath string) *harness {
	t.Helper()
	local := filepath.Join(t.TempDir(), "local")
	require.NoError(t, os.Mkdir(local, 0o755))
	return start(t, testutil.Options{NodeID: node, PoolSpecs: []pool.Spec{
		{Name: pool.DefaultName, Path: local},
		{Name: "shared", Path: sharedPath, Shared: true},
	}})
}

func TestSharedPool(t *testing.T) {
	sharedPath := t.TempDir()
	a := sharedPool(t, "node-a", sharedPath)
	b := sharedPool(t, "node-b", sharedPath)
	// Shared pools limit nothing: their directory volumes need a class
	// with sizeLimit: optional.
	params := map[string]string{"pool": "shared", "sizeLimit": "optional"}

	req := createReq("shared-vol")
	req.Parameters = params
	req.AccessibilityRequirements = &csi.TopologyRequirement{
		Requisite: nodeTopology("node-b"),
		Preferred: nodeTopology("node-b"),
	}
	resp, err := a.ctrl.CreateVolume(t.Context(), req)
	require.NoError(t, err, "a shared pool ignores requisite topology of other nodes")
	id := resp.GetVolume().GetVolumeId()
	require.Empty(t, resp.GetVolume().GetAccessibleTopology(), "a shared volume is reachable from every node")
	require.DirExists(t, a.Pools[1].DirPath(id))
	require.Empty(t, recordFiles(t, a.Layout().RecordsDir()), "shared records live in the pool")

	t.Run("create_in_progress_on_other_node_is_aborted", func(t *testing.T) {
		// node-a crashed (or is still working) half-way through a create:
		// node-b must not roll back or take over node-a's volume.
		busy := createReq("shared-busy")
		busy.Parameters = params
		busyID := volumeid.FromName(busy.GetName())
		rec := fmt.Sprintf(`{"schema":1,"id":%q,"name":"shared-busy","kind":"dir","pool":"shared","capacityBytes":%d,"createdBy":"node-a","state":"creating"}`, busyID, mib)
		recPath := testutil.Layout{StateDir: b.StateDir, Pool: b.Pools[1]}.RecordPath(busyID)
		require.NoError(t, os.WriteFile(recPath, []byte(rec), 0o600))
		_, err := b.ctrl.CreateVolume(t.Context(), busy)
		requireCode(t, codes.Aborted, err)
		_, err = b.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: busyID})
		requireCode(t, codes.Aborted, err)
		require.FileExists(t, recPath)
		require.NoError(t, os.Remove(recPath))
	})
	t.Run("other_node_sees_it", func(t *testing.T) {
		again, err := b.ctrl.CreateVolume(t.Context(), req)
		require.NoError(t, err)
		require.Equal(t, id, again.GetVolume().GetVolumeId())
		list, err := b.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
		require.NoError(t, err)
		require.Len(t, list.GetEntries(), 1)
		require.Equal(t, id, list.GetEntries()[0].GetVolume().GetVolumeId())
		require.Empty(t, list.GetEntries()[0].GetVolume().GetAccessibleTopology())
	})
	t.Run("other_node_publishes_it", func(t *testing.T) {
		target := filepath.Join(b.Dir, "target")
		b.publish(t, id, target)
		mp, ok := b.mountAt(t, target)
		require.True(t, ok)
		require.Equal(t, b.Pools[1].DirPath(id), mp.Device)
		_, err := b.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
		require.NoError(t, err)
	})
	t.Run("capacity_for_any_node", func(t *testing.T) {
		capResp, err := a.ctrl.GetCapacity(t.Context(), &csi.GetCapacityRequest{
			Parameters:         params,
			AccessibleTopology: nodeTopology("node-b")[0],
		})
		require.NoError(t, err)
		require.Positive(t, capResp.GetAvailableCapacity())
	})
	t.Run("local_pool_still_pinned", func(t *testing.T) {
		r := createReq("local-vol")
		r.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: nodeTopology("node-b")}
		_, err := a.ctrl.CreateVolume(t.Context(), r)
		requireCode(t, codes.ResourceExhausted, err)
	})
	t.Run("delete", func(t *testing.T) {
		_, err := b.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
		require.NoError(t, err)
		require.NoDirExists(t, b.Pools[1].DirPath(id))
		list, err := a.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
		require.NoError(t, err)
		require.Empty(t, list.GetEntries())
	})
}

// listAll pages through ListVolumes with maxEntries, calling between(page)
// after each page, and returns the IDs in order and the page sizes.
func listAll(t *testing.T, h *harness, maxEntries int32, between func(page int)) (ids []string, pages []int) {
	t.Helper()
	token := ""
	for page := 0; ; page++ {
		require.Less(t, page, 100, "ListVolumes does not terminate")
		resp, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{MaxEntries: maxEntries, StartingToken: token})
		require.NoError(t, err)
		if maxEntries > 0 {
			require.LessOrEqual(t, len(resp.GetEntries()), int(maxEntries))
		}
		pages = append(pages, len(resp.GetEntries()))
		for _, e := range resp.GetEntries() {
			ids = append(ids, e.GetVolume().GetVolumeId())
		}
		token = resp.GetNextToken()
		if token == "" {
			return ids, pages
		}
		if between != nil {
			between(page)
		}
	}
}

func TestListVolumesPagination(t *testing.T) {
	h := start(t, testutil.Options{})
	var all []string
	for i := range 25 {
		all = append(all, h.create(t, createReq(fmt.Sprintf("vol-%02d", i))))
	}
	slices.Sort(all)

	cases := []struct {
		name       string
		maxEntries int32
		wantPages  []int
	}{
		{name: "pages_of_7", maxEntries: 7, wantPages: []int{7, 7, 7, 4}},
		{name: "pages_of_5_exact_multiple", maxEntries: 5, wantPages: []int{5, 5, 5, 5, 5}},
		{name: "one_page_exactly", maxEntries: 25, wantPages: []int{25}},
		{name: "more_than_all", maxEntries: 1000, wantPages: []int{25}},
		{name: "no_limit", maxEntries: 0, wantPages: []int{25}},
		{name: "pages_of_1", maxEntries: 1, wantPages: slices.Repeat([]int{1}, 25)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ids, pages := listAll(t, h, tc.maxEntries, nil)
			require.Equal(t, all, ids, "every volume exactly once, in order")
			require.Equal(t, tc.wantPages, pages)
		})
	}

	t.Run("entries_describe_volumes", func(t *testing.T) {
		resp, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{MaxEntries: 1})
		require.NoError(t, err)
		v := resp.GetEntries()[0].GetVolume()
		require.Equal(t, mib, v.GetCapacityBytes())
		require.Equal(t, nodeTopology(testNode)[0].GetSegments(), v.GetAccessibleTopology()[0].GetSegments())
	})

	t.Run("deleted_between_pages", func(t *testing.T) {
		deleteVol := func(id string) {
			_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
			require.NoError(t, err)
		}
		// After the first page: delete the volume the token names (the
		// page's last) and one a later page would have returned.
		tokenVol, laterVol := all[6], all[15]
		ids, _ := listAll(t, h, 7, func(page int) {
			if page == 0 {
				deleteVol(tokenVol)
				deleteVol(laterVol)
			}
		})
		want := slices.DeleteFunc(slices.Clone(all), func(id string) bool { return id == laterVol })
		require.Equal(t, want, ids)
	})
}

func TestListVolumesInvalid(t *testing.T) {
	h := start(t, testutil.Options{})
	h.create(t, createReq("vol"))
	cases := []struct {
		name string
		req  *csi.ListVolumesRequest
		code codes.Code
	}{
		{name: "garbage_token", req: &csi.ListVolumesRequest{StartingToken: "garbage"}, code: codes.Aborted},
		{name: "traversal_token", req: &csi.ListVolumesRequest{StartingToken: "../.."}, code: codes.Aborted},
		{name: "nul_token", req: &csi.ListVolumesRequest{StartingToken: "hv-\x00"}, code: codes.Aborted},
		{name: "negative_max_entries", req: &csi.ListVolumesRequest{MaxEntries: -1}, code: codes.InvalidArgument},
		{name: "token_of_unknown_volume", req: &csi.ListVolumesRequest{StartingToken: volumeid.FromName("gone")}, code: codes.OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.ctrl.ListVolumes(t.Context(), tc.req)
			requireCode(t, tc.code, err)
		})
	}
}

func TestGetCapacity(t *testing.T) {
	h := twoPools(t)
	cases := []struct {
		name     string
		req      *csi.GetCapacityRequest
		code     codes.Code
		wantZero bool
	}{
		{name: "default_pool", req: &csi.GetCapacityRequest{}},
		{name: "explicit_pool", req: &csi.GetCapacityRequest{Parameters: map[string]string{"type": "dir", "pool": "second"}}},
		{name: "with_capabilities", req: &csi.GetCapacityRequest{VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw)}}},
		{name: "this_node", req: &csi.GetCapacityRequest{AccessibleTopology: nodeTopology(testNode)[0]}},
		{name: "foreign_topology_key", req: &csi.GetCapacityRequest{AccessibleTopology: &csi.Topology{Segments: map[string]string{"zone": "a"}}}},
		{name: "unknown_pool", req: &csi.GetCapacityRequest{Parameters: map[string]string{"pool": "nope"}}, wantZero: true},
		{name: "another_node", req: &csi.GetCapacityRequest{AccessibleTopology: nodeTopology("other-node")[0]}, wantZero: true},
		{name: "block_capability", req: &csi.GetCapacityRequest{VolumeCapabilities: []*csi.VolumeCapability{blockCap(snw)}}},
		{name: "unknown_parameter", req: &csi.GetCapacityRequest{Parameters: map[string]string{"foo": "bar"}}, code: codes.InvalidArgument},
		{name: "bad_type", req: &csi.GetCapacityRequest{Parameters: map[string]string{"type": "nfs"}}, code: codes.InvalidArgument},
		{name: "malformed_pool_name", req: &csi.GetCapacityRequest{Parameters: map[string]string{"pool": "../x"}}, code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := h.ctrl.GetCapacity(t.Context(), tc.req)
			requireCode(t, tc.code, err)
			if tc.code != codes.OK {
				return
			}
			if tc.wantZero {
				require.Zero(t, resp.GetAvailableCapacity())
				return
			}
			require.Positive(t, resp.GetAvailableCapacity())
			require.Equal(t, resp.GetAvailableCapacity(), resp.GetMaximumVolumeSize().GetValue())
		})
	}
}

func TestValidateVolumeCapabilities(t *testing.T) {
	h, rw, ro := rwAndRO(t)

	cases := []struct {
		name      string
		id        string
		caps      []*csi.VolumeCapability
		params    map[string]string
		code      codes.Code
		confirmed bool
	}{
		{name: "writer", id: rw, caps: []*csi.VolumeCapability{mountCap(snw)}, confirmed: true},
		{name: "several_modes", id: rw, caps: []*csi.VolumeCapability{mountCap(snsw), mountCap(mnro, "noexec")}, confirmed: true},
		{name: "reader_on_reader_only", id: ro, caps: []*csi.VolumeCapability{mountCap(snro)}, confirmed: true},
		{name: "writer_on_reader_only", id: ro, caps: []*csi.VolumeCapability{mountCap(snw)}},
		{name: "block", id: rw, caps: []*csi.VolumeCapability{blockCap(snw)}},
		{name: "bad_mount_flag", id: rw, caps: []*csi.VolumeCapability{mountCap(snw, "suid")}},
		{name: "unknown_parameter", id: rw, caps: []*csi.VolumeCapability{mountCap(snw)}, params: map[string]string{"foo": "bar"}},
		{name: "no_capabilities", id: rw, code: codes.InvalidArgument},
		{name: "unknown_volume", id: volumeid.FromName("nope"), caps: []*csi.VolumeCapability{mountCap(snw)}, code: codes.NotFound},
		{name: "no_volume_id", caps: []*csi.VolumeCapability{mountCap(snw)}, code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := h.ctrl.ValidateVolumeCapabilities(t.Context(), &csi.ValidateVolumeCapabilitiesRequest{
				VolumeId: tc.id, VolumeCapabilities: tc.caps, Parameters: tc.params,
			})
			requireCode(t, tc.code, err)
			if tc.code != codes.OK {
				return
			}
			if tc.confirmed {
				require.NotNil(t, resp.GetConfirmed())
				require.Len(t, resp.GetConfirmed().GetVolumeCapabilities(), len(tc.caps))
			} else {
				require.Nil(t, resp.GetConfirmed())
				require.NotEmpty(t, resp.GetMessage())
			}
		})
	}
}

func TestDeleteVolume(t *testing.T) {
	h := start(t, testutil.Options{})
	id := h.create(t, createReq("vol"))
	require.NoError(t, os.WriteFile(filepath.Join(h.dataDir(id), "file"), []byte("data"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(h.dataDir(id), "a", "b"), 0o755))

	_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	require.NoDirExists(t, h.dataDir(id))
	requireNoVolumes(t, h)

	cases := []struct {
		name string
		id   string
		code codes.Code
	}{
		{name: "again", id: id, code: codes.OK},
		{name: "never_existed", id: volumeid.FromName("never"), code: codes.OK},
		{name: "no_volume_id", id: "", code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: tc.id})
			requireCode(t, tc.code, err)
		})
	}

	// The name can be used again afterwards.
	require.Equal(t, id, h.create(t, createReq("vol")))
}

// TestCreateVolumeKeepsDataWithoutRecord: data in the pool that has no
// record (an admin's restore, a lost state directory) is never reused or
// removed by CreateVolume: only DeleteVolume removes data.
func TestCreateVolumeKeepsDataWithoutRecord(t *testing.T) {
	h := start(t, testutil.Options{})
	id := volumeid.FromName("vol")
	require.NoError(t, os.Mkdir(h.dataDir(id), 0o777))
	precious := filepath.Join(h.dataDir(id), "precious")
	require.NoError(t, os.WriteFile(precious, []byte("data"), 0o644))

	_, err := h.ctrl.CreateVolume(t.Context(), createReq("vol"))
	requireCode(t, codes.AlreadyExists, err)
	b, err := os.ReadFile(precious)
	require.NoError(t, err)
	require.Equal(t, "data", string(b))
	require.Empty(t, recordFiles(t, h.Layout().RecordsDir()))
}

// A full pool while mkfs formats a new loop volume is RESOURCE_EXHAUSTED
// (the provisioner may try another node), and nothing is left behind.
func TestCreateVolumeFormatNoSpace(t *testing.T) {
	fs := &fsutil.Fake{Err: fmt.Errorf("mkfs.ext4 ...: %w: exit status 1: mkfs.ext4: No space left on device while writing out and closing file system", fsutil.ErrNoSpace)}
	h := start(t, testutil.Options{FS: fs})
	req := createReq("full")
	req.Parameters = map[string]string{"type": "loop"}
	req.CapacityRange = &csi.CapacityRange{RequiredBytes: 20 * mib}
	_, err := h.ctrl.CreateVolume(t.Context(), req)
	requireCode(t, codes.ResourceExhausted, err)
	requireNoVolumes(t, h)
}

// After a restart with another --node-id on the same state directory, the
// node-local volumes whose records name the old node are not this node's:
// DeleteVolume is FAILED_PRECONDITION naming both nodes (deleting would
// remove data the other node owns; OK would make the provisioner believe
// it gone), expansion NOT_FOUND, as stage and publish already answer.
// Shared-pool volumes (no node in the record) are unaffected.
func TestVolumesOfTheOldNodeID(t *testing.T) {
	base := t.TempDir()
	poolDir, sharedDir := filepath.Join(base, "pool"), filepath.Join(base, "shared")
	require.NoError(t, os.Mkdir(poolDir, 0o755))
	require.NoError(t, os.Mkdir(sharedDir, 0o755))
	opts := func(node string) testutil.Options {
		return testutil.Options{
			NodeID:   node,
			StateDir: filepath.Join(base, "state"),
			PoolSpecs: []pool.Spec{
				{Name: pool.DefaultName, Path: poolDir},
				{Name: "shared", Path: sharedDir, Shared: true},
			},
		}
	}
	a := start(t, opts("node-a"))
	dirID := a.create(t, createReq("dir"))
	loopReq := createReq("loop")
	loopReq.Parameters = map[string]string{"type": "loop"}
	loopReq.CapacityRange = &csi.CapacityRange{RequiredBytes: 20 * mib}
	loopID := a.create(t, loopReq)
	sharedReq := createReq("shared")
	sharedReq.Parameters = map[string]string{"pool": "shared", "sizeLimit": "optional"}
	sharedID := a.create(t, sharedReq)
	a.Driver.Stop()

	b := start(t, opts("node-b"))
	target := filepath.Join(base, "target")
	for _, tc := range []struct {
		name string
		id   string
		data string
	}{
		{name: "dir", id: dirID, data: b.dataDir(dirID)},
		{name: "loop", id: loopID, data: b.Pools[0].ImagePath(loopID)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: tc.id})
			requireCode(t, codes.FailedPrecondition, err)
			require.ErrorContains(t, err, `"node-a"`)
			require.ErrorContains(t, err, `"node-b"`)
			require.ErrorContains(t, err, tc.id)
			require.FileExists(t, b.Layout().RecordPath(tc.id))

			_, err = b.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{VolumeId: tc.id, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
			requireCode(t, codes.NotFound, err)
			_, err = b.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{VolumeId: tc.id, VolumePath: target, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * mib}})
			requireCode(t, codes.NotFound, err)

			resp, err := b.ctrl.ControllerGetVolume(t.Context(), &csi.ControllerGetVolumeRequest{VolumeId: tc.id})
			require.NoError(t, err)
			require.Less(t, resp.GetVolume().GetCapacityBytes(), 64*mib, "the record is unchanged")
			fi, err := os.Stat(tc.data)
			require.NoError(t, err, "the data stays")
			if !fi.IsDir() {
				require.Less(t, fi.Size(), 64*mib, "the image did not grow")
			}
		})
	}
	t.Run("shared_pool_volume", func(t *testing.T) {
		_, err := b.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{VolumeId: sharedID, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 * mib}})
		require.NoError(t, err)
		_, err = b.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: sharedID})
		require.NoError(t, err)
		require.NoDirExists(t, b.Pools[1].DirPath(sharedID))
	})

	// Under its own name again, the node deletes them.
	b.Driver.Stop()
	a = start(t, opts("node-a"))
	for _, id := range []string{dirID, loopID} {
		_, err := a.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
		require.NoError(t, err)
	}
	requireNoVolumes(t, a)
}

// Records that cannot be read no longer vanish: after the restart that
// finds them, ListVolumes lists them in ID order with the others (no
// capacity, a volume_context entry saying why), pages included, and the
// controller health RPCs report them as INACCESSIBLE RecordUnreadable.
// They are never deleted.
func TestUnreadableRecordsReported(t *testing.T) {
	base := t.TempDir()
	poolDir := filepath.Join(base, "pool")
	require.NoError(t, os.Mkdir(poolDir, 0o755))
	opts := testutil.Options{StateDir: filepath.Join(base, "state"), PoolSpecs: []pool.Spec{{Name: pool.DefaultName, Path: poolDir}}}
	h := start(t, opts)
	var good []string
	for i := range 5 {
		good = append(good, h.create(t, createReq(fmt.Sprintf("good-%d", i))))
	}
	bad := map[string]string{
		volumeid.FromName("truncated"): `{"schema":1,"id":`,
		volumeid.FromName("binary"):    "\x00\xff\xfe",
	}
	for id, content := range bad {
		require.NoError(t, os.WriteFile(h.Layout().RecordPath(id), []byte(content), 0o600))
	}
	h.Driver.Stop()
	h = start(t, opts)

	all := append([]string{}, good...)
	for id := range bad {
		all = append(all, id)
	}
	slices.Sort(all)
	for _, max := range []int32{0, 1, 2, 4} {
		ids, _ := listAll(t, h, max, nil)
		require.Equal(t, all, ids, "max_entries %d", max)
	}
	resp, err := h.ctrl.ListVolumes(t.Context(), &csi.ListVolumesRequest{})
	require.NoError(t, err)
	for _, e := range resp.GetEntries() {
		v := e.GetVolume()
		if _, isBad := bad[v.GetVolumeId()]; !isBad {
			require.NotContains(t, v.GetVolumeContext(), params.KeyRecordUnreadable)
			continue
		}
		require.Zero(t, v.GetCapacityBytes())
		require.Contains(t, v.GetVolumeContext()[params.KeyRecordUnreadable], "cannot be read")
		require.Contains(t, v.GetVolumeContext()[params.KeyRecordUnreadable], testutil.RecordFile(v.GetVolumeId()))
		require.Equal(t, nodeTopology(testNode)[0].GetSegments(), v.GetAccessibleTopology()[0].GetSegments())
	}

	for id := range bad {
		resp, err := h.ctrl.ControllerGetVolumeHealth(t.Context(), &csi.ControllerGetVolumeHealthRequest{VolumeId: id})
		require.NoError(t, err)
		requireHealth(t, resp.GetVolumeHealth(), id, "INACCESSIBLE/"+volume.ReasonRecordUnreadable)
	}
	list, err := h.ctrl.ControllerListVolumeHealth(t.Context(), &csi.ControllerListVolumeHealthRequest{})
	require.NoError(t, err)
	var listed []string
	for _, e := range list.GetEntries() {
		requireHealth(t, e, e.GetVolumeId(), "INACCESSIBLE/"+volume.ReasonRecordUnreadable)
		listed = append(listed, e.GetVolumeId())
	}
	require.ElementsMatch(t, slices.Collect(maps.Keys(bad)), listed)

	for id := range bad {
		_, err := h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
		requireCode(t, codes.DataLoss, err)
		require.FileExists(t, h.Layout().RecordPath(id), "never deleted")
	}
}

// Kubernetes must not call ControllerExpandVolume: the external-resizer runs
// wherever its leader is, not on the volume's node. With node EXPAND_VOLUME
// alone it takes its "node expansion only" path and the kubelet of the
// volume's node calls NodeExpandVolume.
func TestExpansionIsNodeOnly(t *testing.T) {
	h := start(t, testutil.Options{})
	ctrl, err := h.ctrl.ControllerGetCapabilities(t.Context(), &csi.ControllerGetCapabilitiesRequest{})
	require.NoError(t, err)
	for _, c := range ctrl.GetCapabilities() {
		require.NotEqual(t, csi.ControllerServiceCapability_RPC_EXPAND_VOLUME, c.GetRpc().GetType())
	}
	node, err := h.node.NodeGetCapabilities(t.Context(), &csi.NodeGetCapabilitiesRequest{})
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(node.GetCapabilities(), func(c *csi.NodeServiceCapability) bool {
		return c.GetRpc().GetType() == csi.NodeServiceCapability_RPC_EXPAND_VOLUME
	}))
	ident, err := h.ident.GetPluginCapabilities(t.Context(), &csi.GetPluginCapabilitiesRequest{})
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(ident.GetCapabilities(), func(c *csi.PluginCapability) bool {
		return c.GetVolumeExpansion().GetType() == csi.PluginCapability_VolumeExpansion_ONLINE
	}), "the kubelet grows volumes in use only with ONLINE expansion")
}

// A size no image can have (rounding it to whole 4 KiB blocks overflows)
// is OUT_OF_RANGE, through either RPC that grows a volume; it once was
// INTERNAL "refusing to shrink it to -9223372036854771712".
func TestExpandVolumeNearMaxInt64(t *testing.T) {
	h := start(t, testutil.Options{})
	req := createReq("huge")
	req.Parameters = map[string]string{"type": "loop"}
	req.CapacityRange = &csi.CapacityRange{RequiredBytes: 20 * mib}
	id := h.create(t, req)
	staging, target := filepath.Join(h.Dir, "staging"), filepath.Join(h.Dir, "target")
	_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw)})
	require.NoError(t, err)
	pub := publishReq(id, target, mountCap(snw), false)
	pub.StagingTargetPath = staging
	_, err = h.node.NodePublishVolume(t.Context(), pub)
	require.NoError(t, err)

	cases := []struct {
		name   string
		expand func(required int64) error
	}{
		{name: "controller_expand_volume", expand: func(required int64) error {
			_, err := h.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{
				VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: required},
			})
			return err
		}},
		{name: "node_expand_volume", expand: func(required int64) error {
			_, err := h.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{
				VolumeId: id, VolumePath: target, CapacityRange: &csi.CapacityRange{RequiredBytes: required},
			})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, required := range []int64{math.MaxInt64, math.MaxInt64 - 100} {
				err := tc.expand(required)
				requireCode(t, codes.OutOfRange, err)
				require.Contains(t, status.Convert(err).Message(), id)
			}
		})
	}
	resp, err := h.ctrl.ControllerGetVolume(t.Context(), &csi.ControllerGetVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	require.Equal(t, 20*mib, resp.GetVolume().GetCapacityBytes())
}

// TestSizeLimitParameter: a pool that cannot enforce a size limit follows
// the class's sizeLimit, as any user (quota.Fake).
func TestSizeLimitParameter(t *testing.T) {
	unlimited := quota.NewFake()
	unlimited.Method = quota.None
	h := start(t, testutil.Options{Quota: unlimited})
	withParams := func(name string, p map[string]string) *csi.CreateVolumeRequest {
		r := createReq(name)
		r.Parameters = p
		return r
	}
	cases := []struct {
		name   string
		params map[string]string
		block  bool
		code   codes.Code
	}{
		{name: "default_is_required", code: codes.FailedPrecondition},
		{name: "required", params: map[string]string{"sizeLimit": "required"}, code: codes.FailedPrecondition},
		{name: "optional", params: map[string]string{"sizeLimit": "optional"}},
		{name: "inode_limit_required", params: map[string]string{"inodeLimit": "1000"}, code: codes.FailedPrecondition},
		{name: "inode_limit_optional", params: map[string]string{"inodeLimit": "1000", "sizeLimit": "optional"}},
		{name: "loop_volumes_are_sized_by_their_image", params: map[string]string{"type": "loop"}},
		{name: "block_volumes_are_sized_by_their_image", block: true},
		{name: "bad_value", params: map[string]string{"sizeLimit": "maybe"}, code: codes.InvalidArgument},
		{name: "bad_inode_limit", params: map[string]string{"inodeLimit": "lots"}, code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := withParams(tc.name, tc.params)
			var capability *csi.VolumeCapability
			if tc.block {
				capability = blockCap(snw)
				r.VolumeCapabilities = []*csi.VolumeCapability{capability}
			}
			resp, err := h.ctrl.CreateVolume(t.Context(), r)
			requireCode(t, tc.code, err)
			if tc.code == codes.FailedPrecondition {
				require.ErrorContains(t, err, `pool "default"`)
				require.ErrorContains(t, err, "sizeLimit: optional")
				require.Nil(t, resp)
			}
			if tc.code == codes.InvalidArgument {
				return
			}
			// GetCapacity agrees with CreateVolume: a class whose volumes
			// would be refused here has no capacity here.
			capReq := &csi.GetCapacityRequest{Parameters: tc.params}
			if capability != nil {
				capReq.VolumeCapabilities = []*csi.VolumeCapability{capability}
			}
			c, err := h.ctrl.GetCapacity(t.Context(), capReq)
			require.NoError(t, err)
			if tc.code == codes.FailedPrecondition {
				require.Zero(t, c.GetAvailableCapacity())
			} else {
				require.Positive(t, c.GetAvailableCapacity())
			}
		})
	}
}

// TestSizeLimitEnforced: on a pool that enforces (quota.Fake), the default
// class creates limited directory volumes and expansion raises the limit.
func TestSizeLimitEnforced(t *testing.T) {
	f := quota.NewFake()
	h := start(t, testutil.Options{Quota: f})
	id := h.create(t, createReq("vol"))
	v := h.Record(t, id)
	require.NotNil(t, v.Quota)
	l, ok := f.Limits(v.Quota.ProjectID)
	require.True(t, ok)
	require.Equal(t, mib, l.Bytes)
	c, err := h.ctrl.GetCapacity(t.Context(), &csi.GetCapacityRequest{})
	require.NoError(t, err)
	require.Positive(t, c.GetAvailableCapacity())

	resp, err := h.ctrl.ControllerExpandVolume(t.Context(), &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 3 * mib}})
	require.NoError(t, err)
	require.False(t, resp.GetNodeExpansionRequired())
	l, _ = f.Limits(v.Quota.ProjectID)
	require.Equal(t, 3*mib, l.Bytes)

	_, err = h.ctrl.DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
	require.NoError(t, err)
	require.Empty(t, f.Limited())
	require.False(t, f.Held(v.Quota.ProjectID))
}

func snapshotSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id},
	}}
}
