package driver_test

// Issue 9, point 8: the smaller hardening cases, each through the gRPC API
// with the fakes (full pool during mkfs, vanished data, another node's
// volumes, unreadable records, a read-only state directory, long request
// strings).

import (
	"fmt"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

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
