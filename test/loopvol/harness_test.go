package loopvol

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const mib = int64(1) << 20

var (
	ext4Kind  = testutil.Ext4Kind
	xfsKind   = testutil.XFSKind
	blockKind = testutil.BlockKind
	allKinds  = []testutil.Kind{ext4Kind, xfsKind, blockKind}
)

// setup gives a test its own directory, with clean-up of everything mounted
// or attached under it registered first, and a node serving a pool in it.
func setup(t *testing.T) (*testutil.Node, string) {
	t.Helper()
	return setupOn(t, "")
}

// setupOn is setup with the pool at poolPath (an existing directory, such
// as testutil.BtrfsPool's mount point; "": a new plain directory).
func setupOn(t *testing.T, poolPath string) (*testutil.Node, string) {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	testutil.CleanupUnder(t, dir)
	if poolPath != "" {
		// Loop devices of images in a pool outside dir, before the pool
		// itself goes (its clean-up was registered first, so runs last).
		testutil.CleanupUnder(t, testutil.LayoutAt("", poolPath).ImagesDir())
	}
	return testutil.NewNode(t, dir, poolPath), dir
}

// setupPoolFS is setup with the pool on a filesystem of its own of size
// bytes (testutil.NewPoolFS), so that nothing else moves its figures.
func setupPoolFS(t *testing.T, size int64) (n *testutil.Node, dir, poolPath string) {
	t.Helper()
	testutil.RequireRoot(t)
	dir = t.TempDir()
	testutil.CleanupUnder(t, dir)
	poolPath = testutil.NewPoolFS(t, dir, testutil.PoolFSOptions{Size: size}).Path
	return testutil.NewNode(t, dir, poolPath), dir, poolPath
}

// vol is a volume under test on a node that may restart.
type vol struct {
	*testutil.Volume
	n *testutil.Node
}

// create creates a volume of kind k with size bytes (0: the kind's size).
func create(t *testing.T, n *testutil.Node, dir string, k testutil.Kind, name string, size int64) *vol {
	t.Helper()
	v := &vol{Volume: testutil.CreateVolume(t, n, dir, k, name, size), n: n}
	if size == 0 {
		size = k.Size
	}
	require.Equal(t, size, v.Capacity)
	return v
}

// setupVol is setup and a volume of kind k named after the test and
// suffix.
func setupVol(t *testing.T, k testutil.Kind, suffix string) (*testutil.Node, string, *vol) {
	t.Helper()
	n, dir := setup(t)
	return n, dir, create(t, n, dir, k, volName(t, suffix), 0)
}

// forKinds runs f in a subtest per kind, each on a volume of its own of
// that kind (setupVol).
func forKinds(t *testing.T, kinds []testutil.Kind, suffix string, f func(t *testing.T, v *vol)) {
	t.Helper()
	for _, k := range kinds {
		t.Run(k.Name, func(t *testing.T) {
			_, _, v := setupVol(t, k, suffix)
			f(t, v)
		})
	}
}

// setupPair is setup and two ext4 volumes, a and b.
func setupPair(t *testing.T) (n *testutil.Node, dir string, a, b *vol) {
	t.Helper()
	n, dir = setup(t)
	return n, dir, create(t, n, dir, ext4Kind, volName(t, "a"), 0), create(t, n, dir, ext4Kind, volName(t, "b"), 0)
}

// upWithData is setupVol, the volume staged, published and written with
// the test data.
func upWithData(t *testing.T, k testutil.Kind, suffix string) (*testutil.Node, string, *vol, sums) {
	t.Helper()
	n, dir, v := setupVol(t, k, suffix)
	v.Up()
	return n, dir, v, v.writeData()
}

func (v *vol) image() string { return v.n.Pool().ImagePath(v.ID) }

// device finds the loop device attached to the volume's image ("" if none)
// the way hostvol does: by device and inode.
func (v *vol) device() string {
	v.T.Helper()
	f, err := os.Open(v.image())
	require.NoError(v.T, err)
	defer f.Close()
	img, err := loop.ImageOf(f)
	require.NoError(v.T, err)
	dev, err := loop.New().Find(img, "")
	require.NoError(v.T, err)
	return dev
}

// requireOneLoop checks that exactly one loop device is attached to the
// volume's image, in sysfs and as losetup sees it.
func (v *vol) requireOneLoop() string {
	v.T.Helper()
	devs := testutil.RequireLoopsOf(v.T, v.image())
	require.Len(v.T, devs, 1, "loop devices attached to %s", v.image())
	return devs[0]
}

func requireCode(t testing.TB, want codes.Code, err error, what string) {
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
	v.T.Helper()
	random := make([]byte, randomLen)
	_, err := rand.Read(random)
	require.NoError(v.T, err)
	content := map[string][]byte{"random": random, "known": knownContent}
	out := sums{}
	for name, b := range content {
		out[name] = sha256.Sum256(b)
	}
	if v.Kind.Block {
		f, err := os.OpenFile(v.Target, os.O_RDWR, 0)
		require.NoError(v.T, err)
		defer f.Close()
		for name, b := range content {
			_, err := f.WriteAt(b, blockRegions[name].off)
			require.NoError(v.T, err)
		}
		require.NoError(v.T, f.Sync())
		return out
	}
	for name, b := range content {
		p := filepath.Join(v.Target, name)
		require.NoError(v.T, os.WriteFile(p, b, 0o644))
		f, err := os.Open(p)
		require.NoError(v.T, err)
		require.NoError(v.T, f.Sync())
		f.Close()
	}
	return out
}

// checkData reads the test data back through path (a target) and compares.
func (v *vol) checkData(path string, want sums) {
	v.T.Helper()
	got := sums{}
	if v.Kind.Block {
		for name, r := range blockRegions {
			got[name] = sha256.Sum256(readDirect(v.T, path, r.off, r.len))
		}
	} else {
		for name := range want {
			b, err := os.ReadFile(filepath.Join(path, name))
			require.NoError(v.T, err)
			got[name] = sha256.Sum256(b)
		}
		b, err := os.ReadFile(filepath.Join(path, "known"))
		require.NoError(v.T, err)
		require.Equal(v.T, knownContent, b)
	}
	require.Equal(v.T, want, got, "data of %s read at %s", v.Name, path)
}

// checkImage compares a block volume's regions in the image file itself:
// the data reached the pool, not only a page cache.
func (v *vol) checkImage(want sums) {
	v.T.Helper()
	got := sums{}
	for name, r := range blockRegions {
		got[name] = sha256.Sum256(readDirect(v.T, v.image(), r.off, r.len))
	}
	require.Equal(v.T, want, got, "data of %s in its image", v.Name)
}

// readDirect reads n bytes at off with O_DIRECT (no page cache: what the
// device or file really holds). n is rounded up to 4 KiB for the read.
func readDirect(t testing.TB, path string, off, n int64) []byte {
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

// atOnce runs call(0) ... call(n-1) in n goroutines released together,
// and returns their errors by index.
func atOnce(n int, call func(i int) error) []error {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = call(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// volName is a volume name unique within a test.
func volName(t *testing.T, suffix string) string {
	return strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name())) + "-" + suffix
}

func fmtBytes(n int64) string { return fmt.Sprintf("%d (%.1f MiB)", n, float64(n)/float64(mib)) }
