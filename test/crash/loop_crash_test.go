//go:build linux

package crash

import (
	"os"
	"sort"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestCrashLoopVolumes kills the driver at the failpoints of CreateVolume
// and DeleteVolume of a loop (ext4) volume, whose data is an image file that
// is formatted at creation, and checks after restart that every record is
// ready with its image and every image has a record. Root is needed: mkfs
// formats the image file directly, but DeleteVolume checks that no loop
// device holds the image, which reads the loop devices.
func TestCrashLoopVolumes(t *testing.T) {
	testutil.RequireRootAndTools(t, "mkfs.ext4")
	const name = "crash-loop-vol"
	id := volumeid.FromName(name)
	loopReq := func() *csi.CreateVolumeRequest {
		r := createReq(name)
		r.Parameters = map[string]string{"type": "loop"}
		r.CapacityRange = &csi.CapacityRange{RequiredBytes: 32 << 20}
		return r
	}
	images := func(e *env) []string {
		ents, err := os.ReadDir(e.layout.ImagesDir())
		require.NoError(t, err)
		var out []string
		for _, en := range ents {
			out = append(out, e.layout.ImageID(en.Name()))
		}
		sort.Strings(out)
		return out
	}
	for _, tc := range []struct {
		point, op string
		survives  bool
	}{
		{point: "create-after-intent", op: "create"},
		{point: "create-after-data", op: "create"},
		{point: "create-after-ready", op: "create", survives: true},
		{point: "delete-after-intent", op: "delete"},
		{point: "delete-after-data", op: "delete"},
	} {
		t.Run(tc.point, func(t *testing.T) {
			e := newEnv(t)
			if tc.op == "delete" {
				d := e.start("")
				d.waitReady(e)
				ctx, cancel := ctxRPC()
				_, err := d.client.CreateVolume(ctx, loopReq())
				cancel()
				require.NoError(t, err)
				d.stop()
			}
			d := e.start(tc.point)
			d.waitReady(e)
			ctx, cancel := ctxRPC()
			var err error
			if tc.op == "create" {
				_, err = d.client.CreateVolume(ctx, loopReq())
			} else {
				err = d.delete(id)
			}
			cancel()
			requireConnectionLost(t, err, tc.op)
			d.requireKilled()
			t.Logf("on disk after SIGKILL at %s: %s; images %v", tc.point, readDisk(t, e).describe(id), images(e))

			d = e.start("")
			d.waitReady(e)
			recs := requireConsistent(t, e, d)
			var ready []string
			for rid := range recs {
				ready = append(ready, rid)
			}
			sort.Strings(ready)
			require.Equal(t, ready, images(e), "every ready loop volume has its image and every image a record")
			if tc.survives {
				require.Equal(t, []string{id}, ready)
			} else {
				require.Empty(t, ready)
			}
			// The CO's retry: create again, then delete; nothing is left.
			ctx, cancel = ctxRPC()
			resp, err := d.client.CreateVolume(ctx, loopReq())
			cancel()
			require.NoError(t, err)
			require.Equal(t, id, resp.GetVolume().GetVolumeId())
			require.NoError(t, d.delete(id))
			require.Empty(t, images(e))
			requireEmpty(t, e, d)
			d.stop()
		})
	}
}
