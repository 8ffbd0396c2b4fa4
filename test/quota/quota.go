// Package quota tests the hard size limits of directory volumes for real,
// through hostvol's gRPC API: btrfs qgroups here, on a btrfs filesystem the
// tests make on a loop device (needs root and btrfs-progs), and XFS and ext4
// project quotas in the test VM (test/vmtests, which call the scenarios
// below: the host's kernel may lack those quotas).
//
// The scenarios are the same for every filesystem, and so is the code they
// drive: the driver with the adapters cmd/hostvol builds.
package quota

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hvquota "github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const mib = int64(1) << 20

// FS describes a pool filesystem under test.
type FS struct {
	// Name is the filesystem (btrfs, xfs, ext4), for logs.
	Name string
	// Method is the enforcement hostvol must detect on it.
	Method hvquota.Method
	// Errno is what a write past the limit fails with on it.
	Errno unix.Errno
	// DropCapSysResource writes without CAP_SYS_RESOURCE, as a pod's
	// processes do (ext4 lets that capability exceed hard limits).
	DropCapSysResource bool
	// InodesKnown: quota accounting counts inodes (project quotas do,
	// btrfs qgroups do not).
	InodesKnown bool
	// Gone checks that nothing of a deleted volume's limit is left.
	Gone func(t *testing.T, pool string, h hvquota.Handle)
}

// Node starts hostvol, with the real adapters, on a pool at poolPath (a
// filesystem the test made), with state under a temporary directory.
func Node(t *testing.T, poolPath string) *testutil.Node {
	t.Helper()
	dir := t.TempDir()
	testutil.CleanupUnder(t, dir)
	return testutil.NewNode(t, dir, poolPath)
}

// Create creates a directory volume of size bytes with the class
// parameters params (nil: the defaults, sizeLimit required).
func Create(t *testing.T, n *testutil.Node, name string, size int64, params map[string]string) string {
	t.Helper()
	resp, err := n.Client.CreateVolume(testutil.Ctx(t), &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{testutil.DirKind.Capability()},
		Parameters:         params,
	})
	require.NoError(t, err, "CreateVolume %s", name)
	require.Equal(t, size, resp.GetVolume().GetCapacityBytes())
	return resp.GetVolume().GetVolumeId()
}

// Handle is what limits a volume, from its record.
func Handle(t *testing.T, n *testutil.Node, id string) hvquota.Handle {
	t.Helper()
	v := n.Env.Record(t, id)
	require.NotNil(t, v.Quota, "volume %s has no size limit", id)
	return *v.Quota
}

// volumeAt is volume id with staging and target paths under dir/id.
func volumeAt(t *testing.T, n *testutil.Node, dir, id string) *testutil.Volume {
	return &testutil.Volume{
		T: t, Src: n, Kind: testutil.DirKind, Name: id, ID: id,
		Staging: filepath.Join(dir, id, "staging"), Target: filepath.Join(dir, id, "target"),
	}
}

// Publish stages and publishes a volume under dir and returns the target.
func Publish(t *testing.T, n *testutil.Node, dir, id string) string {
	t.Helper()
	v := volumeAt(t, n, dir, id)
	require.NoError(t, os.MkdirAll(v.Staging, 0o750))
	v.Up()
	return v.Target
}

// Unpublish undoes Publish.
func Unpublish(t *testing.T, n *testutil.Node, dir, id string) {
	t.Helper()
	volumeAt(t, n, dir, id).Down()
}

// Delete deletes a volume.
func Delete(t *testing.T, n *testutil.Node, id string) {
	t.Helper()
	volumeAt(t, n, "", id).Delete()
}

// Write writes up to max bytes into a new file at path the way a pod does
// (without CAP_SYS_RESOURCE where that matters) and returns what was
// written and the error that stopped it.
func Write(t *testing.T, fs FS, path string, max int64) (int64, error) {
	t.Helper()
	var (
		n   int64
		err error
	)
	if fs.DropCapSysResource {
		testutil.WithoutCapSysResource(t, func() { n, err = testutil.WriteUntilRefused(path, max) })
	} else {
		n, err = testutil.WriteUntilRefused(path, max)
	}
	return n, err
}

// syncfs flushes the filesystem at path, so that quota accounting (a
// btrfs qgroup's, committed with the transaction) and statfs agree.
func syncfs(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, unix.Syncfs(int(f.Fd())))
}

// Usage is NodeGetVolumeStats' answer for a volume at path, by unit.
func Usage(t *testing.T, n *testutil.Node, id, path string) map[csi.VolumeUsage_Unit]*csi.VolumeUsage {
	t.Helper()
	resp, err := n.Client.NodeGetVolumeStats(testutil.Ctx(t), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: path})
	require.NoError(t, err)
	out := map[csi.VolumeUsage_Unit]*csi.VolumeUsage{}
	for _, u := range resp.GetUsage() {
		out[u.GetUnit()] = u
	}
	return out
}

// Health is ControllerGetVolumeHealth's conditions of a volume, as
// "STATUS/Reason", with the messages logged.
func Health(t *testing.T, n *testutil.Node, id string) []string {
	t.Helper()
	r, err := n.Client.ControllerGetVolumeHealth(testutil.Ctx(t), &csi.ControllerGetVolumeHealthRequest{VolumeId: id})
	require.NoError(t, err)
	out := []string{}
	for _, e := range r.GetVolumeHealth().GetHealthStatuses() {
		out = append(out, e.GetStatus().String()+"/"+e.GetReason())
		t.Logf("health of %s: %s %s: %s", id, e.GetStatus(), e.GetReason(), e.GetMessage())
	}
	return out
}

// EnforcedLimit is the main scenario: a 10 MiB directory volume refuses
// the write that crosses 10 MiB while its pool keeps its free space;
// NodeGetVolumeStats reports the volume's own usage against its limit and
// its health says the limit is exhausted;
// expansion (ControllerExpandVolume, then NodeExpandVolume as the kubelet
// calls it) lets further writes through; deletion leaves no limit behind.
func EnforcedLimit(t *testing.T, fs FS, pool string) {
	n := Node(t, pool)
	info := n.Env.Enforcement(t, "default")
	require.Equal(t, fs.Method, info.Method, "enforcement detected on the %s pool (%s)", fs.Name, info.Reason)
	t.Logf("%s: pool size enforcement %s (%s)", fs.Name, info.Method, info.Reason)

	const size = 10 * mib
	dir := t.TempDir()
	id := Create(t, n, "limit-"+fs.Name, size, nil)
	h := Handle(t, n, id)
	t.Logf("%s: volume %s limited by %s", fs.Name, id, h)
	target := Publish(t, n, dir, id)

	syncfs(t, pool)
	freeBefore := testutil.FreeBytes(t, pool)
	written, werr := Write(t, fs, filepath.Join(target, "fill"), 2*size)
	syncfs(t, pool)
	freeAfter := testutil.FreeBytes(t, pool)
	t.Logf("%s: 10 MiB volume: write refused after %d bytes (%.2f MiB) with errno %d (%v); pool free before %d (%.1f MiB), after %d (%.1f MiB)",
		fs.Name, written, float64(written)/float64(mib), testutil.Errno(werr), werr,
		freeBefore, float64(freeBefore)/float64(mib), freeAfter, float64(freeAfter)/float64(mib))
	require.Error(t, werr, "a 20 MiB write into a 10 MiB volume must fail")
	require.Equal(t, fs.Errno, testutil.Errno(werr), "%s answers %v at the limit, got %v", fs.Name, fs.Errno, werr)
	require.LessOrEqual(t, written, size, "no more than the limit gets written")
	require.Greater(t, written, size*85/100, "the limit, not something smaller, stopped the write")
	require.Greater(t, freeAfter, freeBefore-size-2*mib, "the pool lost no more than the volume holds")
	require.Greater(t, freeAfter, 3*size, "the pool keeps its free space")

	u := Usage(t, n, id, target)
	b := u[csi.VolumeUsage_BYTES]
	require.NotNil(t, b)
	t.Logf("%s: NodeGetVolumeStats bytes total=%d used=%d available=%d; inodes %v", fs.Name, b.GetTotal(), b.GetUsed(), b.GetAvailable(), u[csi.VolumeUsage_INODES])
	require.Equal(t, size, b.GetTotal(), "total bytes are the limit")
	require.GreaterOrEqual(t, b.GetUsed(), written-64<<10, "used bytes are the volume's own (%d written)", written)
	require.LessOrEqual(t, b.GetUsed(), size+mib)
	require.Equal(t, max(size-b.GetUsed(), 0), b.GetAvailable(), "available is the limit minus what is used")
	if fs.InodesKnown {
		in := u[csi.VolumeUsage_INODES]
		require.NotNil(t, in)
		require.EqualValues(t, 2, in.GetUsed(), "the directory and the file")
		require.Equal(t, in.GetUsed()+in.GetAvailable(), in.GetTotal())
	}
	// The volume's health says its limit is exhausted (its pool is not).
	require.Equal(t, []string{"DEGRADED/" + volume.ReasonLimitExhausted}, Health(t, n, id))

	// Expansion raises the limit online: ControllerExpandVolume needs no
	// node step for a directory.
	exp, err := n.Client.ControllerExpandVolume(testutil.Ctx(t), &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 * size}})
	require.NoError(t, err)
	require.Equal(t, 2*size, exp.GetCapacityBytes())
	require.False(t, exp.GetNodeExpansionRequired(), "a directory's limit is raised without a node step")
	require.Empty(t, Health(t, n, id), "healthy again with room under the raised limit")
	more, err := Write(t, fs, filepath.Join(target, "after-expand"), 8*mib)
	require.NoError(t, err, "8 MiB more after expanding to 20 MiB (wrote %d)", more)
	require.Equal(t, 2*size, Usage(t, n, id, target)[csi.VolumeUsage_BYTES].GetTotal())
	// And through NodeExpandVolume, as the kubelet grows it in a cluster.
	nexp, err := n.Client.NodeExpandVolume(testutil.Ctx(t), &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target, CapacityRange: &csi.CapacityRange{RequiredBytes: 3 * size}})
	require.NoError(t, err)
	require.Equal(t, 3*size, nexp.GetCapacityBytes())
	more, err = Write(t, fs, filepath.Join(target, "after-node-expand"), 8*mib)
	require.NoError(t, err, "8 MiB more after expanding to 30 MiB (wrote %d)", more)
	over, err := Write(t, fs, filepath.Join(target, "over"), 2*size)
	require.Equal(t, fs.Errno, testutil.Errno(err), "the raised limit is enforced too (wrote %d)", over)
	t.Logf("%s: after expansion to 30 MiB: 8+8 MiB more written, then refused after %d more bytes with errno %d", fs.Name, over, testutil.Errno(err))

	// A restart keeps the limit and what it knows of it.
	n.Stop()
	n.Start()
	require.Equal(t, h.Method, Handle(t, n, id).Method)
	syncfs(t, pool)
	after := Usage(t, n, id, target)[csi.VolumeUsage_BYTES]
	require.Equal(t, 3*size, after.GetTotal())
	require.Greater(t, after.GetUsed(), 2*size+6*mib, "usage after a restart")

	Unpublish(t, n, dir, id)
	h = Handle(t, n, id)
	Delete(t, n, id)
	require.NoDirExists(t, n.Pool().DirPath(id))
	fs.Gone(t, pool, h)
}

// Concurrent creates 16 volumes from 16 goroutines at once: each gets a
// limit of its own (distinct project IDs, distinct subvolumes), and
// deleting them all, at once too, leaves no limit behind.
func Concurrent(t *testing.T, fs FS, pool string) {
	n := Node(t, pool)
	const workers = 16
	ids := make([]string, workers)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := n.Client.CreateVolume(testutil.Ctx(t), &csi.CreateVolumeRequest{
				Name:               fmt.Sprintf("concurrent-%02d", i),
				CapacityRange:      &csi.CapacityRange{RequiredBytes: 4 * mib},
				VolumeCapabilities: []*csi.VolumeCapability{testutil.DirKind.Capability()},
			})
			errs[i] = err
			ids[i] = resp.GetVolume().GetVolumeId()
		}()
	}
	wg.Wait()
	handles := map[hvquota.Handle]string{}
	for i, err := range errs {
		require.NoError(t, err, "CreateVolume %d", i)
		h := Handle(t, n, ids[i])
		if other, dup := handles[h]; dup {
			t.Fatalf("volumes %s and %s share %s", other, ids[i], h)
		}
		handles[h] = ids[i]
	}
	var list []string
	for h := range handles {
		list = append(list, h.String())
	}
	t.Logf("%s: %d concurrent creates got %d distinct limits: %v", fs.Name, workers, len(handles), list)
	require.Len(t, handles, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = n.Client.DeleteVolume(testutil.Ctx(t), &csi.DeleteVolumeRequest{VolumeId: ids[i]})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "DeleteVolume %d", i)
	}
	for h := range handles {
		fs.Gone(t, pool, h)
	}
}

// Unlimited is a pool that cannot enforce limits: the class decides.
// sizeLimit required (the default) is FAILED_PRECONDITION naming the pool
// and its filesystem, and GetCapacity reports nothing for such a class;
// sizeLimit optional creates the volume without a limit.
func Unlimited(t *testing.T, pool, filesystem string) {
	n := Node(t, pool)
	info := n.Env.Enforcement(t, "default")
	require.Equal(t, hvquota.None, info.Method)
	t.Logf("pool on %s: enforcement %s (%s)", filesystem, info.Method, info.Reason)

	_, err := n.Client.CreateVolume(testutil.Ctx(t), &csi.CreateVolumeRequest{
		Name: "refused", CapacityRange: &csi.CapacityRange{RequiredBytes: mib}, VolumeCapabilities: []*csi.VolumeCapability{testutil.DirKind.Capability()},
	})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "sizeLimit required on a pool that cannot enforce it: %v", err)
	require.Contains(t, err.Error(), `pool "default"`)
	require.Contains(t, err.Error(), filesystem)
	require.Contains(t, err.Error(), "sizeLimit: optional")
	t.Logf("sizeLimit required: %v", err)

	capReq, err := n.Client.GetCapacity(testutil.Ctx(t), &csi.GetCapacityRequest{})
	require.NoError(t, err)
	require.Zero(t, capReq.GetAvailableCapacity(), "a class that requires limits has no capacity on this pool")
	capOpt, err := n.Client.GetCapacity(testutil.Ctx(t), &csi.GetCapacityRequest{Parameters: map[string]string{"sizeLimit": "optional"}})
	require.NoError(t, err)
	require.Positive(t, capOpt.GetAvailableCapacity())

	id := Create(t, n, "accepted", mib, map[string]string{"sizeLimit": "optional"})
	v := n.Env.Record(t, id)
	require.Nil(t, v.Quota, "accepted without a limit")
	require.Equal(t, volume.SizeLimitOptional, v.SizeLimit)
	Delete(t, n, id)
}
