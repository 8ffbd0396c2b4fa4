package vmtests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	hvquota "github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/test/quota"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// XFS and ext4 project quotas, for real, through the same scenarios
// test/quota runs on btrfs on the host (this host's kernel has neither
// XFS quota nor the ext4 quota format). The code under test is the
// driver with the adapters cmd/hostvol builds: no test-only path.

var (
	// XFS enforces project quotas on root too and answers ENOSPC (a
	// project is a directory tree with a size, like a filesystem).
	xfsFS = quota.FS{Name: "xfs", Method: hvquota.XFSProject, Errno: unix.ENOSPC, InodesKnown: true, Gone: projectGone("xfs")}
	// ext4 answers EDQUOT; its VFS quota code lets CAP_SYS_RESOURCE
	// exceed hard limits, which pods lack: the test drops it too.
	ext4FS = quota.FS{Name: "ext4", Method: hvquota.Ext4Project, Errno: unix.EDQUOT, DropCapSysResource: true, InodesKnown: true, Gone: projectGone("ext4")}
)

// quotaPool makes a 320 MiB filesystem in an image file, mounts it on a
// loop device with project quotas enforced (unless prjquota is false), and
// returns the mount point; t.Cleanup unmounts it.
func quotaPool(t *testing.T, fs string, prjquota bool) string {
	t.Helper()
	o := testutil.PoolFSOptions{Type: fs, Size: 320 << 20, Mkfs: map[string][]string{
		"xfs":  {"-m", "crc=1"},
		"ext4": {"-I", "256", "-O", "project,quota"},
	}[fs]}
	if prjquota {
		o.MountData = "prjquota"
	}
	return testutil.NewPoolFS(t, t.TempDir(), o).Path
}

// TestProjectQuota runs the enforced-limit scenario (quota.EnforcedLimit)
// on XFS and on ext4 project quotas.
func TestProjectQuota(t *testing.T) { onQuotaFS(t, quota.EnforcedLimit) }

// TestProjectIDsConcurrent runs the concurrent-create scenario
// (quota.Concurrent) on XFS and on ext4 project quotas.
func TestProjectIDsConcurrent(t *testing.T) { onQuotaFS(t, quota.Concurrent) }

// onQuotaFS runs a quota scenario in a subtest per filesystem, each on a
// pool of its own mounted with prjquota.
func onQuotaFS(t *testing.T, scenario func(*testing.T, quota.FS, string)) {
	RequireVM(t)
	for _, fs := range []quota.FS{xfsFS, ext4FS} {
		t.Run(fs.Name, func(t *testing.T) { scenario(t, fs, quotaPool(t, fs.Name, true)) })
	}
}

// TestProjectIDReuse: a deleted volume's project ID is free again, its
// limit cleared; the next volume gets it (lowest free first) with its own
// limit, and nothing of the old one shows.
func TestProjectIDReuse(t *testing.T) {
	onQuotaFS(t, func(t *testing.T, fs quota.FS, pool string) {
		n := quota.Node(t, pool)
		a := quota.Create(t, n, "a", 4<<20, nil)
		b := quota.Create(t, n, "b", 4<<20, nil)
		ha, hb := quota.Handle(t, n, a), quota.Handle(t, n, b)
		require.Equal(t, hvquota.FirstProjectID, ha.ProjectID)
		require.Equal(t, hvquota.FirstProjectID+1, hb.ProjectID)
		require.Equal(t, int64(4<<20), projectLimit(t, fs.Name, pool, ha.ProjectID))
		quota.Delete(t, n, a)
		fs.Gone(t, pool, ha)
		c := quota.Create(t, n, "c", 8<<20, nil)
		hc := quota.Handle(t, n, c)
		require.Equal(t, ha.ProjectID, hc.ProjectID, "the freed ID is reused")
		require.Equal(t, int64(8<<20), projectLimit(t, fs.Name, pool, hc.ProjectID), "with the new volume's limit")
		require.Equal(t, hc.ProjectID, dirProject(t, n, c), "the new directory is in the project")
		t.Logf("%s: project %d freed by deleting %s, reused by %s with an 8 MiB limit", fs.Name, ha.ProjectID, a, c)
		// A restart rebuilds the allocator from the records.
		n.Stop()
		n.Start()
		d := quota.Create(t, n, "d", 4<<20, nil)
		require.Equal(t, hvquota.FirstProjectID+2, quota.Handle(t, n, d).ProjectID, "never an ID a record holds")
		for _, id := range []string{b, c, d} {
			h := quota.Handle(t, n, id)
			quota.Delete(t, n, id)
			fs.Gone(t, pool, h)
		}
	})
}

// TestInodeLimit: the class's inodeLimit caps the files a volume holds.
func TestInodeLimit(t *testing.T) {
	onQuotaFS(t, func(t *testing.T, fs quota.FS, pool string) {
		n := quota.Node(t, pool)
		dir := t.TempDir()
		id := quota.Create(t, n, "inodes", 8<<20, map[string]string{"inodeLimit": "10"})
		target := quota.Publish(t, n, dir, id)
		var made int
		var err error
		create := func() {
			for made = 0; made < 20; made++ {
				var f *os.File
				if f, err = os.Create(filepath.Join(target, "f"+strconv.Itoa(made))); err != nil {
					return
				}
				f.Close()
			}
		}
		if fs.DropCapSysResource {
			testutil.WithoutCapSysResource(t, create)
		} else {
			create()
		}
		t.Logf("%s: inodeLimit 10: %d files created (the directory is the 10th inode), then errno %d (%v)", fs.Name, made, testutil.Errno(err), err)
		require.Equal(t, fs.Errno, testutil.Errno(err))
		require.Equal(t, 9, made)
		u := quota.Usage(t, n, id, target)
		for unit, usage := range u {
			t.Logf("%s: stats %s: %v", fs.Name, unit, usage)
		}
		quota.Unpublish(t, n, dir, id)
		quota.Delete(t, n, id)
	})
}

// TestUnlimitedExt4 is an ext4 pool with the quota features but mounted
// without prjquota: the kernel supports project quotas, the pool does not
// enforce them, and the class decides.
func TestUnlimitedExt4(t *testing.T) {
	RequireVM(t)
	quota.Unlimited(t, quotaPool(t, "ext4", false), "ext4")
}

// projectGone checks that a deleted volume's project has no limit left,
// with xfs_quota: another tool than hostvol's, reading what it set.
func projectGone(fs string) func(t *testing.T, pool string, h hvquota.Handle) {
	return func(t *testing.T, pool string, h hvquota.Handle) {
		t.Helper()
		require.NotZero(t, h.ProjectID)
		require.Zero(t, projectLimit(t, fs, pool, h.ProjectID), "project %d of a deleted volume still has a limit", h.ProjectID)
	}
}

// projectLimit is the hard block limit of a project in bytes (0: none),
// from xfs_quota's report.
func projectLimit(t *testing.T, fs, pool string, id uint32) int64 {
	t.Helper()
	args := []string{"-x", "-c", "report -p -n -N -b", pool}
	if fs == "ext4" {
		args = append([]string{"-f"}, args...) // a "foreign" filesystem to xfs_quota
	}
	out, err := exec.Command("xfs_quota", args...).CombinedOutput()
	require.NoError(t, err, "xfs_quota %v: %s", args, out)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		// #ID used soft hard warn grace, in KiB.
		if len(f) >= 4 && f[0] == "#"+strconv.FormatUint(uint64(id), 10) {
			hard, err := strconv.ParseInt(f[3], 10, 64)
			require.NoError(t, err, "xfs_quota line %q", line)
			return hard << 10
		}
	}
	return 0
}

// dirProject is the project ID of a volume's directory (FS_IOC_FSGETXATTR
// through xfs_io's lsproj).
func dirProject(t *testing.T, n *testutil.Node, id string) uint32 {
	t.Helper()
	out, err := exec.Command("xfs_io", "-r", "-c", "lsproj", n.Pool().DirPath(id)).CombinedOutput()
	require.NoError(t, err, "xfs_io lsproj: %s", out)
	// "projid = 100000"
	_, v, ok := strings.Cut(strings.TrimSpace(string(out)), "=")
	require.True(t, ok, "xfs_io lsproj: %s", out)
	p, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	require.NoError(t, err, "xfs_io lsproj: %s", out)
	return uint32(p)
}
