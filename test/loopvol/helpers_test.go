package loopvol

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const (
	mib = int64(1) << 20
	// rpcTimeout bounds one RPC; mkfs and resize2fs of these small images
	// take well under a second.
	rpcTimeout = time.Minute
)

// kind is one shape of volume the tests run on.
type kind struct {
	name   string
	params map[string]string
	block  bool
	fsType string // "" for block
	size   int64
}

var (
	ext4Kind  = kind{name: "ext4", params: map[string]string{"type": "loop"}, fsType: "ext4", size: 64 * mib}
	xfsKind   = kind{name: "xfs", params: map[string]string{"type": "loop", "csi.storage.k8s.io/fstype": "xfs"}, fsType: "xfs", size: 300 * mib}
	blockKind = kind{name: "block", params: map[string]string{}, block: true, size: 64 * mib}
	allKinds  = []kind{ext4Kind, xfsKind, blockKind}
)

// capability is a SINGLE_NODE_WRITER capability of the kind's access type.
func (k kind) capability() *csi.VolumeCapability {
	c := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	if k.block {
		c.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	} else {
		c.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}
	}
	return c
}

// setup gives a test its own directory, with clean-up of everything mounted
// or attached under it registered first, and a node serving a pool in it.
func setup(t *testing.T) (*Node, string) {
	t.Helper()
	return setupOn(t, "")
}

// setupOn is setup with the pool at poolPath (an existing directory, such
// as testutil.BtrfsPool's mount point; "": a new plain directory).
func setupOn(t *testing.T, poolPath string) (*Node, string) {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	CleanupUnder(t, dir)
	if poolPath != "" {
		// Loop devices of images in a pool outside dir, before the pool
		// itself goes (its clean-up was registered first, so runs last).
		CleanupUnder(t, filepath.Join(poolPath, "images"))
	}
	return NewNode(t, dir, poolPath), dir
}

// rpcCtx bounds one RPC by rpcTimeout.
func rpcCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	t.Cleanup(cancel)
	return c
}

// vol is a volume under test with its staging and target paths.
type vol struct {
	t        *testing.T
	n        *Node
	k        kind
	name, id string
	capacity int64
	staging  string
	target   string
}

// create creates a volume of kind k with size bytes (0: the kind's size).
func create(t *testing.T, n *Node, dir string, k kind, name string, size int64) *vol {
	t.Helper()
	if size == 0 {
		size = k.size
	}
	resp, err := n.Client.CreateVolume(rpcCtx(t), &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{k.capability()},
		Parameters:         k.params,
	})
	require.NoError(t, err, "CreateVolume %s", name)
	v := &vol{
		t: t, n: n, k: k, name: name,
		id:       resp.GetVolume().GetVolumeId(),
		capacity: resp.GetVolume().GetCapacityBytes(),
		staging:  filepath.Join(dir, "mnt", name, "staging"),
		target:   filepath.Join(dir, "mnt", name, "target"),
	}
	require.Equal(t, size, v.capacity)
	require.NoError(t, os.MkdirAll(v.staging, 0o750)) // the CO makes the staging directory
	return v
}

func (v *vol) image() string { return v.n.Pool().ImagePath(v.id) }

func (v *vol) stageErr() error {
	_, err := v.n.Client.NodeStageVolume(rpcCtx(v.t), &csi.NodeStageVolumeRequest{
		VolumeId:          v.id,
		StagingTargetPath: v.staging,
		VolumeCapability:  v.k.capability(),
	})
	return err
}

func (v *vol) stage() {
	v.t.Helper()
	require.NoError(v.t, v.stageErr(), "NodeStageVolume %s", v.name)
}

func (v *vol) unstage() {
	v.t.Helper()
	_, err := v.n.Client.NodeUnstageVolume(rpcCtx(v.t), &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
	require.NoError(v.t, err, "NodeUnstageVolume %s", v.name)
}

func (v *vol) publishAt(target string) {
	v.t.Helper()
	_, err := v.n.Client.NodePublishVolume(rpcCtx(v.t), &csi.NodePublishVolumeRequest{
		VolumeId:          v.id,
		StagingTargetPath: v.staging,
		TargetPath:        target,
		VolumeCapability:  v.k.capability(),
	})
	require.NoError(v.t, err, "NodePublishVolume %s at %s", v.name, target)
}

func (v *vol) publish() { v.t.Helper(); v.publishAt(v.target) }

func (v *vol) unpublishAt(target string) {
	v.t.Helper()
	_, err := v.n.Client.NodeUnpublishVolume(rpcCtx(v.t), &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: target})
	require.NoError(v.t, err, "NodeUnpublishVolume %s at %s", v.name, target)
}

func (v *vol) unpublish() { v.t.Helper(); v.unpublishAt(v.target) }

func (v *vol) deleteErr() error {
	_, err := v.n.Client.DeleteVolume(rpcCtx(v.t), &csi.DeleteVolumeRequest{VolumeId: v.id})
	return err
}

// up stages and publishes.
func (v *vol) up() { v.t.Helper(); v.stage(); v.publish() }

// down unpublishes and unstages.
func (v *vol) down() { v.t.Helper(); v.unpublish(); v.unstage() }

func (v *vol) expand(size int64) *csi.ControllerExpandVolumeResponse {
	v.t.Helper()
	resp, err := v.n.Client.ControllerExpandVolume(rpcCtx(v.t), &csi.ControllerExpandVolumeRequest{
		VolumeId:         v.id,
		CapacityRange:    &csi.CapacityRange{RequiredBytes: size},
		VolumeCapability: v.k.capability(),
	})
	require.NoError(v.t, err, "ControllerExpandVolume %s to %d", v.name, size)
	return resp
}

func (v *vol) nodeExpand(size int64) (*csi.NodeExpandVolumeResponse, error) {
	return v.n.Client.NodeExpandVolume(rpcCtx(v.t), &csi.NodeExpandVolumeRequest{
		VolumeId:          v.id,
		VolumePath:        v.target,
		StagingTargetPath: v.staging,
		CapacityRange:     &csi.CapacityRange{RequiredBytes: size},
		VolumeCapability:  v.k.capability(),
	})
}

func (v *vol) stats(path string) *csi.NodeGetVolumeStatsResponse {
	v.t.Helper()
	resp, err := v.n.Client.NodeGetVolumeStats(rpcCtx(v.t), &csi.NodeGetVolumeStatsRequest{VolumeId: v.id, VolumePath: path})
	require.NoError(v.t, err, "NodeGetVolumeStats %s at %s", v.name, path)
	return resp
}

// device finds the loop device attached to the volume's image ("" if none)
// the way hostvol does: by device and inode.
func (v *vol) device() string {
	v.t.Helper()
	f, err := os.Open(v.image())
	require.NoError(v.t, err)
	defer f.Close()
	img, err := loop.ImageOf(f)
	require.NoError(v.t, err)
	dev, err := loop.New().Find(img, "")
	require.NoError(v.t, err)
	return dev
}

// requireOneLoop checks that exactly one loop device is attached to the
// volume's image, in sysfs and as losetup sees it.
func (v *vol) requireOneLoop() string {
	v.t.Helper()
	devs, err := LoopsFor(v.image())
	require.NoError(v.t, err)
	require.Len(v.t, devs, 1, "loop devices attached to %s", v.image())
	require.Equal(v.t, devs, LosetupFor(v.t, v.image()), "losetup -j %s", v.image())
	return devs[0]
}

func requireCode(t *testing.T, want codes.Code, err error, what string) {
	t.Helper()
	require.Error(t, err, what)
	require.Equal(t, want, status.Code(err), "%s: %v", what, err)
}

// Data checks: a few MiB of random bytes and a file (or region) of known
// content, written through the published target, compared by SHA-256.

const randomLen = 4 << 20

var knownContent = bytes.Repeat([]byte("hostvol loop volume data\n"), 1000)

// region is where a block volume's test data lives on the device: 4 KiB
// aligned, for O_DIRECT reads.
type region struct{ off, len int64 }

var blockRegions = map[string]region{
	"random": {off: 1 << 20, len: randomLen},
	"known":  {off: 6 << 20, len: int64(len(knownContent))},
}

type sums map[string][32]byte

// writeData writes the test data through the target and flushes it.
func (v *vol) writeData() sums {
	v.t.Helper()
	random := make([]byte, randomLen)
	_, err := rand.Read(random)
	require.NoError(v.t, err)
	content := map[string][]byte{"random": random, "known": knownContent}
	out := sums{}
	for name, b := range content {
		out[name] = sha256.Sum256(b)
	}
	if v.k.block {
		f, err := os.OpenFile(v.target, os.O_RDWR, 0)
		require.NoError(v.t, err)
		defer f.Close()
		for name, b := range content {
			_, err := f.WriteAt(b, blockRegions[name].off)
			require.NoError(v.t, err)
		}
		require.NoError(v.t, f.Sync())
		return out
	}
	for name, b := range content {
		p := filepath.Join(v.target, name)
		require.NoError(v.t, os.WriteFile(p, b, 0o644))
		f, err := os.Open(p)
		require.NoError(v.t, err)
		require.NoError(v.t, f.Sync())
		f.Close()
	}
	return out
}

// checkData reads the test data back through path (a target) and compares.
func (v *vol) checkData(path string, want sums) {
	v.t.Helper()
	got := sums{}
	if v.k.block {
		for name, r := range blockRegions {
			got[name] = sha256.Sum256(readDirect(v.t, path, r.off, r.len))
		}
	} else {
		for name := range want {
			b, err := os.ReadFile(filepath.Join(path, name))
			require.NoError(v.t, err)
			got[name] = sha256.Sum256(b)
		}
		b, err := os.ReadFile(filepath.Join(path, "known"))
		require.NoError(v.t, err)
		require.Equal(v.t, knownContent, b)
	}
	require.Equal(v.t, want, got, "data of %s read at %s", v.name, path)
}

// checkImage compares a block volume's regions in the image file itself:
// the data reached the pool, not only a page cache.
func (v *vol) checkImage(want sums) {
	v.t.Helper()
	got := sums{}
	for name, r := range blockRegions {
		got[name] = sha256.Sum256(readDirect(v.t, v.image(), r.off, r.len))
	}
	require.Equal(v.t, want, got, "data of %s in its image", v.name)
}

// readDirect reads n bytes at off with O_DIRECT (no page cache: what the
// device or file really holds). n is rounded up to 4 KiB for the read.
func readDirect(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	require.NoError(t, err, "open %s O_DIRECT", path)
	defer unix.Close(fd)
	aligned := (n + 4095) / 4096 * 4096
	buf, err := unix.Mmap(-1, 0, int(aligned), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	require.NoError(t, err)
	defer func() { require.NoError(t, unix.Munmap(buf)) }()
	for done := int64(0); done < aligned; {
		m, err := unix.Pread(fd, buf[done:], off+done)
		require.NoError(t, err, "pread %s", path)
		require.NotZero(t, m, "pread %s: short read at %d", path, off+done)
		done += int64(m)
	}
	return bytes.Clone(buf[:n])
}

// statfs returns the filesystem figures of path.
func statfs(t *testing.T, path string) unix.Statfs_t {
	t.Helper()
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(path, &st), "statfs %s", path)
	return st
}

func totalBytes(st unix.Statfs_t) int64 { return int64(st.Blocks) * st.Bsize }
func freeBytes(st unix.Statfs_t) int64  { return int64(st.Bfree) * st.Bsize }

// blockDeviceSize is BLKGETSIZE64 of the block device (or bind-mounted
// device node) at path.
func blockDeviceSize(t *testing.T, path string) int64 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	var size uint64
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	require.Zero(t, errno, "BLKGETSIZE64 %s: %v", path, errno)
	return int64(size)
}

// hasCapSysResource reports whether this process has CAP_SYS_RESOURCE in
// its effective set (ext4 online growth needs it).
func hasCapSysResource(t *testing.T) bool {
	t.Helper()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	require.NoError(t, unix.Capget(&hdr, &data[0]))
	return data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0
}

// poolFilesystem makes a dedicated pool: an ext4 filesystem of size bytes
// in an image under dir, on a loop device, mounted at dir/pool. The caller
// registered CleanupUnder(dir), which unmounts and detaches it (after the
// volumes inside it).
func poolFilesystem(t *testing.T, dir string, size int64) string {
	t.Helper()
	img := filepath.Join(dir, "poolfs.img")
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(size))
	out, err := exec.Command("mkfs.ext4", "-F", "-q", "-m", "0", "-E", "nodiscard", img).CombinedOutput()
	require.NoError(t, err, "mkfs.ext4: %s", out)
	dev, err := loop.New().Attach(f, loop.AttachOptions{})
	require.NoError(t, err)
	mp := filepath.Join(dir, "pool")
	require.NoError(t, os.MkdirAll(mp, 0o755))
	require.NoError(t, unix.Mount(dev, mp, "ext4", 0, ""), "mount %s at %s", dev, mp)
	return mp
}

// volName is a volume name unique within a test.
func volName(t *testing.T, suffix string) string {
	return strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name())) + "-" + suffix
}

func fmtBytes(n int64) string { return fmt.Sprintf("%d (%.1f MiB)", n, float64(n)/float64(mib)) }
