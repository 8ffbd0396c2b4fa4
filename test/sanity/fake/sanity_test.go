// Package fake runs csi-sanity against hostvol with mount-utils'
// FakeMounter: the whole CSI contract, as any user, no root needed.
package fake

import (
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	hvsanity "github.com/seed3e7d50b2/hostvol/test/sanity"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

func TestSanityFakeMounts(t *testing.T) {
	env := testutil.StartDriver(t, testutil.Options{})
	sanity.Test(t, hvsanity.Config(t, env.Endpoint))
}
