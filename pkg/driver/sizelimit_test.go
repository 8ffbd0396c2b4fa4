package driver_test

import (
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

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
	v, err := h.Manager.Controller.Get(id)
	require.NoError(t, err)
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
