// Package loopxfs runs csi-sanity against hostvol's loop volumes with XFS,
// which mkfs.xfs makes no smaller than 300 MiB. Needs root.
package loopxfs

import (
	"testing"

	hvsanity "github.com/seed3e7d50b2/hostvol/test/sanity"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestSanityLoopXFS skips no spec beyond those csi-sanity skips for
// capabilities hostvol does not advertise (see hvsanity.Config); the
// expansion specs run, the stage growing the filesystem with xfs_growfs.
func TestSanityLoopXFS(t *testing.T) {
	hvsanity.RunReal(t, testutil.XFSKind)
}
