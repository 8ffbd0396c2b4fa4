// Package btrfs runs csi-sanity against hostvol's directory volumes on a
// btrfs pool with quotas enabled: every volume is a subvolume with a
// qgroup limit, created, expanded and deleted through the real ioctls, and
// published with real bind mounts. Needs root and btrfs-progs.
package btrfs

import (
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	hvsanity "github.com/seed3e7d50b2/hostvol/test/sanity"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestSanityBtrfs uses the default class parameters (sizeLimit required),
// so every directory volume csi-sanity creates is limited, and checks at
// the end that no qgroup outlives its volume.
func TestSanityBtrfs(t *testing.T) {
	poolPath := testutil.BtrfsPool(t, 1<<30)
	env := hvsanity.StartReal(t, poolPath)
	info := env.Enforcement(t, pool.DefaultName)
	require.Equal(t, quota.BtrfsQgroup, info.Method, "btrfs pool enforcement: %s", info.Reason)

	cfg := hvsanity.ConfigFor(t, env.Endpoint, hvsanity.Volumes{Size: 64 << 20})
	// The expansion specs grow to this (csi-sanity's default adds 1 GiB,
	// more than the 1 GiB pool can promise).
	cfg.TestVolumeExpandSize = 128 << 20
	sanity.Test(t, cfg)

	qgroups, err := quota.BtrfsQgroups(poolPath)
	require.NoError(t, err)
	require.Equal(t, []uint64{5}, qgroups, "qgroups left after csi-sanity deleted its volumes")
}
