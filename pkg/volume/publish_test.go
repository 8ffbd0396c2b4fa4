package volume_test

import (
	"errors"
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
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

func TestPublish(t *testing.T) {
	e, m := loadedEnv(t)
	rw, err := m.Controller.Create(req("rw"))
	require.NoError(t, err)
	roReq := req("ro")
	roReq.ReaderOnly = true
	ro, err := m.Controller.Create(roReq)
	require.NoError(t, err)
	target := func(name string) string { return filepath.Join(e.dir, name) }

	t.Run("writer_on_reader_only", func(t *testing.T) {
		require.ErrorIs(t, m.Node.Publish(publishReq(ro.ID, target("w"))), volume.ErrNotAllowed)
		require.NoDirExists(t, target("w"))
	})
	t.Run("reader_on_reader_only_mounts_read_only", func(t *testing.T) {
		require.NoError(t, m.Node.Publish(volume.PublishRequest{ID: ro.ID, TargetPath: target("r")}))
		mps, err := e.mounter.List()
		require.NoError(t, err)
		var opts []string
		for _, mp := range mps {
			if mp.Path == target("r") {
				opts = mp.Opts
			}
		}
		require.Contains(t, opts, "ro")
		require.NoError(t, m.Node.Unpublish(ro.ID, target("r")))
	})
	t.Run("single_writer", func(t *testing.T) {
		sw := publishReq(rw.ID, target("a"))
		sw.SingleWriter = true
		require.NoError(t, m.Node.Publish(sw))
		require.NoError(t, m.Node.Publish(sw), "idempotent")
		require.ErrorIs(t, m.Node.Publish(publishReq(rw.ID, target("b"))), volume.ErrInUse)
		require.ErrorIs(t, m.Controller.Delete(rw.ID), volume.ErrInUse)
		require.NoError(t, m.Node.Unpublish(rw.ID, target("a")))
		require.NoError(t, m.Node.Publish(publishReq(rw.ID, target("b"))))
		ro := publishReq(rw.ID, target("b"))
		ro.ReadOnly = true
		require.ErrorIs(t, m.Node.Publish(ro), volume.ErrAlreadyExists)
		require.NoError(t, m.Node.Unpublish(rw.ID, target("b")))
	})
	t.Run("unknown_volume", func(t *testing.T) {
		id := volumeid.FromName("nope")
		require.ErrorIs(t, m.Node.Publish(publishReq(id, target("x"))), volume.ErrNotFound)
		require.ErrorIs(t, m.Node.Unpublish(id, target("x")), volume.ErrNotFound)
		require.ErrorIs(t, m.Node.Stage(volume.StageRequest{ID: id, StagingPath: target("s")}), volume.ErrNotFound)
		_, err := m.Node.Stats(id, target("x"))
		require.ErrorIs(t, err, volume.ErrNotFound)
	})
	t.Run("stats_need_a_publication", func(t *testing.T) {
		_, err := m.Node.Stats(rw.ID, target("never"))
		require.ErrorIs(t, err, volume.ErrNotFound)
		require.NoError(t, m.Node.Publish(publishReq(rw.ID, target("s"))))
		st, err := m.Node.Stats(rw.ID, target("s"))
		require.NoError(t, err)
		require.Positive(t, st.TotalBytes)
		require.Positive(t, st.TotalInodes)
		require.NoError(t, m.Node.Unpublish(rw.ID, target("s")))
	})
	t.Run("another_nodes_volume", func(t *testing.T) {
		other := e.open(t, "other-node")
		require.NoError(t, other.Load())
		err := other.Node.Publish(publishReq(rw.ID, target("o")))
		require.True(t, errors.Is(err, volume.ErrNotFound), "error: %v", err)
		require.ErrorIs(t, other.Node.Stage(volume.StageRequest{ID: rw.ID, StagingPath: target("o")}), volume.ErrNotFound)
		require.NoDirExists(t, target("o"))
	})
}

func TestStaleTargetsDroppedAfterReboot(t *testing.T) {
	e, m := loadedEnv(t)
	v, err := m.Controller.Create(req("vol"))
	require.NoError(t, err)
	sw := publishReq(v.ID, filepath.Join(e.dir, "a"))
	sw.SingleWriter = true
	require.NoError(t, m.Node.Publish(sw))

	// Same mounts: the publication is remembered.
	again := e.load(t)
	require.ErrorIs(t, again.Controller.Delete(v.ID), volume.ErrInUse)
	require.ErrorIs(t, again.Node.Publish(publishReq(v.ID, filepath.Join(e.dir, "b"))), volume.ErrInUse)

	// A reboot: the mounts are gone, and so is the publication.
	e.mounter = mount.NewFakeMounter(nil)
	rebooted := e.load(t)
	require.NoError(t, rebooted.Node.Publish(publishReq(v.ID, filepath.Join(e.dir, "b"))))
	require.NoError(t, rebooted.Node.Unpublish(v.ID, filepath.Join(e.dir, "b")))
	require.NoError(t, rebooted.Controller.Delete(v.ID))
	require.NoFileExists(t, filepath.Join(e.stateDir, "node", v.ID+".json"))
}

func TestBlockPublishBindsDeviceOntoFile(t *testing.T) {
	e, m := loadedLoopEnv(t)
	v, err := m.Controller.Create(volume.CreateRequest{Name: "b", Kind: volume.KindBlock, Pool: pool.DefaultName, RequiredBytes: 3 * mib})
	require.NoError(t, err)
	staging := filepath.Join(e.dir, "staging")
	target := filepath.Join(e.dir, "pod", "dev")
	require.ErrorIs(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging}), volume.ErrInvalid, "mount access on a block volume")
	require.NoError(t, m.Node.Stage(volume.StageRequest{ID: v.ID, StagingPath: staging, Block: true}))
	pr := publishReq(v.ID, target)
	pr.Block = true
	require.NoError(t, m.Node.Publish(pr))
	fi, err := os.Stat(target)
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular(), "the target is a file the device is bound onto")
	mps, err := e.mounter.List()
	require.NoError(t, err)
	require.Len(t, mps, 1)
	dev := mps[0].Device
	require.Contains(t, e.loop.Attached(), dev)

	st, err := m.Node.Stats(v.ID, target)
	require.NoError(t, err)
	require.Equal(t, 3*mib, st.TotalBytes)
	require.NoError(t, m.Node.Unpublish(v.ID, target))
	require.NoFileExists(t, target)
	require.NoError(t, m.Node.Unstage(v.ID, staging))
	require.Empty(t, e.loop.Attached())
}

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
