// Package real runs csi-sanity against hostvol with the real mounter: every
// publish is a real bind mount. Needs root.
package real

import (
	"testing"

	hvsanity "github.com/seed3e7d50b2/hostvol/test/sanity"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestSanityRealMounts runs on a pool in a plain temporary directory,
// whose filesystem limits nothing here (test/sanity/btrfs runs on a pool
// that does): the class accepts directory volumes without a hard limit.
func TestSanityRealMounts(t *testing.T) {
	hvsanity.RunReal(t, testutil.DirKind)
}
