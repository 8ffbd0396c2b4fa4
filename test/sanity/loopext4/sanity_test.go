// Package loopext4 runs csi-sanity against hostvol's loop volumes with ext4:
// a sparse image formatted at CreateVolume, attached to a real loop device
// and mounted at stage. Needs root.
package loopext4

import (
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/seed3e7d50b2/hostvol/test/loopvol"
	hvsanity "github.com/seed3e7d50b2/hostvol/test/sanity"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestSanityLoopExt4 skips no spec beyond those csi-sanity skips for
// capabilities hostvol does not advertise (see hvsanity.Config).
//
// The expansion specs run and pass without CAP_SYS_RESOURCE: "should work
// if node-expand is called after node-publish" calls ControllerExpandVolume
// before NodeStageVolume, so the stage grows the unmounted ext4 offline
// (e2fsck, resize2fs) and the NodeExpandVolume that follows finds nothing
// left to do. Growing a mounted ext4 online, which needs CAP_SYS_RESOURCE,
// is covered by test/loopvol's TestExpand, which expects FAILED_PRECONDITION
// when the capability is missing.
func TestSanityLoopExt4(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	loopvol.CleanupUnder(t, dir)
	node := loopvol.NewNode(t, dir, "")
	cfg := hvsanity.ConfigFor(t, node.Env.Endpoint, hvsanity.Volumes{
		Parameters: map[string]string{"type": "loop"},
	})
	sanity.Test(t, cfg)
}
