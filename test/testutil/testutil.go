// Package testutil starts hostvol in-process for tests and cleans up what
// real-mount tests leave behind.
package testutil

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/seed3e7d50b2/hostvol/pkg/driver"
	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// RequireRootEnv makes root-only tests fail instead of skip when set to 1.
const RequireRootEnv = "HOSTVOL_REQUIRE_ROOT_TESTS"

// RequireRoot skips a test that needs root when not root, or under
// go test -short (make unit: no real mounts or loop devices even as root),
// or fails it when HOSTVOL_REQUIRE_ROOT_TESTS=1 (CI), so root tests never
// skip silently.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 && !testing.Short() {
		return
	}
	if os.Getenv(RequireRootEnv) == "1" {
		t.Fatalf("%s needs root (real mounts, loop devices), without -short, and %s=1 is set", t.Name(), RequireRootEnv)
	}
	t.Skipf("skipping %s: needs root for real mounts and loop devices, without -short (set %s=1 to make this a failure)", t.Name(), RequireRootEnv)
}

// Env is a driver running in-process on a socket in a temporary directory.
type Env struct {
	Endpoint string
	Socket   string
	StateDir string
	Pools    []*pool.Pool
	Driver   *driver.Driver
	Manager  *volume.Manager
	Dir      string
}

// Options tune StartDriver.
type Options struct {
	NodeID     string
	Mounter    mount.Interface // default: a new FakeMounter
	PoolSpecs  []pool.Spec     // default: one "default" pool in the temp dir
	StateDir   string          // default: in the temp dir
	MaxVolumes int64
	Loop       loop.Manager     // default: loop.NewFake()
	FS         fsutil.Interface // default: a new fsutil.Fake
	// Quota limits directory volumes. Default: a new quota.Fake, whose
	// pools all "enforce" (project IDs and limits in memory).
	Quota quota.System

	// Interceptors are passed to driver.Config (e.g. pkg/metrics').
	Interceptors []grpc.UnaryServerInterceptor
	// Inline bounds inline volumes; nil: params.DefaultInlinePolicy().
	Inline *params.InlinePolicy
}

// RealOptions are Options with the adapters cmd/hostvol builds: the
// syscall bind mounter over mount-utils, real loop devices, real mkfs.
func RealOptions() Options {
	return Options{Mounter: mounter.New(mount.New("")), Loop: loop.New(), FS: fsutil.New(utilexec.New()), Quota: quota.New()}
}

// StartDriver starts a driver and stops it in t.Cleanup.
func StartDriver(t testing.TB, o Options) *Env {
	t.Helper()
	dir := t.TempDir()
	if o.NodeID == "" {
		o.NodeID = "test-node"
	}
	if o.Mounter == nil {
		o.Mounter = mount.NewFakeMounter(nil)
	}
	if o.Loop == nil {
		o.Loop = loop.NewFake()
	}
	if o.FS == nil {
		o.FS = &fsutil.Fake{}
	}
	if o.Quota == nil {
		o.Quota = quota.NewFake()
	}
	if o.StateDir == "" {
		o.StateDir = filepath.Join(dir, "state")
	}
	if len(o.PoolSpecs) == 0 {
		pd := filepath.Join(dir, "pool")
		if err := os.MkdirAll(pd, 0o755); err != nil {
			t.Fatal(err)
		}
		o.PoolSpecs = []pool.Spec{{Name: pool.DefaultName, Path: pd}}
	}
	env := &Env{Dir: dir, StateDir: o.StateDir, Socket: filepath.Join(dir, "csi.sock")}
	env.Endpoint = "unix://" + env.Socket
	for _, sp := range o.PoolSpecs {
		p, err := pool.Open(sp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		env.Pools = append(env.Pools, p)
	}
	inline := params.DefaultInlinePolicy()
	if o.Inline != nil {
		inline = *o.Inline
	}
	inlineMax := inline.MaxBytes
	if len(inline.Pools) == 0 {
		inlineMax = 0
	}
	mgr, err := volume.New(volume.Config{
		NodeID: o.NodeID, StateDir: o.StateDir, Pools: env.Pools, Mounter: o.Mounter, Loop: o.Loop, FS: o.FS, Quota: o.Quota,
		InlineMaxBytes: inlineMax, InlineMaxTotalBytes: inline.MaxTotalBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Close() })
	if err := mgr.Load(); err != nil {
		t.Fatal(err)
	}
	drv, err := driver.New(driver.Config{Name: "hostvol.csi.io", Version: "test", NodeID: o.NodeID, MaxVolumes: o.MaxVolumes, Manager: mgr, Interceptors: o.Interceptors, Inline: inline})
	if err != nil {
		t.Fatal(err)
	}
	l, err := endpoint.Listen(env.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = drv.Serve(l)
	}()
	t.Cleanup(func() {
		drv.Stop()
		<-done
	})
	env.Driver, env.Manager = drv, mgr
	return env
}

// UnmountUnder unmounts every mount point at or below dir, deepest first.
// Real-mount tests register it with t.Cleanup so that a failing test leaves
// no mount behind.
func UnmountUnder(t testing.TB, dir string) {
	t.Helper()
	for _, m := range MountsUnder(t, dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Errorf("cleanup: unmount %s: %v", m, err)
		}
	}
}

// MountsUnder lists mount points at or below dir, deepest first.
func MountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMountinfo undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			n := 0
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				n = n*8 + int(c-'0')
			}
			if ok {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
