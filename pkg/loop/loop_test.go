package loop

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/test/testutil/needs"
)

const mib = 1 << 20

// newImage creates a sparse image file of size bytes in dir and opens it
// read-write; the file is closed in t.Cleanup.
func newImage(t *testing.T, dir, name string, size int64) (*os.File, Image) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	require.NoError(t, f.Truncate(size))
	img, err := ImageOf(f)
	require.NoError(t, err)
	return f, img
}

// attach attaches f and registers its detach in t.Cleanup, which runs even
// when the test fails. The cleanup detaches only while the device is still
// backed by this image: once the test detached it, another process may have
// taken the device.
func attach(t *testing.T, m Manager, f *os.File, opts AttachOptions) string {
	t.Helper()
	img, err := ImageOf(f)
	require.NoError(t, err)
	dev, err := m.Attach(f, opts)
	require.NoError(t, err)
	cleanupDetach(t, dev, img)
	return dev
}

func cleanupDetach(t *testing.T, dev string, img Image) {
	t.Cleanup(func() {
		ours, err := backedBy(dev, img)
		if err != nil {
			t.Errorf("cleanup: check %s: %v", dev, err)
			return
		}
		if !ours {
			return
		}
		if err := New().Detach(dev); err != nil {
			t.Errorf("cleanup: detach %s: %v", dev, err)
		}
		if ours, err := backedBy(dev, img); err != nil || ours {
			t.Errorf("cleanup: %s still attached to %s (err %v)", dev, img, err)
		}
	})
}

func TestAttachFindDetach(t *testing.T) {
	needs.Root(t)
	m := New()
	dir := t.TempDir()
	// A long name: lo_file_name keeps 63 bytes of the path.
	long := strings.Repeat("x", 80) + ".img"
	f, img := newImage(t, dir, long, 64*mib)
	other, _ := newImage(t, dir, "other.img", 8*mib)

	dev := attach(t, m, f, AttachOptions{})
	otherDev := attach(t, m, other, AttachOptions{})
	require.NotEqual(t, dev, otherDev)
	// The device keeps its own reference and has no autoclear: closing
	// our descriptor changes nothing.
	require.NoError(t, f.Close())

	info, err := status(dev)
	require.NoError(t, err)
	require.Zero(t, info.Flags&unix.LO_FLAGS_AUTOCLEAR, "no autoclear")
	require.Equal(t, img.Path[:unix.LO_NAME_SIZE-1], unix.ByteSliceToString(info.File_name[:]), "lo_file_name")
	b, err := os.ReadFile(filepath.Join(sysBlock, filepath.Base(dev), "loop", "backing_file"))
	require.NoError(t, err)
	require.Equal(t, img.Path, strings.TrimSpace(string(b)))

	for _, tc := range []struct {
		name, hint string
	}{
		{name: "right_hint", hint: dev},
		{name: "no_hint", hint: ""},
		{name: "hint_attached_to_other_image", hint: otherDev},
		{name: "hint_missing_path", hint: filepath.Join(dir, "loop7")},
		{name: "hint_no_such_device", hint: "/dev/loop999999"},
		{name: "hint_not_a_loop_device", hint: filepath.Join(dir, "other.img")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.Find(img, tc.hint)
			require.NoError(t, err)
			require.Equal(t, dev, got)
		})
	}
	_, err = os.Stat("/dev/loop999999")
	require.ErrorIs(t, err, os.ErrNotExist, "no node made for a device the kernel does not have")

	size, err := m.Size(dev)
	require.NoError(t, err)
	require.EqualValues(t, 64*mib, size)

	require.NoError(t, m.Detach(dev))
	got, err := m.Find(img, dev)
	require.NoError(t, err)
	require.Empty(t, got, "detached")
	detachAgain(t, m, dev)

	// The other image is untouched.
	got, err = m.Find(mustImage(t, other), "")
	require.NoError(t, err)
	require.Equal(t, otherDev, got)
}

// detachAgain checks that detaching a detached device is fine. Other
// processes may attach their files to dev as soon as we detached it, so it
// first claims dev exclusively (O_EXCL), which makes their LOOP_CONFIGURE or
// LOOP_SET_FD fail with EBUSY (they retry elsewhere), and detaches only if
// dev is still free. It is never a foreign device.
func detachAgain(t *testing.T, m Manager, dev string) {
	t.Helper()
	claim, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Logf("not detaching %s again: cannot claim it: %v", dev, err)
		return
	}
	defer unix.Close(claim)
	if _, err := statusFD(dev, claim); !errors.Is(err, ErrNotAttached) {
		t.Logf("not detaching %s again: another process attached it (%v)", dev, err)
		return
	}
	require.NoError(t, m.Detach(dev), "detaching twice is fine")
}

func mustImage(t *testing.T, f *os.File) Image {
	t.Helper()
	img, err := ImageOf(f)
	require.NoError(t, err)
	return img
}

func TestRefreshPicksUpGrownFile(t *testing.T) {
	needs.Root(t)
	m := New()
	f, _ := newImage(t, t.TempDir(), "grow.img", 32*mib)
	dev := attach(t, m, f, AttachOptions{DirectIO: true})

	requireRefresh(t, m, dev, f, 32*mib, 96*mib)
}

// requireRefresh checks the Size and Refresh contract, the same for the
// fake and the kernel: dev, attached to img of size bytes, keeps that size
// after img grows to grown bytes, until Refresh.
func requireRefresh(t *testing.T, m Manager, dev string, img *os.File, size, grown int64) {
	t.Helper()
	got, err := m.Size(dev)
	require.NoError(t, err)
	require.EqualValues(t, size, got)
	require.NoError(t, img.Truncate(grown))
	got, err = m.Size(dev)
	require.NoError(t, err)
	require.EqualValues(t, size, got, "the device keeps its size until Refresh")
	require.NoError(t, m.Refresh(dev))
	got, err = m.Size(dev)
	require.NoError(t, err)
	require.EqualValues(t, grown, got)
}

// supportsODirect probes the filesystem of path the way the loop driver
// needs it: an O_DIRECT open.
func supportsODirect(t *testing.T, path string) bool {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) {
		return false
	}
	require.NoError(t, err)
	require.NoError(t, unix.Close(fd))
	return true
}

// noConfigure is LOOP_CONFIGURE on a kernel before 5.8.
func noConfigure(int, int, string, bool) error { return unix.ENOTTY }

func TestDirectIO(t *testing.T) {
	needs.Root(t)
	for _, tc := range []struct {
		name   string
		legacy bool
		dio    bool
	}{
		{name: "configure_direct", dio: true},
		{name: "configure_buffered", dio: false},
		{name: "set_fd_direct", legacy: true, dio: true},
		{name: "set_fd_buffered", legacy: true, dio: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager()
			if tc.legacy {
				m.configure = noConfigure
			}
			f, img := newImage(t, t.TempDir(), "dio.img", 16*mib)
			want := tc.dio && supportsODirect(t, img.Path)
			dev := attach(t, m, f, AttachOptions{DirectIO: tc.dio})

			got, err := directIO(dev)
			require.NoError(t, err)
			require.Equal(t, want, got)
			info, err := status(dev)
			require.NoError(t, err)
			require.Equal(t, want, info.Flags&unix.LO_FLAGS_DIRECT_IO != 0, "lo_flags agrees with sysfs")
			require.Equal(t, img.Path, unix.ByteSliceToString(info.File_name[:]))

			found, err := m.Find(img, "")
			require.NoError(t, err)
			require.Equal(t, dev, found)
			size, err := m.Size(dev)
			require.NoError(t, err)
			require.EqualValues(t, 16*mib, size)
		})
	}
}

// ramfs has no direct I/O: LOOP_CONFIGURE with LO_FLAGS_DIRECT_IO attaches
// buffered there (6.18; other kernels say EINVAL, see TestAttachFallbacks),
// LOOP_SET_DIRECT_IO fails with EINVAL. Either way Attach succeeds buffered.
func TestDirectIORefusedFallsBackToBuffered(t *testing.T) {
	needs.Root(t)
	dir := t.TempDir()
	require.NoError(t, unix.Mount("ramfs", dir, "ramfs", 0, ""))
	// Registered before attach, so it runs after the detach.
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("cleanup: unmount %s: %v", dir, err)
		}
	})
	f, img := newImage(t, dir, "ram.img", 4*mib)
	require.False(t, supportsODirect(t, img.Path), "ramfs without O_DIRECT is the premise")
	for _, tc := range []struct {
		name   string
		legacy bool
	}{
		{name: "configure"},
		{name: "set_fd", legacy: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager()
			if tc.legacy {
				m.configure = noConfigure
			}
			dev := attach(t, m, f, AttachOptions{DirectIO: true})
			got, err := directIO(dev)
			require.NoError(t, err)
			require.False(t, got)
			require.NoError(t, m.Detach(dev))
		})
	}
}

// How Attach reacts to LOOP_CONFIGURE errors this kernel does not produce:
// each case wraps the real ioctl, so the device is attached for real.
func TestAttachFallbacks(t *testing.T) {
	needs.Root(t)
	realConfigure := configure
	for _, tc := range []struct {
		name string
		dio  bool
		// fail returns the error for LOOP_CONFIGURE call number i (from
		// 0), or nil to run the real one.
		fail func(i int, dio bool) error
		// wantCalls is the directIO argument of each call for one free
		// device. Other processes attaching at the same time can make
		// Attach try more devices: the pattern repeats, at least
		// minRounds times.
		wantCalls []bool
		minRounds int
		wantErr   error // nil: attached
		wantDIO   bool  // when the filesystem does direct I/O
	}{
		{
			name: "direct_io_refused_with_einval",
			dio:  true,
			fail: func(_ int, dio bool) error {
				if dio {
					return unix.EINVAL
				}
				return nil
			},
			wantCalls: []bool{true, false},
			wantDIO:   false,
		},
		{
			name:      "configure_unknown_enotty",
			dio:       true,
			fail:      func(int, bool) error { return unix.ENOTTY },
			wantCalls: []bool{true},
			wantDIO:   true, // LOOP_SET_DIRECT_IO
		},
		{
			name:      "configure_unknown_einval",
			dio:       true,
			fail:      func(int, bool) error { return unix.EINVAL },
			wantCalls: []bool{true, false},
			wantDIO:   true,
		},
		{
			name:      "configure_unknown_einval_buffered",
			dio:       false,
			fail:      func(int, bool) error { return unix.EINVAL },
			wantCalls: []bool{false},
			wantDIO:   false,
		},
		{
			name: "lost_race_ebusy",
			dio:  true,
			fail: func(i int, _ bool) error {
				if i < 2 { // another attacher took the first two free devices
					return unix.EBUSY
				}
				return nil
			},
			wantCalls: []bool{true},
			minRounds: 3,
			wantDIO:   true,
		},
		{
			name:      "other_error",
			dio:       true,
			fail:      func(int, bool) error { return unix.EIO },
			wantCalls: []bool{true},
			wantErr:   unix.EIO,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, img := newImage(t, t.TempDir(), "fallback.img", 4*mib)
			var calls []bool
			m := newManager()
			m.configure = func(fd, backingFD int, name string, dio bool) error {
				calls = append(calls, dio)
				if err := tc.fail(len(calls)-1, dio); err != nil {
					return err
				}
				return realConfigure(fd, backingFD, name, dio)
			}
			dev, err := m.Attach(f, AttachOptions{DirectIO: tc.dio})
			if err == nil {
				cleanupDetach(t, dev, img)
			}
			rounds := max(tc.minRounds, 1)
			if tc.wantErr == nil { // EBUSY from others adds rounds
				rounds = max(rounds, len(calls)/len(tc.wantCalls))
			}
			require.Equal(t, slices.Repeat(tc.wantCalls, rounds), calls)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				got, err := m.Find(img, "")
				require.NoError(t, err)
				require.Empty(t, got, "nothing attached")
				return
			}
			require.NoError(t, err)
			got, err := m.Find(img, dev)
			require.NoError(t, err)
			require.Equal(t, dev, got)
			dio, err := directIO(dev)
			require.NoError(t, err)
			require.Equal(t, tc.wantDIO && supportsODirect(t, img.Path), dio)
		})
	}
}

func TestConcurrentAttach(t *testing.T) {
	needs.Root(t)
	const n = 8
	m := New()
	dir := t.TempDir()
	files := make([]*os.File, n)
	imgs := make([]Image, n)
	for i := range n {
		files[i], imgs[i] = newImage(t, dir, fmt.Sprintf("img%d", i), int64(i+1)*mib)
	}
	devs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			devs[i], errs[i] = m.Attach(files[i], AttachOptions{DirectIO: i%2 == 0})
		})
	}
	close(start)
	wg.Wait()
	for i := range n { // every device attached is detached, before any assertion
		if errs[i] == nil {
			cleanupDetach(t, devs[i], imgs[i])
		}
	}
	seen := map[string]int{}
	for i := range n {
		require.NoError(t, errs[i], "image %d", i)
		prev, dup := seen[devs[i]]
		require.False(t, dup, "images %d and %d both got %s", prev, i, devs[i])
		seen[devs[i]] = i
	}
	for i := range n {
		got, err := m.Find(imgs[i], "")
		require.NoError(t, err)
		require.Equal(t, devs[i], got, "image %d", i)
		size, err := m.Size(devs[i])
		require.NoError(t, err)
		require.EqualValues(t, int64(i+1)*mib, size, "image %d", i)
	}
}

// The device and inode identify the image whatever path reaches it: a
// symlink, or a hard link whose path and name differ from the sysfs
// backing_file (as a path in another mount namespace would).
func TestImageOfOtherPath(t *testing.T) {
	needs.Root(t)
	m := New()
	dir := t.TempDir()
	f, img := newImage(t, dir, "vol.img", 8*mib)
	dev := attach(t, m, f, AttachOptions{})

	sym := filepath.Join(dir, "sym")
	require.NoError(t, os.Symlink(img.Path, sym))
	hard := filepath.Join(dir, "sub", "renamed")
	require.NoError(t, os.Mkdir(filepath.Dir(hard), 0o700))
	require.NoError(t, os.Link(img.Path, hard))

	for _, p := range []string{sym, hard} {
		g, err := os.Open(p)
		require.NoError(t, err)
		other, err := ImageOf(g)
		require.NoError(t, g.Close())
		require.NoError(t, err)
		require.Equal(t, p, other.Path)
		require.True(t, other.Same(img), "%s: %v vs %v", p, other, img)
		got, err := m.Find(other, "")
		require.NoError(t, err)
		require.Equal(t, dev, got, p)
	}
}

// A device still open elsewhere is only marked to detach at its last close:
// Detach says ErrBusy, and the device goes when the holder closes.
func TestDetachBusy(t *testing.T) {
	needs.Root(t)
	m := newManager()
	m.detachWait = 50 * time.Millisecond
	f, img := newImage(t, t.TempDir(), "busy.img", 8*mib)
	dev := attach(t, m, f, AttachOptions{})

	holder, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = unix.Close(holder)
		}
	})
	err = m.Detach(dev)
	require.ErrorIs(t, err, ErrBusy)
	got, err := m.Find(img, dev)
	require.NoError(t, err)
	require.Equal(t, dev, got, "still attached while held")

	require.NoError(t, unix.Close(holder))
	closed = true
	// Our close is the last one unless another process is looking at the
	// device right now (losetup, udev, another Find's scan).
	require.Eventually(t, func() bool {
		got, err := m.Find(img, dev)
		require.NoError(t, err)
		return got == ""
	}, 2*time.Second, 10*time.Millisecond, "the last close detaches it")
	detachAgain(t, m, dev)
}

// In a container /dev may be a tmpfs the kernel does not populate: the
// /dev/loopN node LOOP_CTL_GET_FREE hands out is missing, and the Manager
// creates it. The test builds such a /dev in a mount namespace of its own,
// on one locked OS thread that exits afterwards (taking the namespace and
// its tmpfs along); the host's /dev is never touched.
func TestMissingDeviceNode(t *testing.T) {
	needs.Root(t)
	f, img := newImage(t, t.TempDir(), "ctr.img", 4*mib)
	type result struct {
		dev, found, nodeBefore string
		size                   int64
		err                    error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the namespace
		var r result
		defer func() { done <- r }()
		step := func(what string, err error) bool {
			if err != nil && r.err == nil {
				r.err = fmt.Errorf("%s: %w", what, err)
			}
			return err == nil
		}
		if !step("unshare", unix.Unshare(unix.CLONE_NEWNS|unix.CLONE_FS)) ||
			!step("make / private", unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")) ||
			!step("mount tmpfs on /dev", unix.Mount("tmpfs", devDir, "tmpfs", 0, "mode=755")) ||
			!step("mknod loop-control", unix.Mknod(loopControl, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 237)))) {
			return
		}
		m := newManager()
		r.dev, r.err = m.Attach(f, AttachOptions{})
		if r.err != nil {
			return
		}
		var st unix.Stat_t
		if step("stat new node", unix.Stat(r.dev, &st)) {
			r.nodeBefore = fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
		}
		r.found, r.err = m.Find(img, "")
		if r.err == nil {
			r.size, r.err = m.Size(r.dev)
		}
	}()
	r := <-done
	if r.dev != "" {
		cleanupDetach(t, r.dev, img) // from the host's /dev
	}
	require.NoError(t, r.err)
	require.Equal(t, r.dev, r.found)
	require.EqualValues(t, 4*mib, r.size)
	b, err := os.ReadFile(filepath.Join(sysBlock, filepath.Base(r.dev), "dev"))
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(string(b)), r.nodeBefore, "node made with the kernel's device number")
}

// Devices the kernel does not have: nothing is created, nothing attached.
func TestNoSuchDevice(t *testing.T) {
	needs.Root(t)
	m := New()
	const dev = "/dev/loop999999"
	require.NoError(t, m.Detach(dev))
	_, err := m.Size(dev)
	require.ErrorIs(t, err, ErrNotAttached)
	require.ErrorIs(t, m.Refresh(dev), ErrNotAttached)
	_, err = directIO(dev)
	require.ErrorIs(t, err, ErrNotAttached)
	_, err = os.Stat(dev)
	require.ErrorIs(t, err, os.ErrNotExist)

	notLoop := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notLoop, nil, 0o600))
	_, err = m.Size(notLoop)
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNotAttached)
	_, err = directIO(notLoop)
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNotAttached)
}

// Unprivileged from here on.

func TestImageOf(t *testing.T) {
	dir := t.TempDir()
	f, img := newImage(t, dir, "a", 1)
	require.Equal(t, f.Name(), img.Path)
	var st unix.Stat_t
	require.NoError(t, unix.Stat(img.Path, &st))
	require.Equal(t, uint64(st.Ino), img.Ino)
	require.Equal(t, uint64(st.Dev), img.Dev)

	_, other := newImage(t, dir, "b", 1)
	require.False(t, img.Same(other))
	moved := img
	moved.Path = "/elsewhere"
	require.True(t, img.Same(moved), "Path does not matter")

	require.NoError(t, f.Close())
	_, err := ImageOf(f)
	require.Error(t, err, "closed file")
}

func TestLoopPath(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  string
		n    int
		ok   bool
	}{
		{name: "loop0", dev: "/dev/loop0", n: 0, ok: true},
		{name: "loop12", dev: "/dev/loop12", n: 12, ok: true},
		{name: "control", dev: "/dev/loop-control", ok: false},
		{name: "partition", dev: "/dev/loop0p1", ok: false},
		{name: "leading_zero", dev: "/dev/loop01", ok: false},
		{name: "no_number", dev: "/dev/loop", ok: false},
		{name: "other_dir", dev: "/tmp/loop3", ok: false},
		{name: "sign", dev: "/dev/loop+3", ok: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, ok := loopPath(tc.dev)
			require.Equal(t, tc.ok, ok)
			if ok {
				require.Equal(t, tc.n, n)
			}
		})
	}
}

func TestSetFileName(t *testing.T) {
	for _, tc := range []struct {
		name, path, want string
	}{
		{name: "short", path: "/pool/vol.img", want: "/pool/vol.img"},
		{name: "exactly_63", path: strings.Repeat("a", 63), want: strings.Repeat("a", 63)},
		{name: "truncated", path: strings.Repeat("b", 100), want: strings.Repeat("b", 63)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var info unix.LoopInfo64
			setFileName(&info, tc.path)
			require.Equal(t, tc.want, unix.ByteSliceToString(info.File_name[:]))
			require.Zero(t, info.File_name[unix.LO_NAME_SIZE-1], "NUL-terminated")
		})
	}
}

// directIO reports whether dev does direct I/O, from
// /sys/block/loopN/loop/dio (which exists while attached): what Attach got,
// seen the way an admin sees it.
func directIO(dev string) (bool, error) {
	dir, err := sysfsDir(dev)
	if err != nil {
		return false, fmt.Errorf("direct I/O: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "loop", "dio"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("direct I/O %s: %w", dev, ErrNotAttached)
	}
	if err != nil {
		return false, fmt.Errorf("direct I/O %s: %w", dev, err)
	}
	switch v := strings.TrimSpace(string(b)); v {
	case "1":
		return true, nil
	case "0":
		return false, nil
	default:
		return false, fmt.Errorf("direct I/O %s: unexpected %q in sysfs", dev, v)
	}
}

// TestReflinkedImageKeeps512ByteSectors: on XFS with reflink, an image that
// shares its blocks with a clone only takes direct I/O aligned to the
// filesystem block (4096). Attached with direct I/O, its device still has
// 512-byte logical sectors, so that a filesystem made with smaller blocks
// (mkfs.ext4's 1 KiB blocks for a small image) still mounts from it.
func TestReflinkedImageKeeps512ByteSectors(t *testing.T) {
	needs.Root(t)
	needs.Tools(t, "mkfs.xfs")
	dir := t.TempDir()
	pf, _ := newImage(t, dir, "xfs.img", 512*mib)
	out, err := exec.Command("mkfs.xfs", "-q", "-f", "-K", "-m", "reflink=1", pf.Name()).CombinedOutput()
	require.NoError(t, err, "%s", out)
	m := New()
	pdev := attach(t, m, pf, AttachOptions{})
	mnt := filepath.Join(dir, "mnt")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	require.NoError(t, unix.Mount(pdev, mnt, "xfs", 0, ""))
	t.Cleanup(func() { require.NoError(t, unix.Unmount(mnt, 0)) })

	src, _ := newImage(t, mnt, "src.img", 16*mib)
	clone, _ := newImage(t, mnt, "clone.img", 0)
	require.NoError(t, unix.IoctlFileClone(int(clone.Fd()), int(src.Fd())))
	for _, f := range []*os.File{src, clone} {
		dev := attach(t, m, f, AttachOptions{DirectIO: true})
		fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		ssz, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
		_ = unix.Close(fd)
		require.NoError(t, err)
		require.Equal(t, 512, ssz, "logical sector size of %s (%s)", dev, f.Name())
		require.NoError(t, New().Detach(dev))
	}
}
