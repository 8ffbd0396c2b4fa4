package mounter_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
)

// requireRoot mirrors testutil.RequireRoot: skip when not root or under
// -short, unless HOSTVOL_REQUIRE_ROOT_TESTS=1 (CI), which makes it a
// failure.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 && !testing.Short() {
		return
	}
	if os.Getenv("HOSTVOL_REQUIRE_ROOT_TESTS") == "1" {
		t.Fatal("needs root for real mounts, without -short, and HOSTVOL_REQUIRE_ROOT_TESTS=1 is set")
	}
	t.Skip("needs root for real mounts, without -short")
}

func flagsOf(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(path, &st))
	return st.Flags
}

// A tmpfs source mounted nosuid,nodev: binds of it keep those flags, with
// or without extra options, and read-only binds are read-only.
func TestBindMounts(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	require.NoError(t, os.Mkdir(src, 0o755))
	require.NoError(t, unix.Mount("tmpfs", src, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(src, unix.MNT_DETACH) })
	require.NoError(t, os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644))

	m := mounter.New(mount.New(""))
	cases := []struct {
		name    string
		options []string
		want    int64 // flags that must be set
		notWant int64
	}{
		{name: "plain", options: []string{"bind"}, want: unix.ST_NOSUID | unix.ST_NODEV, notWant: unix.ST_RDONLY},
		{name: "read_only", options: []string{"bind", "ro"}, want: unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV},
		{name: "noexec", options: []string{"bind", "noexec"}, want: unix.ST_NOEXEC | unix.ST_NOSUID | unix.ST_NODEV, notWant: unix.ST_RDONLY},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(dir, tc.name)
			require.NoError(t, os.Mkdir(target, 0o755))
			t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
			require.NoError(t, m.Mount(src, target, "", tc.options))
			notMnt, err := m.IsLikelyNotMountPoint(target)
			require.NoError(t, err)
			require.False(t, notMnt)
			fl := flagsOf(t, target)
			require.Equal(t, tc.want, fl&tc.want, "flags %#x", fl)
			require.Zero(t, fl&tc.notWant, "flags %#x", fl)
			_, err = os.ReadFile(filepath.Join(target, "f"))
			require.NoError(t, err)
			if tc.want&unix.ST_RDONLY != 0 {
				require.Error(t, os.WriteFile(filepath.Join(target, "g"), []byte("y"), 0o644))
			}
			require.NoError(t, m.Unmount(target))
			notMnt, err = m.IsLikelyNotMountPoint(target)
			require.NoError(t, err)
			require.True(t, notMnt)
			require.Error(t, m.Unmount(target), "unmounting what is not mounted fails")
		})
	}
	require.Zero(t, flagsOf(t, src)&unix.ST_RDONLY, "the source stays writable")
}

// ext4 on a loop device is mounted with mount(2), options honoured.
func TestFilesystemMount(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	require.NoError(t, os.WriteFile(img, nil, 0o600))
	require.NoError(t, os.Truncate(img, 32<<20))
	out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput()
	require.NoError(t, err, string(out))
	target := filepath.Join(dir, "mnt")
	require.NoError(t, os.Mkdir(target, 0o755))
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })

	m := mounter.New(mount.New(""))
	// A regular file needs a loop device: mount(2) does not make one, so
	// this goes through mount(8) (-o loop is not a known option).
	require.NoError(t, m.Mount(img, target, "ext4", []string{"loop", "nosuid"}))
	fl := flagsOf(t, target)
	require.NotZero(t, fl&unix.ST_NOSUID)
	require.NoError(t, m.Unmount(target))

	// Through a loop device: mount(2), with a flag and fs data options.
	out, err = exec.Command("losetup", "--find", "--show", img).Output()
	require.NoError(t, err)
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	require.NoError(t, m.MountSensitiveWithoutSystemd(dev, target, "ext4", []string{"noexec", "discard"}, nil))
	fl = flagsOf(t, target)
	require.NotZero(t, fl&unix.ST_NOEXEC)
	mi, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	require.Contains(t, string(mi), "discard")
	require.NoError(t, m.Unmount(target))
	require.Error(t, m.MountSensitiveWithoutSystemd(dev, target, "xfs", nil, nil), "wrong filesystem type fails")
}

// Under shared propagation (the node plugin's Bidirectional mount of the
// kubelet directory), the copy of a read-only bind that reaches a peer must
// be read-only too: a bind followed by a remount would leave the peer's copy
// read-write, because a remount does not propagate.
func TestReadOnlyBindPropagatesReadOnly(t *testing.T) {
	requireRoot(t)
	d := mkdirs(t, "src", "a", "b")
	src, a, b := d[0], d[1], d[2]
	require.NoError(t, unix.Mount("tmpfs", a, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(a, unix.MNT_DETACH) })
	require.NoError(t, unix.Mount("", a, "", unix.MS_SHARED, ""))
	require.NoError(t, unix.Mount(a, b, "", unix.MS_BIND, "")) // b is a peer of a
	t.Cleanup(func() { _ = unix.Unmount(b, unix.MNT_DETACH) })
	target := filepath.Join(a, "target")
	require.NoError(t, os.Mkdir(target, 0o755))

	m := mounter.New(mount.New(""))
	require.NoError(t, m.Mount(src, target, "", []string{"bind", "ro"}))
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	require.NotZero(t, flagsOf(t, target)&unix.ST_RDONLY, "the target is read-only")
	peer := filepath.Join(b, "target")
	require.NotZero(t, flagsOf(t, peer)&unix.ST_RDONLY, "the propagated copy is read-only too")
	require.Error(t, os.WriteFile(filepath.Join(peer, "x"), []byte("x"), 0o644))
	require.NoError(t, m.Unmount(target))
}

// mkdirs makes directories of these names in a new temporary directory and
// returns their paths, in order.
func mkdirs(t *testing.T, names ...string) []string {
	t.Helper()
	dir := t.TempDir()
	out := make([]string, 0, len(names))
	for _, n := range names {
		p := filepath.Join(dir, n)
		require.NoError(t, os.Mkdir(p, 0o755))
		out = append(out, p)
	}
	return out
}
