//go:build linux

package crash

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestCrashInlineVolume kills the driver at the failpoints of the creation
// an inline volume's first NodePublishVolume makes, and of the deletion its
// NodeUnpublishVolume makes, then does what the kubelet does with a call
// whose answer it lost: calls it again. The retry must succeed, the pod's
// mount must work, and after the final unpublish nothing may be left: no
// record, image, node state, mount or loop device.
func TestCrashInlineVolume(t *testing.T) {
	testutil.RequireRootAndTools(t, "mkfs.ext4")
	type crashCase struct {
		point, op string
		// podGone: the pod was deleted while the publish was lost, so the
		// kubelet's next call is the unpublish, not a retry.
		podGone bool
	}
	var cases []crashCase
	for _, p := range []string{"create-after-intent", "create-after-data", "create-after-ready", "inline-after-create", "stage-after-attach", "stage-after-mount"} {
		cases = append(cases, crashCase{point: p, op: "publish"}, crashCase{point: p, op: "publish", podGone: true})
	}
	for _, p := range []string{"unpublish-after-unmount", "unstage-after-unmount", "unstage-after-detach", "inline-after-unstage", "delete-after-intent", "delete-after-data"} {
		cases = append(cases, crashCase{point: p, op: "unpublish"})
	}
	for _, tc := range cases {
		name := tc.point
		if tc.podGone {
			name += "/pod_gone"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			testutil.CleanupUnder(t, e.dir)
			handle := fmt.Sprintf("csi-%x", sha256.Sum256([]byte(tc.point)))
			target := filepath.Join(e.dir, "pods", "p", "volumes", "kubernetes.io~csi", "scratch", "mount")
			require.NoError(t, os.MkdirAll(filepath.Dir(target), 0o750))
			publish := func(d *driverProc) error {
				ctx, cancel := ctxRPC()
				defer cancel()
				_, err := d.client.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
					VolumeId:   handle,
					TargetPath: target,
					VolumeCapability: &csi.VolumeCapability{
						AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
						AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
					},
					VolumeContext: map[string]string{
						"csi.storage.k8s.io/ephemeral": "true",
						"csi.storage.k8s.io/pod.name":  "p", "csi.storage.k8s.io/pod.namespace": "default",
						"type": "loop", "size": "32Mi",
					},
				})
				return err
			}
			unpublish := func(d *driverProc) error {
				ctx, cancel := ctxRPC()
				defer cancel()
				_, err := d.client.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: handle, TargetPath: target})
				return err
			}
			if tc.op == "unpublish" {
				d := e.start("")
				d.waitReady(e)
				require.NoError(t, publish(d))
				d.stop()
			}
			d := e.start(tc.point)
			d.waitReady(e)
			var err error
			if tc.op == "publish" {
				err = publish(d)
			} else {
				err = unpublish(d)
			}
			requireConnectionLost(t, err, tc.op)
			d.requireKilled()

			d = e.start("")
			d.waitReady(e)
			requireConsistent(t, e, d)
			loops, err := testutil.LoopsUnder(e.poolDir)
			require.NoError(t, err)
			if tc.point == "stage-after-attach" {
				require.Empty(t, loops, "start-up detaches the device a killed stage attached")
			}
			if tc.op == "publish" && !tc.podGone {
				require.NoError(t, publish(d), "the kubelet's retry of the publish")
				require.NoError(t, os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o644), "the pod writes")
			}
			require.NoError(t, unpublish(d), "the kubelet's unpublish")
			require.NoError(t, unpublish(d), "and its retry")
			requireEmpty(t, e, d)
			imgs, err := os.ReadDir(e.layout.ImagesDir())
			require.NoError(t, err)
			require.Empty(t, imgs, "images left")
			require.Empty(t, testutil.MountsUnder(t, e.dir), "mounts left")
			loops, err = testutil.LoopsUnder(e.dir)
			require.NoError(t, err)
			require.Empty(t, loops, "loop devices left")
			d.stop()
		})
	}
}
