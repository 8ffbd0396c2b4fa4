package loopvol

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// TestDataSurvivesRestage: data written through the target is still there,
// byte for byte, after unpublish, unstage (loop device detached), stage
// (attached again) and publish.
func TestDataSurvivesRestage(t *testing.T) {
	testutil.RequireRoot(t)
	forKinds(t, allKinds, "data", func(t *testing.T, v *vol) {
		v.Up()
		v.requireOneLoop()
		want := v.writeData()
		v.checkData(v.Target, want)

		v.Down()
		devs, err := testutil.LoopsFor(v.image())
		require.NoError(t, err)
		require.Empty(t, devs, "unstage detaches the image")
		require.Empty(t, testutil.MountsUnder(t, filepath.Dir(v.Target)), "unstage leaves no mount")
		if v.Kind.Block {
			v.checkImage(want)
		}

		v.Up()
		v.requireOneLoop()
		v.checkData(v.Target, want)
		v.Down()
		require.NoError(t, v.DeleteErr())
		_, err = os.Stat(v.image())
		require.ErrorIs(t, err, os.ErrNotExist)
	})
}

// TestReboot simulates a node reboot with the volume staged and published:
// the driver stops, every mount the test made goes, the loop device is
// detached; a new driver on the same state directory and pool stages and
// publishes again from its records, at the same paths and at a new target.
func TestReboot(t *testing.T) {
	testutil.RequireRoot(t)
	for _, k := range allKinds {
		t.Run(k.Name, func(t *testing.T) {
			n, dir, v, want := upWithData(t, k, "reboot")

			// The reboot: driver gone, mounts gone, loop device gone.
			n.Stop()
			for _, m := range testutil.MountsUnder(t, filepath.Join(dir, "mnt")) {
				require.NoError(t, unix.Unmount(m, 0), "unmount %s", m)
			}
			dev := v.device()
			require.NotEmpty(t, dev, "the staged image is attached")
			require.NoError(t, loop.New().Detach(dev))
			require.Empty(t, v.device())

			n.Start()
			v.Up()
			target2 := filepath.Join(dir, "mnt", v.Name, "target2")
			v.PublishAt(target2)
			v.checkData(v.Target, want)
			v.checkData(target2, want)
			v.requireOneLoop()

			v.UnpublishAt(target2)
			v.Down()
			require.NoError(t, v.DeleteErr())
			devs, err := testutil.LoopsFor(v.image())
			require.NoError(t, err)
			require.Empty(t, devs)
			_, err = os.Stat(v.image())
			require.ErrorIs(t, err, os.ErrNotExist)
		})
	}
}

// TestRebootDevicesSwapped: after a reboot the loop device a volume's node
// state remembers may hold another volume's image. Here, after the reboot
// and the driver's start, B's image is attached to A's old device (by hand,
// as if B had been staged first) and B and A are staged: B uses the device
// its image is on, A must not trust its hint, and each volume must end on
// its own device with its own data.
func TestRebootDevicesSwapped(t *testing.T) {
	n, dir, a, b := setupPair(t)
	a.Up()
	b.Up()
	wantA, wantB := a.writeData(), b.writeData()
	devA, devB := a.requireOneLoop(), b.requireOneLoop()

	n.Stop()
	for _, m := range testutil.MountsUnder(t, filepath.Join(dir, "mnt")) {
		require.NoError(t, unix.Unmount(m, 0), "unmount %s", m)
	}
	require.NoError(t, loop.New().Detach(devB))
	require.NoError(t, loop.New().Detach(devA))

	// After start-up (which would detach a device no staging holds, such as
	// one attached before it), B's image lands on A's old device.
	n.Start()
	attachAt(t, devA, b.image())
	b.Up()
	require.Equal(t, devA, b.requireOneLoop(), "b uses the device its image is attached to")
	a.Up()
	newA := a.requireOneLoop()
	require.NotEqual(t, devA, newA, "a's remembered device now holds b")
	t.Logf("a: %s -> %s, b: %s -> %s", devA, newA, devB, devA)
	a.checkData(a.Target, wantA)
	b.checkData(b.Target, wantB)
	for _, v := range []*vol{a, b} {
		v.Down()
		require.NoError(t, v.DeleteErr())
	}
}

// attachAt attaches the file at path to the loop device dev, which must be
// free (LOOP_SET_FD; loop.Manager only attaches to a device of its choice).
func attachAt(t *testing.T, dev, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.IoctlSetInt(fd, unix.LOOP_SET_FD, int(f.Fd())), "LOOP_SET_FD %s %s (taken by another process meanwhile?)", dev, path)
}

// TestExpand grows each kind of volume while it is published: XFS online,
// ext4 offline at the next stage when this process may not grow it online
// (no CAP_SYS_RESOURCE), block by refreshing the loop device. Shrinking is
// OUT_OF_RANGE.
func TestExpand(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("xfs_online", func(t *testing.T) {
		_, _, v, want := upWithData(t, xfsKind, "grow")
		before := totalBytes(statfs(t, v.Target))

		newSize := v.Capacity + 100*mib
		resp := v.Expand(newSize)
		require.Equal(t, newSize, resp.GetCapacityBytes())
		require.True(t, resp.GetNodeExpansionRequired())
		nresp, err := v.NodeExpandErr(newSize)
		require.NoError(t, err)
		require.Equal(t, newSize, nresp.GetCapacityBytes())

		after := totalBytes(statfs(t, v.Target))
		require.Equal(t, 100*mib, after-before, "statfs total grows by the expansion: %s -> %s", fmtBytes(before), fmtBytes(after))
		require.Equal(t, newSize, blockDeviceSize(t, v.device()))
		v.checkData(v.Target, want)
		v.shrinkRefused()
	})

	t.Run("ext4", func(t *testing.T) {
		_, _, v, want := upWithData(t, ext4Kind, "grow")
		before := totalBytes(statfs(t, v.Target))

		newSize := 2 * v.Capacity
		resp := v.Expand(newSize)
		require.Equal(t, newSize, resp.GetCapacityBytes())
		require.True(t, resp.GetNodeExpansionRequired())
		_, err := v.NodeExpandErr(newSize)
		if testutil.HasCapSysResource() {
			require.NoError(t, err, "online ext4 growth with CAP_SYS_RESOURCE")
		} else {
			// EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE: the node says
			// why and grows the filesystem at the next stage.
			requireCode(t, codes.FailedPrecondition, err, "NodeExpandVolume of mounted ext4 without CAP_SYS_RESOURCE")
			require.Equal(t, before, totalBytes(statfs(t, v.Target)), "filesystem unchanged until restaged")
			// CSI: a volume already staged at this path "MUST reply 0
			// OK", growth pending or not (kubelet stages again after
			// its own restart).
			require.NoError(t, v.StageErr(), "NodeStageVolume again while mounted, growth pending")
			require.Equal(t, before, totalBytes(statfs(t, v.Target)))
			v.Down()
			v.Up()
		}
		after := totalBytes(statfs(t, v.Target))
		grown := after - before
		require.LessOrEqual(t, after, newSize)
		// ext4 statfs leaves out its metadata: inode tables of the new
		// block groups take a little of the growth.
		require.Greater(t, grown, (newSize-v.Capacity)*9/10, "statfs total %s -> %s", fmtBytes(before), fmtBytes(after))
		v.checkData(v.Target, want)
		nresp, err := v.NodeExpandErr(newSize)
		require.NoError(t, err, "NodeExpandVolume once the filesystem has grown")
		require.Equal(t, newSize, nresp.GetCapacityBytes())
		v.shrinkRefused()
	})

	t.Run("block", func(t *testing.T) {
		_, _, v, want := upWithData(t, blockKind, "grow")
		require.Equal(t, v.Capacity, blockDeviceSize(t, v.Target))

		newSize := v.Capacity + 32*mib
		resp := v.Expand(newSize)
		require.True(t, resp.GetNodeExpansionRequired())
		nresp, err := v.NodeExpandErr(newSize)
		require.NoError(t, err)
		require.Equal(t, newSize, nresp.GetCapacityBytes())
		require.Equal(t, newSize, blockDeviceSize(t, v.Target), "BLKGETSIZE64 of the published device")
		st := v.Stats(v.Target)
		require.Equal(t, newSize, st.GetUsage()[0].GetTotal())
		v.checkData(v.Target, want)
		v.shrinkRefused()
	})
}

// shrinkRefused: a capacity range whose limit is under the current size
// would shrink the volume: OUT_OF_RANGE, and nothing changes.
func (v *vol) shrinkRefused() {
	v.T.Helper()
	cur := v.Stats(v.Target)
	_, err := v.n.Client.ControllerExpandVolume(testutil.Ctx(v.T), &csi.ControllerExpandVolumeRequest{
		VolumeId:      v.ID,
		CapacityRange: &csi.CapacityRange{RequiredBytes: v.Kind.Size / 2, LimitBytes: v.Kind.Size / 2},
	})
	requireCode(v.T, codes.OutOfRange, err, "shrinking ControllerExpandVolume")
	require.Equal(v.T, cur.GetUsage()[0].GetTotal(), v.Stats(v.Target).GetUsage()[0].GetTotal())
}

// TestHardLimit: a loop volume is a hard limit. Writing 100 MiB into a
// 64 MiB ext4 volume fails with ENOSPC, and the pool (a dedicated
// filesystem, so nothing else moves its figures) loses no more than the
// volume's size.
func TestHardLimit(t *testing.T) {
	n, dir, poolPath := setupPoolFS(t, 600*mib)
	freeBefore := freeBytes(statfs(t, poolPath))

	v := create(t, n, dir, ext4Kind, volName(t, "limit"), 64*mib)
	v.Up()
	f, err := os.Create(filepath.Join(v.Target, "big"))
	require.NoError(t, err)
	chunk := make([]byte, mib)
	var written int64
	for written < 100*mib {
		m, werr := f.Write(chunk)
		written += int64(m)
		if err = werr; err != nil {
			break
		}
	}
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	require.ErrorIs(t, err, syscall.ENOSPC, "writing 100 MiB into a 64 MiB volume")
	require.Less(t, written, 64*mib)
	t.Logf("wrote %s before ENOSPC", fmtBytes(written))

	unix.Sync()
	_, allocated, err := n.Pool().ImageUsage(v.ID)
	require.NoError(t, err)
	require.LessOrEqual(t, allocated, v.Capacity, "image allocation")
	dropped := freeBefore - freeBytes(statfs(t, poolPath))
	const slack = 4 << 20 // the pool's own metadata for the image (extent tree)
	require.LessOrEqual(t, dropped, v.Capacity+slack, "pool free space dropped by %s", fmtBytes(dropped))
	require.Greater(t, dropped, written/2, "the data did land in the pool")
}

// TestConcurrentStage: eight NodeStageVolume calls at once on one volume
// and staging path. The per-volume lock lets each either do the work or
// return ABORTED; the image is never attached twice.
func TestConcurrentStage(t *testing.T) {
	testutil.RequireRoot(t)
	forKinds(t, []testutil.Kind{ext4Kind, blockKind}, "race", func(t *testing.T, v *vol) {
		const calls = 8
		errs := atOnce(calls, func(int) error { return v.StageErr() })
		ok := 0
		for i, err := range errs {
			switch status.Code(err) {
			case codes.OK:
				ok++
			case codes.Aborted:
			default:
				t.Errorf("call %d: %v (want OK or ABORTED)", i, err)
			}
		}
		require.Positive(t, ok, "at least one NodeStageVolume succeeds")
		t.Logf("%d OK, %d ABORTED", ok, calls-ok)
		v.requireOneLoop()
		if !v.Kind.Block {
			require.Equal(t, []string{v.Staging}, testutil.MountsUnder(t, v.Staging), "one mount at the staging path")
		}
		v.Stage() // CSI: staged already at this path, reply OK
		v.requireOneLoop()
		v.Publish()
		v.Down()
		require.NoError(t, v.DeleteErr())
	})
}

// TestConcurrentStageDistinctVolumes: eight volumes staged at once race
// for free loop devices; each gets its own.
func TestConcurrentStageDistinctVolumes(t *testing.T) {
	n, dir := setup(t)
	const count = 8
	vols := make([]*vol, count)
	for i := range vols {
		k := ext4Kind
		if i%2 == 1 {
			k = blockKind
		}
		vols[i] = create(t, n, dir, k, volName(t, string(rune('a'+i))), 0)
	}
	errs := atOnce(count, func(i int) error { return vols[i].StageErr() })
	seen := map[string]string{}
	for i, v := range vols {
		require.NoError(t, errs[i], "NodeStageVolume %s", v.Name)
		dev := v.requireOneLoop()
		require.NotContains(t, seen, dev, "%s and %s share a loop device", v.Name, seen[dev])
		seen[dev] = v.Name
	}
	for _, v := range vols {
		v.Unstage()
		require.NoError(t, v.DeleteErr())
	}
}

// TestDeleteRefusedWhileInUse: DeleteVolume is FAILED_PRECONDITION while
// the volume is staged or published, and while its image is attached to a
// loop device that something holds open though no staging is recorded
// (attached by hand and opened here). A device that nothing holds (left by
// a stage a crash cut short) does not block it: DeleteVolume detaches it.
func TestDeleteRefusedWhileInUse(t *testing.T) {
	testutil.RequireRoot(t)
	forKinds(t, []testutil.Kind{ext4Kind, blockKind}, "busy", func(t *testing.T, v *vol) {

		v.Stage()
		requireCode(t, codes.FailedPrecondition, v.DeleteErr(), "DeleteVolume while staged")
		v.Publish()
		requireCode(t, codes.FailedPrecondition, v.DeleteErr(), "DeleteVolume while published")
		v.Unpublish()
		requireCode(t, codes.FailedPrecondition, v.DeleteErr(), "DeleteVolume while still staged")
		v.Unstage()

		f, err := os.OpenFile(v.image(), os.O_RDWR, 0)
		require.NoError(t, err)
		dev, err := loop.New().Attach(f, loop.AttachOptions{})
		f.Close()
		require.NoError(t, err)
		holder, err := os.Open(dev)
		require.NoError(t, err)
		requireCode(t, codes.FailedPrecondition, v.DeleteErr(), "DeleteVolume while attached by hand and held open")
		_, err = os.Stat(v.image())
		require.NoError(t, err, "a refused delete keeps the image")
		require.NoError(t, holder.Close())
		require.NoError(t, loop.New().Detach(dev)) // the refused delete left autoclear; make sure

		f, err = os.OpenFile(v.image(), os.O_RDWR, 0)
		require.NoError(t, err)
		_, err = loop.New().Attach(f, loop.AttachOptions{}) // DeleteVolume below must find and detach it
		f.Close()
		require.NoError(t, err)
		require.NoError(t, v.DeleteErr(), "DeleteVolume detaches a device nothing holds")
		require.Empty(t, testutil.LosetupFor(t, v.image()))
		_, err = os.Stat(v.image())
		require.ErrorIs(t, err, os.ErrNotExist)
		require.NoError(t, v.DeleteErr(), "deleting a deleted volume succeeds")
	})
}

// TestGetCapacityPromisedSpace: on a small dedicated pool, a sparse 250 MiB
// loop volume takes 250 MiB from GetCapacity though it occupies little of
// the pool, and creating volumes until nothing more can be promised ends
// with RESOURCE_EXHAUSTED, leaving neither an image nor a record behind.
func TestGetCapacityPromisedSpace(t *testing.T) {
	n, dir, _ := setupPoolFS(t, 600*mib)
	capacity := func() int64 {
		t.Helper()
		resp, err := n.Client.GetCapacity(testutil.Ctx(t), &csi.GetCapacityRequest{
			VolumeCapabilities: []*csi.VolumeCapability{ext4Kind.Capability()},
			Parameters:         ext4Kind.Params,
		})
		require.NoError(t, err)
		return resp.GetAvailableCapacity()
	}

	const size = 250 * mib
	c0 := capacity()
	require.Greater(t, c0, 2*size, "a 600 MiB pool can promise two 250 MiB volumes")
	v := create(t, n, dir, ext4Kind, volName(t, "0"), size)
	c1 := capacity()
	_, allocated, err := n.Pool().ImageUsage(v.ID)
	require.NoError(t, err)
	require.Less(t, allocated, size/4, "the image is sparse")
	require.InDelta(t, size, c0-c1, float64(2*mib), "GetCapacity drops by the promised size: %s -> %s", fmtBytes(c0), fmtBytes(c1))

	var names []string
	for i := 1; ; i++ {
		require.Less(t, i, 10, "the pool kept promising")
		name := volName(t, string(rune('0'+i)))
		before := capacity()
		_, err := n.Client.CreateVolume(testutil.Ctx(t), &csi.CreateVolumeRequest{
			Name:               name,
			CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
			VolumeCapabilities: []*csi.VolumeCapability{ext4Kind.Capability()},
			Parameters:         ext4Kind.Params,
		})
		if err == nil {
			require.GreaterOrEqual(t, before, size, "created although GetCapacity said %s", fmtBytes(before))
			names = append(names, name)
			continue
		}
		requireCode(t, codes.ResourceExhausted, err, "CreateVolume beyond what the pool can promise")
		require.Less(t, before, size, "refused although GetCapacity said %s", fmtBytes(before))
		id := volumeid.FromName(name)
		_, err = os.Stat(n.Pool().ImagePath(id))
		require.ErrorIs(t, err, os.ErrNotExist, "no partial image")
		_, err = os.Stat(n.Layout().RecordPath(id))
		require.ErrorIs(t, err, os.ErrNotExist, "no record")
		list, err := n.Client.ListVolumes(testutil.Ctx(t), &csi.ListVolumesRequest{})
		require.NoError(t, err)
		require.Len(t, list.GetEntries(), 1+len(names))
		for _, e := range list.GetEntries() {
			require.NotEqual(t, id, e.GetVolume().GetVolumeId())
		}
		images, err := filepath.Glob(filepath.Join(n.Layout().ImagesDir(), "*"))
		require.NoError(t, err)
		require.Len(t, images, 1+len(names), "images in the pool: %v", images)
		require.Equal(t, before, capacity(), "a refused create promises nothing")
		break
	}
	require.NotEmpty(t, names, "a second 250 MiB volume fits a 600 MiB pool")

	// A restarted driver rebuilds its promises from the records and images.
	c2 := capacity()
	n.Stop()
	n.Start()
	require.InDelta(t, c2, capacity(), float64(mib), "GetCapacity after a driver restart")

	// Growing a volume promises its growth; deleting volumes gives their
	// promises back.
	c2 = capacity()
	resp := v.Expand(size + 32*mib)
	require.Equal(t, size+32*mib, resp.GetCapacityBytes())
	require.InDelta(t, 32*mib, c2-capacity(), float64(mib), "GetCapacity drops by the growth")
	require.NoError(t, v.DeleteErr())
	for _, name := range names {
		_, err := n.Client.DeleteVolume(testutil.Ctx(t), &csi.DeleteVolumeRequest{VolumeId: volumeid.FromName(name)})
		require.NoError(t, err)
	}
	require.InDelta(t, c0, capacity(), float64(2*mib), "an empty pool promises what it did at first")
}

// TestNodeGetVolumeStats: a loop volume reports its own filesystem's bytes
// and inodes, not the pool's; a block volume reports its size.
func TestNodeGetVolumeStats(t *testing.T) {
	testutil.RequireRoot(t)
	forKinds(t, []testutil.Kind{ext4Kind, xfsKind}, "stats", func(t *testing.T, v *vol) {
		v.Up()
		for _, path := range []string{v.Target, v.Staging} {
			bytes0, inodes0 := usage(t, v.Stats(path))
			require.LessOrEqual(t, bytes0.GetTotal(), v.Capacity)
			// Filesystem overhead: ext4 journal and inode tables, the
			// XFS log (64 MiB of a 300 MiB volume).
			require.Greater(t, bytes0.GetTotal(), v.Capacity*3/4, "bytes total %s of %s", fmtBytes(bytes0.GetTotal()), fmtBytes(v.Capacity))
			st := statfs(t, path)
			require.Equal(t, totalBytes(st), bytes0.GetTotal())
			require.Positive(t, inodes0.GetTotal())
			require.Equal(t, int64(st.Files), inodes0.GetTotal())
		}
		bytes0, inodes0 := usage(t, v.Stats(v.Target))
		const grow = 16 * mib
		require.NoError(t, os.WriteFile(filepath.Join(v.Target, "f"), make([]byte, grow), 0o644))
		unix.Sync()
		bytes1, inodes1 := usage(t, v.Stats(v.Target))
		require.GreaterOrEqual(t, bytes1.GetUsed()-bytes0.GetUsed(), grow, "used bytes %s -> %s", fmtBytes(bytes0.GetUsed()), fmtBytes(bytes1.GetUsed()))
		require.Greater(t, inodes1.GetUsed(), inodes0.GetUsed())
		require.Equal(t, bytes0.GetTotal(), bytes1.GetTotal())
	})
	t.Run("block", func(t *testing.T) {
		_, _, v := setupVol(t, blockKind, "stats")
		v.Up()
		resp := v.Stats(v.Target)
		require.Len(t, resp.GetUsage(), 1)
		require.Equal(t, csi.VolumeUsage_BYTES, resp.GetUsage()[0].GetUnit())
		require.Equal(t, v.Capacity, resp.GetUsage()[0].GetTotal())
	})
}

func usage(t *testing.T, resp *csi.NodeGetVolumeStatsResponse) (bytes, inodes *csi.VolumeUsage) {
	t.Helper()
	for _, u := range resp.GetUsage() {
		switch u.GetUnit() {
		case csi.VolumeUsage_BYTES:
			bytes = u
		case csi.VolumeUsage_INODES:
			inodes = u
		}
	}
	require.NotNil(t, bytes, "BYTES usage")
	require.NotNil(t, inodes, "INODES usage")
	return bytes, inodes
}
