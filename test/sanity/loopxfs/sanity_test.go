// Package loopxfs runs csi-sanity against hostvol's loop volumes with XFS,
// which mkfs.xfs makes no smaller than 300 MiB. Needs root.
package loopxfs

import (
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	hvsanity "github.com/seed3e7d50b2/hostvol/test/sanity"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestSanityLoopXFS skips no spec beyond those csi-sanity skips for
// capabilities hostvol does not advertise (see hvsanity.Config); the
// expansion specs run, the stage growing the filesystem with xfs_growfs.
func TestSanityLoopXFS(t *testing.T) {
	env := hvsanity.StartReal(t, "")
	sanity.Test(t, hvsanity.ConfigFor(t, env.Endpoint, hvsanity.VolumesOf(testutil.XFSKind)))
}
