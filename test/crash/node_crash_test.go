//go:build linux

package crash

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// nodeKinds are the kinds of volume the node tests stage and publish.
var nodeKinds = []testutil.Kind{testutil.Ext4Kind, testutil.BlockKind, testutil.DirKind}

// nodeVol is one volume with the paths the kubelet would give it.
type nodeVol struct{ *testutil.Volume }

// do runs op through the driver run d.
func (v *nodeVol) do(d *driverProc, op string) error {
	v.Src = d
	return v.Do(op)
}

// use writes through the target and reads it back: the publish works.
func (v *nodeVol) use() {
	v.T.Helper()
	if v.Kind.Block {
		f, err := os.OpenFile(v.Target, os.O_RDWR, 0)
		require.NoError(v.T, err, "open the published device")
		_, err = f.WriteAt([]byte("block data"), 4096)
		require.NoError(v.T, err)
		require.NoError(v.T, f.Close())
		return
	}
	p := filepath.Join(v.Target, "data")
	require.NoError(v.T, os.WriteFile(p, []byte("written by the pod"), 0o644))
	b, err := os.ReadFile(p)
	require.NoError(v.T, err)
	require.Equal(v.T, "written by the pod", string(b))
}

// nodeCrashCase is a failpoint in a node operation, and what the kubelet
// does after the call's answer was lost.
type nodeCrashCase struct {
	point string
	op    string   // the operation the failpoint is in
	kinds []string // the kinds whose op passes the failpoint
}

var nodeCrashCases = []nodeCrashCase{
	{point: "stage-after-attach", op: "stage", kinds: []string{"ext4", "block"}},
	{point: "stage-after-mount", op: "stage", kinds: []string{"ext4"}},
	{point: "publish-after-mount", op: "publish", kinds: []string{"ext4", "block", "dir"}},
	{point: "unpublish-after-unmount", op: "unpublish", kinds: []string{"ext4", "block", "dir"}},
	{point: "unstage-after-unmount", op: "unstage", kinds: []string{"ext4"}},
	{point: "unstage-after-detach", op: "unstage", kinds: []string{"ext4", "block"}},
}

// before lists the operations that bring a volume to where op starts.
var before = map[string][]string{
	"stage":     nil,
	"publish":   {"stage"},
	"unpublish": {"stage", "publish"},
	"unstage":   {"stage", "publish", "unpublish"},
}

// TestCrashNodeOps kills the driver at each failpoint inside
// NodeStageVolume, NodePublishVolume, NodeUnpublishVolume and
// NodeUnstageVolume of a loop ext4, a raw block and a directory volume,
// restarts it, and then does what the kubelet does with a call whose answer
// it lost: it calls it again, or, when the pod went away meanwhile, it
// calls the opposite (unstage after a stage, unpublish after a publish).
// Either way the volume must work, no loop device may be left attached
// that nothing owns (start-up detaches a stage's orphan), and after
// unpublish, unstage and delete nothing may be left: no record, image,
// node state, mount or loop device.
func TestCrashNodeOps(t *testing.T) {
	testutil.RequireRootAndTools(t, "mkfs.ext4")
	covered := []string{"inline-after-create", "inline-after-unstage"} // TestCrashInlineVolume
	for _, c := range nodeCrashCases {
		covered = append(covered, c.point)
	}
	require.ElementsMatch(t, failpoint.NodePoints, covered, "failpoint.NodePoints and these tables must list the same failpoints")
	for _, tc := range nodeCrashCases {
		for _, k := range nodeKinds {
			if !contains(tc.kinds, k.Name) {
				continue
			}
			nexts := []string{"retry"}
			if tc.op == "stage" || tc.op == "publish" {
				nexts = append(nexts, "undo")
			}
			for _, next := range nexts {
				t.Run(tc.point+"/"+k.Name+"/"+next, func(t *testing.T) { crashNodeOp(t, tc, k, next) })
			}
		}
	}
}

// newNodeVol starts a driver on a new env and creates a 32 MiB volume of
// kind k, with the staging and target paths the kubelet would give it.
func newNodeVol(t *testing.T, k testutil.Kind, name string) (*env, *driverProc, *nodeVol) {
	t.Helper()
	e := newEnv(t)
	e.params = k.Params
	testutil.CleanupUnder(t, e.dir)
	d := e.start("")
	d.waitReady(e)
	v := &nodeVol{testutil.CreateVolume(t, d, e.dir, k, name, 32<<20)}
	require.NoError(t, os.MkdirAll(filepath.Dir(v.Target), 0o750)) // the kubelet makes the target's parent
	return e, d, v
}

func crashNodeOp(t *testing.T, tc nodeCrashCase, k testutil.Kind, next string) {
	e, d, v := newNodeVol(t, k, "node-crash")
	for _, op := range before[tc.op] {
		require.NoError(t, v.do(d, op), op)
	}
	d.stop()

	d = e.start(tc.point)
	d.waitReady(e)
	requireConnectionLost(t, v.do(d, tc.op), tc.op)
	d.requireKilled()

	d = e.start("")
	d.waitReady(e)
	requireConsistent(t, e, d)
	if tc.op == "stage" && k.HasImage() {
		// The stage never finished: whatever it attached is either
		// mounted where the retry finds it, or detached at start-up.
		loops, err := testutil.LoopsUnder(e.poolDir)
		require.NoError(t, err)
		if tc.point == "stage-after-attach" {
			require.Empty(t, loops, "a loop device left by a stage killed after its attach, after restart")
		}
	}

	// The kubelet's next calls, to the end of the volume's life.
	var rest []string
	switch {
	case next == "retry":
		rest = map[string][]string{
			"stage":     {"stage", "publish", "use", "unpublish", "unstage"},
			"publish":   {"publish", "use", "unpublish", "unstage"},
			"unpublish": {"unpublish", "unstage"},
			"unstage":   {"unstage"},
		}[tc.op]
	case tc.op == "stage":
		rest = []string{"unstage"}
	default:
		rest = []string{"unpublish", "unstage"}
	}
	for _, op := range rest {
		if op == "use" {
			v.use()
			continue
		}
		require.NoError(t, v.do(d, op), "the kubelet's %s after the crash", op)
	}
	require.NoError(t, v.do(d, rest[len(rest)-1]), "and a retry of the last call")
	require.NoError(t, d.delete(v.ID), "DeleteVolume")
	requireEmpty(t, e, d)
	requireNothingLeft(t, e)
	d.stop()
}

// requireNothingLeft checks that no image, mount or loop device of the
// test is left.
func requireNothingLeft(t *testing.T, e *env) {
	t.Helper()
	imgs, err := os.ReadDir(e.layout.ImagesDir())
	require.NoError(t, err)
	require.Empty(t, imgs, "images left")
	require.Empty(t, testutil.MountsUnder(t, e.dir), "mounts left")
	loops, err := testutil.LoopsUnder(e.dir)
	require.NoError(t, err)
	require.Empty(t, loops, "loop devices left")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestReadOnlyStateDir makes the state directory read-only (as a disk that
// failed into read-only does) under a running driver: a stage, a publish
// and an inline publish fail, and each leaves nothing behind (no loop
// device attached, nothing mounted, no volume made); once the directory is
// writable again, they succeed.
func TestReadOnlyStateDir(t *testing.T) {
	testutil.RequireRootAndTools(t, "mkfs.ext4")
	k := nodeKinds[0] // ext4
	e, d, v := newNodeVol(t, k, "ro-state")

	readOnly := func() {
		require.NoError(t, unix.Mount(e.stateDir, e.stateDir, "", unix.MS_BIND, ""))
		require.NoError(t, unix.Mount("", e.stateDir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""))
	}
	writable := func() { require.NoError(t, unix.Unmount(e.stateDir, 0)) }

	readOnly()
	err := v.do(d, "stage")
	require.Error(t, err, "stage with a read-only state directory")
	loops, lerr := testutil.LoopsUnder(e.poolDir)
	require.NoError(t, lerr)
	require.Empty(t, loops, "a failed stage leaves no loop device: %v", err)
	require.NotContains(t, testutil.MountsUnder(t, e.dir), v.Staging, "a failed stage leaves no mount")
	writable()
	require.NoError(t, v.do(d, "stage"))

	readOnly()
	err = v.do(d, "publish")
	require.Error(t, err, "publish with a read-only state directory")
	require.NotContains(t, testutil.MountsUnder(t, e.dir), v.Target, "a failed publish leaves no mount")
	writable()
	require.NoError(t, v.do(d, "publish"))
	v.use()

	// An inline volume's publish creates a volume first: nothing of it may
	// stay when that fails.
	inline := filepath.Join(e.dir, "kubelet", "pods", "q", "mount")
	require.NoError(t, os.MkdirAll(filepath.Dir(inline), 0o750))
	inlinePublish := func() error {
		ctx, cancel := ctxRPC()
		defer cancel()
		_, err := d.client.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: "csi-" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", TargetPath: inline,
			VolumeCapability: k.Capability(),
			VolumeContext:    map[string]string{"csi.storage.k8s.io/ephemeral": "true", "type": "loop", "size": "32Mi"},
		})
		return err
	}
	readOnly()
	err = inlinePublish()
	require.Error(t, err)
	require.NotEqual(t, codes.OK, status.Code(err))
	writable()
	imgs, ierr := os.ReadDir(e.layout.ImagesDir())
	require.NoError(t, ierr)
	require.Len(t, imgs, 1, "only the claim's image: the failed inline publish made none")

	for _, op := range []string{"unpublish", "unstage"} {
		require.NoError(t, v.do(d, op))
	}
	require.NoError(t, d.delete(v.ID))
	requireEmpty(t, e, d)
	requireNothingLeft(t, e)
	d.stop()
}
