// Package block runs csi-sanity against hostvol's raw block volumes: sparse
// images attached to real loop devices at stage and bind-mounted onto a
// file at the target. Needs root.
package block

import (
	"testing"

	hvsanity "github.com/seed3e7d50b2/hostvol/test/sanity"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestSanityBlock skips no spec beyond those csi-sanity skips for
// capabilities hostvol does not advertise (see hvsanity.Config); the
// expansion specs run, the node side growing the loop device.
func TestSanityBlock(t *testing.T) {
	hvsanity.RunReal(t, testutil.BlockKind)
}
