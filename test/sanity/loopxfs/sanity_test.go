// Package loopxfs runs csi-sanity against hostvol's loop volumes with XFS,
// which mkfs.xfs makes no smaller than 300 MiB, on a pool that is itself
// an XFS filesystem with reflink: snapshots, restores and clones are
// FICLONEs of the images. Needs root.
package loopxfs

import (
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	hvsanity "github.com/seed3e7d50b2/hostvol/test/sanity"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestSanityLoopXFS skips no spec beyond those csi-sanity skips for
// capabilities hostvol does not advertise (see hvsanity.Config); the
// expansion specs run, the stage growing the filesystem with xfs_growfs,
// and the snapshot specs run by reflink.
func TestSanityLoopXFS(t *testing.T) {
	// Sparse: it holds what the volumes write, while each 300 MiB image
	// is promised whole.
	pfs := testutil.NewPoolFS(t, t.TempDir(), testutil.PoolFSOptions{Type: "xfs", Size: 16 << 30, Mkfs: []string{"-m", "reflink=1"}})
	p, err := pool.Open(pool.Spec{Name: "probe", Path: pfs.Path})
	require.NoError(t, err)
	cs, err := p.DetectCopy()
	require.NoError(t, p.Close())
	require.NoError(t, err)
	require.True(t, cs.Reflink, "the XFS pool must reflink: %s", cs.NoReflink)
	env := hvsanity.StartReal(t, pfs.Path)
	sanity.Test(t, hvsanity.ConfigFor(t, env.Endpoint, hvsanity.VolumesOf(testutil.XFSKind)))
}
