package loopvol

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// CSI inline volumes, the way the kubelet drives them: NodePublishVolume
// with a handle of its own ("csi-<sha256>"), the pod's volumeAttributes plus
// the pod information and csi.storage.k8s.io/ephemeral=true, no staging;
// NodeUnpublishVolume with the same handle when the pod goes.

// inline is one inline volume of a test pod.
type inline struct {
	T      *testing.T
	n      *testutil.Node
	handle string
	attrs  map[string]string
	Target string
	fsType string // as the pod's csi.fsType gives it ("" if unset)
}

func newInline(t *testing.T, n *testutil.Node, dir, name string, attrs map[string]string) *inline {
	ctx := map[string]string{
		"csi.storage.k8s.io/pod.name":            "pod-" + name,
		"csi.storage.k8s.io/pod.namespace":       "default",
		"csi.storage.k8s.io/pod.uid":             "0b6c5d3e-" + name,
		"csi.storage.k8s.io/serviceAccount.name": "default",
		"csi.storage.k8s.io/ephemeral":           "true",
	}
	for k, v := range attrs {
		ctx[k] = v
	}
	return &inline{
		T: t, n: n, attrs: ctx,
		handle: fmt.Sprintf("csi-%x", sha256.Sum256([]byte(t.Name()+name))),
		Target: filepath.Join(dir, "pods", name, "volumes", "kubernetes.io~csi", "scratch", "mount"),
	}
}

func (v *inline) Capability() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: v.fsType}},
	}
}

func (v *inline) publishErr() error {
	// The kubelet makes the target's parent; the driver makes the target.
	require.NoError(v.T, os.MkdirAll(filepath.Dir(v.Target), 0o750))
	_, err := v.n.Client.NodePublishVolume(testutil.Ctx(v.T), &csi.NodePublishVolumeRequest{
		VolumeId:         v.handle,
		TargetPath:       v.Target,
		VolumeCapability: v.Capability(),
		VolumeContext:    v.attrs,
	})
	return err
}

func (v *inline) Publish() {
	v.T.Helper()
	require.NoError(v.T, v.publishErr(), "NodePublishVolume of inline volume %s", v.handle)
}

func (v *inline) unpublishErr() error {
	_, err := v.n.Client.NodeUnpublishVolume(testutil.Ctx(v.T), &csi.NodeUnpublishVolumeRequest{VolumeId: v.handle, TargetPath: v.Target})
	return err
}

func (v *inline) Unpublish() {
	v.T.Helper()
	require.NoError(v.T, v.unpublishErr(), "NodeUnpublishVolume of inline volume %s", v.handle)
}

// requirePoolEmpty checks that the pool holds no volume data and the state
// directory no inline staging mount, record or loop device of any volume.
func requirePoolEmpty(t *testing.T, n *testutil.Node) {
	t.Helper()
	l := n.Layout()
	for _, d := range []string{l.DataRoot(), l.ImagesDir()} {
		entries, err := os.ReadDir(d)
		if !os.IsNotExist(err) {
			require.NoError(t, err)
		}
		require.Empty(t, entries, "pool directory %s", d)
	}
	for _, d := range []string{l.InlineDir(), l.RecordsDir(), l.NodeStatesDir()} {
		entries, err := os.ReadDir(d)
		if !os.IsNotExist(err) {
			require.NoError(t, err)
		}
		var names []string
		for _, e := range entries {
			if e.Name()[0] != '.' {
				names = append(names, e.Name())
			}
		}
		require.Empty(t, names, "state directory %s", d)
	}
	loops, err := testutil.LoopsUnder(n.PoolPath)
	require.NoError(t, err)
	require.Empty(t, loops, "loop devices on pool images")
	require.Empty(t, testutil.MountsUnder(t, n.StateDir), "mounts under the state directory")
}

func requireMounted(t *testing.T, path string, want bool) {
	t.Helper()
	mounted := false
	for _, m := range testutil.MountsUnder(t, filepath.Dir(path)) {
		if m == path {
			mounted = true
		}
	}
	require.Equal(t, want, mounted, "mount at %s", path)
}

// TestInlineVolumes publishes an inline volume of each type, checks what
// the pod would see (a writable filesystem of the asked size that refuses
// writes past it), that a kubelet retry changes nothing, that stats work by
// handle, and that the unpublish deletes everything.
func TestInlineVolumes(t *testing.T) {
	cases := []struct {
		name   string
		attrs  map[string]string
		fsType string
		size   int64 // asked of a loop volume, 0: a directory volume
		btrfs  bool  // on a btrfs pool with quotas (directories need a limit)
	}{
		{name: "dir", attrs: map[string]string{"size": "64Mi"}, btrfs: true},
		{name: "ext4", attrs: map[string]string{"type": "loop", "size": "64Mi"}, size: 64 * mib},
		{name: "xfs", attrs: map[string]string{"type": "loop", "size": "300Mi"}, fsType: "xfs", size: 300 * mib},
		{name: "xfs_by_attribute", attrs: map[string]string{"type": "loop", "size": "300Mi", "csi.storage.k8s.io/fstype": "xfs"}, size: 300 * mib},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, dir := setup(t)
			if tc.btrfs {
				n, dir = setupOn(t, testutil.BtrfsPool(t, 256<<20))
			}
			v := newInline(t, n, dir, tc.name, tc.attrs)
			v.fsType = tc.fsType
			v.Publish()
			requireMounted(t, v.Target, true)
			// Everything the pod needs is mounted at its target, in the
			// kubelet's directory: nothing in hostvol's state directory,
			// whose mounts a container restart would take away.
			require.Empty(t, testutil.MountsUnder(t, n.StateDir), "mounts under the state directory")
			require.NoError(t, os.WriteFile(filepath.Join(v.Target, "hello"), []byte("inline"), 0o644))

			v.Publish() // a kubelet retry: same answer, nothing new
			got, err := os.ReadFile(filepath.Join(v.Target, "hello"))
			require.NoError(t, err)
			require.Equal(t, "inline", string(got))

			resp, err := n.Client.NodeGetVolumeStats(testutil.Ctx(t), &csi.NodeGetVolumeStatsRequest{VolumeId: v.handle, VolumePath: v.Target})
			require.NoError(t, err, "NodeGetVolumeStats by handle")
			bytesUsage, _ := usage(t, resp)
			require.Positive(t, bytesUsage.GetTotal())

			if tc.size > 0 {
				images, err := os.ReadDir(n.Layout().ImagesDir())
				require.NoError(t, err)
				require.Len(t, images, 1)
				devs, err := testutil.LoopsFor(filepath.Join(n.Layout().ImagesDir(), images[0].Name()))
				require.NoError(t, err)
				require.Len(t, devs, 1, "one loop device after two publishes")

				st := statfs(t, v.Target)
				require.LessOrEqual(t, totalBytes(st), tc.size, "filesystem size")
				require.Greater(t, totalBytes(st), tc.size/2, "filesystem size")
				require.Equal(t, totalBytes(st), bytesUsage.GetTotal(), "stats by handle")
				wrote, err := testutil.WriteUntilRefused(filepath.Join(v.Target, "fill"), 2*tc.size)
				require.Equal(t, unix.ENOSPC, testutil.Errno(err), "writing past the size: %v", err)
				require.Less(t, wrote, tc.size)
				var fsType string
				if tc.fsType != "" || tc.attrs["csi.storage.k8s.io/fstype"] != "" {
					fsType = "xfs"
				} else {
					fsType = "ext4"
				}
				require.Equal(t, fsType, fsTypeAt(t, v.Target))
			}

			v.Unpublish()
			requireMounted(t, v.Target, false)
			_, err = os.Stat(v.Target)
			require.True(t, os.IsNotExist(err), "target removed: %v", err)
			requirePoolEmpty(t, n)

			// The kubelet retries an unpublish whose answer it missed.
			v.Unpublish()
		})
	}
}

// TestInlineVolumeBadInput sends what a pod spec or a hostile client may:
// each is refused with INVALID_ARGUMENT and leaves nothing behind.
func TestInlineVolumeBadInput(t *testing.T) {
	n, dir := setup(t)
	cases := []struct {
		name   string
		handle string
		attrs  map[string]string
		block  bool
	}{
		{name: "unknown_attribute", attrs: map[string]string{"sise": "1Gi"}},
		{name: "negative_size", attrs: map[string]string{"type": "loop", "size": "-1Gi"}},
		{name: "zero_size", attrs: map[string]string{"type": "loop", "size": "0"}},
		{name: "size_not_a_quantity", attrs: map[string]string{"type": "loop", "size": "big"}},
		{name: "size_overflow", attrs: map[string]string{"type": "loop", "size": "100Ei"}},
		{name: "unknown_type", attrs: map[string]string{"type": "nfs"}},
		{name: "unknown_pool", attrs: map[string]string{"pool": "nowhere"}},
		{name: "pool_traversal", attrs: map[string]string{"pool": "../../etc"}},
		{name: "claim_attribute", attrs: map[string]string{"csi.storage.k8s.io/pvc/name": "x"}},
		{name: "unknown_fstype", attrs: map[string]string{"type": "loop", "csi.storage.k8s.io/fstype": "vfat"}},
		{name: "block", attrs: map[string]string{"type": "loop"}, block: true},
		{name: "handle_with_slash", handle: "csi-../../x", attrs: map[string]string{"type": "loop"}},
		{name: "handle_with_nul", handle: "csi-\x00", attrs: map[string]string{"type": "loop"}},
		// What pod authors may never ask (docs/security.md).
		{name: "size_limit_lifted", attrs: map[string]string{"sizeLimit": "optional"}},
		{name: "block_rwx", attrs: map[string]string{"type": "loop", "allowBlockRWX": "true"}},
		{name: "persistent_volume_id", handle: "hv-00112233445566778899aabbccddeeff", attrs: map[string]string{"type": "loop"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newInline(t, n, dir, tc.name, tc.attrs)
			if tc.handle != "" {
				v.handle = tc.handle
			}
			var err error
			if tc.block {
				_, err = n.Client.NodePublishVolume(testutil.Ctx(t), &csi.NodePublishVolumeRequest{
					VolumeId:   v.handle,
					TargetPath: v.Target,
					VolumeCapability: &csi.VolumeCapability{
						AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
						AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
					},
					VolumeContext: v.attrs,
				})
			} else {
				err = v.publishErr()
			}
			requireCode(t, codes.InvalidArgument, err, "NodePublishVolume")
			requireMounted(t, v.Target, false)
			requirePoolEmpty(t, n)
		})
	}
}

// TestInlineVolumePublishFailsCleanly makes the publish fail after the
// volume was created (the target is a file, so the bind mount cannot be
// made): the volume is removed again, and an unpublish of the handle, as
// the kubelet may send after an uncertain failure, succeeds.
func TestInlineVolumePublishFailsCleanly(t *testing.T) {
	n, dir := setupOn(t, testutil.BtrfsPool(t, 256<<20))
	for _, typ := range []string{"dir", "loop"} {
		v := newInline(t, n, dir, typ, map[string]string{"type": typ, "size": "64Mi"})
		require.NoError(t, os.MkdirAll(filepath.Dir(v.Target), 0o750))
		require.NoError(t, os.WriteFile(v.Target, nil, 0o644))
		require.Error(t, v.publishErr(), "publish onto a file")
		requirePoolEmpty(t, n)
		require.NoError(t, os.Remove(v.Target))
		v.Unpublish()
	}
}

// TestInlineVolumeRestartAndReboot restarts the driver while an inline
// volume is published (the unpublish after it still deletes it), and
// simulates a node reboot (mounts and loop devices gone): the kubelet
// publishes the same handle again and the pod finds its data.
func TestInlineVolumeRestartAndReboot(t *testing.T) {
	n, dir := setup(t)
	v := newInline(t, n, dir, "survivor", map[string]string{"type": "loop", "size": "64Mi"})
	v.Publish()
	require.NoError(t, os.WriteFile(filepath.Join(v.Target, "data"), []byte("kept"), 0o644))

	n.Stop()
	n.Start()
	requireMounted(t, v.Target, true)

	// Reboot: every mount and loop device of the node goes.
	n.Stop()
	testutil.ReleaseUnder(t, dir)
	n.Start()
	v.Publish()
	got, err := os.ReadFile(filepath.Join(v.Target, "data"))
	require.NoError(t, err, "data after a reboot")
	require.Equal(t, "kept", string(got))

	n.Stop()
	n.Start()
	v.Unpublish()
	requirePoolEmpty(t, n)
}

// TestInlineHandleIsNotAVolumeID checks that an inline volume cannot be
// reached through the controller as if CreateVolume had made it, and that
// unpublishing a handle that never was is harmless.
func TestInlineHandleIsNotAVolumeID(t *testing.T) {
	n, dir := setup(t)
	v := newInline(t, n, dir, "scratch", map[string]string{"type": "loop", "size": "32Mi"})
	v.Unpublish() // never published: nothing to do
	v.Publish()
	list, err := n.Client.ListVolumes(testutil.Ctx(t), &csi.ListVolumesRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetEntries(), 1)
	vc := list.GetEntries()[0].GetVolume().GetVolumeContext()
	require.Equal(t, "true", vc["ephemeral"], "listed as inline: %v", vc)
	require.Equal(t, "default/pod-scratch", vc["pod"], "listed with its pod: %v", vc)
	_, err = n.Client.DeleteVolume(testutil.Ctx(t), &csi.DeleteVolumeRequest{VolumeId: v.handle})
	require.NoError(t, err, "DeleteVolume of a foreign ID is a no-op")
	requireMounted(t, v.Target, true)
	// Another volume's unpublish at this target must not unmount it.
	other := newInline(t, n, dir, "other", nil)
	other.Target = v.Target
	requireCode(t, codes.NotFound, other.unpublishErr(), "unpublish of another handle at the target")
	requireMounted(t, v.Target, true)
	v.Unpublish()
	requirePoolEmpty(t, n)
}

// fsTypeAt names the filesystem mounted at path by its statfs magic.
func fsTypeAt(t *testing.T, path string) string {
	t.Helper()
	switch st := statfs(t, path); st.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	default:
		return fmt.Sprintf("%#x", st.Type)
	}
}
