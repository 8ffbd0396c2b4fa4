package volume_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// asNobody runs a shell command as UID and GID 65534.
func asNobody(script string) ([]byte, error) {
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd.CombinedOutput()
}

// With volumes/ at 0700, a host user cannot reach a directory volume's
// world-writable data by its pool path, while a pod of any UID still
// writes to it through its bind mount (mounts need no search right on
// the source's parents). Real bind mounts: root.
func TestDataReachableOnlyThroughTheMount(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	// Let UID 65534 walk down to the pool and the target, as it could to
	// a kubelet's pod directory.
	// t.TempDir is <tmp>/<TestName><random>/<n>, both made 0700.
	for _, d := range []string{filepath.Dir(dir), dir} {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	poolDir, target := filepath.Join(dir, "pool"), filepath.Join(dir, "target")
	require.NoError(t, os.Mkdir(poolDir, 0o755))
	t.Cleanup(func() { testutil.UnmountUnder(t, dir) })
	p, err := pool.Open(pool.Spec{Name: pool.DefaultName, Path: poolDir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	m, err := volume.New(volume.Config{NodeID: "node", StateDir: filepath.Join(dir, "state"), Pools: []*pool.Pool{p}, Mounter: mounter.New(mount.New(""))})
	require.NoError(t, err)
	require.NoError(t, m.Load())
	v, err := m.Controller.Create(volume.CreateRequest{Name: "v", Kind: volume.KindDir, Pool: pool.DefaultName, RequiredBytes: mib, SizeLimit: volume.SizeLimitOptional})
	require.NoError(t, err)
	require.NoError(t, m.Node.Publish(volume.PublishRequest{ID: v.ID, TargetPath: target, Writer: true}))

	out, err := asNobody("echo pod > " + filepath.Join(target, "by-pod"))
	require.NoError(t, err, "a pod of another UID writes through the mount: %s", out)
	require.FileExists(t, filepath.Join(p.DirPath(v.ID), "by-pod"))

	out, err = asNobody("ls " + filepath.Join(poolDir, "volumes"))
	require.Error(t, err, "a host user lists the volumes: %s", out)
	out, err = asNobody("echo host > " + filepath.Join(p.DirPath(v.ID), "by-host"))
	require.Error(t, err, "a host user writes into a volume by its pool path: %s", out)
	require.NoFileExists(t, filepath.Join(p.DirPath(v.ID), "by-host"))
	var st unix.Stat_t
	require.NoError(t, unix.Stat(p.DirPath(v.ID), &st))
	require.Equal(t, uint32(0o777), st.Mode&0o7777, "the data directory itself stays 0777")

	require.NoError(t, m.Node.Unpublish(v.ID, target))
	require.NoError(t, m.Controller.Delete(v.ID))
}
