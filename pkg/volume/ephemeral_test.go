package volume_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// An inline volume on the fake layer: one publish creates, stages and
// publishes it; a retry changes nothing; a second target keeps it alive
// through the first unpublish; the last unpublish deletes it.
func TestEphemeralLifecycle(t *testing.T) {
	e, m := loadedLoopEnv(t)
	handle := "csi-" + strings.Repeat("ab", 32)
	req := volume.EphemeralRequest{
		Create:  volume.CreateRequest{Name: volume.EphemeralName(handle), Kind: volume.KindLoop, FsType: fsutil.Ext4, Pool: pool.DefaultName, RequiredBytes: 20 * mib, PVCName: "pod", PVCNamespace: "ns"},
		Publish: volume.PublishRequest{TargetPath: filepath.Join(e.dir, "t1"), Writer: true},
	}
	_, ok := m.Node.EphemeralID(handle)
	require.False(t, ok)
	require.NoError(t, m.Node.PublishEphemeral(req))
	require.NoError(t, m.Node.PublishEphemeral(req), "a retry")
	require.Equal(t, 1, e.loop.Attaches())
	id, ok := m.Node.EphemeralID(handle)
	require.True(t, ok)
	v, err := m.Controller.Get(id)
	require.NoError(t, err)
	require.True(t, v.Ephemeral)
	require.Equal(t, "pod", v.PVCName)

	// A CreateVolume of the same name is not the inline volume.
	_, err = m.Controller.Create(volume.CreateRequest{Name: volume.EphemeralName(handle), Kind: volume.KindLoop, FsType: fsutil.Ext4, Pool: pool.DefaultName, RequiredBytes: 20 * mib})
	require.ErrorIs(t, err, volume.ErrAlreadyExists)

	second := req
	second.Publish.TargetPath = filepath.Join(e.dir, "t2")
	require.NoError(t, m.Node.PublishEphemeral(second))
	handled, err := m.Node.UnpublishInline(handle, req.Publish.TargetPath)
	require.NoError(t, err)
	require.True(t, handled)
	_, ok = m.Node.EphemeralID(handle)
	require.True(t, ok, "still published at t2")
	_, err = m.Node.UnpublishInline(handle, second.Publish.TargetPath)
	require.NoError(t, err)
	_, ok = m.Node.EphemeralID(handle)
	require.False(t, ok, "deleted with its last target")
	require.Empty(t, e.loop.Attached())
	require.NoFileExists(t, e.pool.ImagePath(id))
	mps, err := e.mounter.List()
	require.NoError(t, err)
	require.Empty(t, mps)

	block := req
	block.Create.Kind = volume.KindBlock
	require.ErrorIs(t, m.Node.PublishEphemeral(block), volume.ErrInvalid)
}
