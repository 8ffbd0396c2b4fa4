// Package loopvol tests loop-device and raw block volumes for real: real
// mounts, real loop devices, real mkfs, resize2fs and xfs_growfs, driven
// through hostvol's gRPC API. It needs root.
//
// This file holds what the tests (and the csi-sanity runs on loop and block
// volumes) share: a driver that can be stopped and started again on the
// same state directory and pool (a simulated reboot), and a clean-up that
// releases every mount and loop device a test made, in the order the kernel
// allows, even when the test failed half-way.
package loopvol

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// Options are the real OS adapters: what cmd/hostvol builds.
func Options() testutil.Options {
	return testutil.RealOptions()
}

// Client is a gRPC connection to one driver instance.
type Client struct {
	csi.IdentityClient
	csi.ControllerClient
	csi.NodeClient
	conn *grpc.ClientConn
}

// Node is a hostvol node whose driver can be stopped and started again on
// the same state directory and pool, the way a reboot or a DaemonSet
// rollout restarts it.
type Node struct {
	t        testing.TB
	StateDir string
	PoolPath string
	// Env and Client are those of the driver started last.
	Env    *testutil.Env
	Client *Client
}

// NewNode makes a state directory and a pool directory under dir (unless
// poolPath is given: an existing directory, e.g. a dedicated filesystem)
// and starts a driver on them with the real OS adapters.
func NewNode(t testing.TB, dir, poolPath string) *Node {
	t.Helper()
	n := &Node{t: t, StateDir: filepath.Join(dir, "state"), PoolPath: poolPath}
	if n.PoolPath == "" {
		n.PoolPath = filepath.Join(dir, "pool")
		if err := os.MkdirAll(n.PoolPath, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.Start()
	return n
}

// Start starts a new driver instance on the node's state directory and
// pool. Stop the previous one first.
func (n *Node) Start() {
	n.t.Helper()
	o := Options()
	o.StateDir = n.StateDir
	o.PoolSpecs = []pool.Spec{{Name: pool.DefaultName, Path: n.PoolPath}}
	n.Env = testutil.StartDriver(n.t, o)
	n.Client = Dial(n.t, n.Env.Endpoint)
}

// Stop stops the running driver instance (testutil also stops it at the
// end of the test; stopping twice is harmless).
func (n *Node) Stop() {
	n.t.Helper()
	n.Client.Close()
	n.Env.Driver.Stop()
}

// Pool is the running driver's pool.
func (n *Node) Pool() *pool.Pool { return n.Env.Pools[0] }

// Dial connects to the endpoint ep; the connection is closed in t.Cleanup.
func Dial(t testing.TB, ep string) *Client {
	t.Helper()
	conn, err := endpoint.Dial(ep)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{
		IdentityClient:   csi.NewIdentityClient(conn),
		ControllerClient: csi.NewControllerClient(conn),
		NodeClient:       csi.NewNodeClient(conn),
		conn:             conn,
	}
	t.Cleanup(c.Close)
	return c
}

// Close closes the connection.
func (c *Client) Close() { _ = c.conn.Close() }

// CleanupUnder registers, in t.Cleanup, the release of every mount at or
// below dir and of every loop device whose backing file is below dir.
// Register it right after making dir and before anything is mounted or
// attached: cleanups run last-registered first, so it then runs after the
// drivers have stopped and before dir is removed.
func CleanupUnder(t testing.TB, dir string) {
	t.Helper()
	t.Cleanup(func() { ReleaseUnder(t, dir) })
}

// ReleaseUnder unmounts every mount at or below dir and detaches every loop
// device whose backing file is below dir, and reports (t.Errorf) whatever
// it could not release. Mounts may nest in loop devices and loop devices in
// mounts (a pool that is itself a filesystem on a loop device, holding the
// images of attached volumes), so it works in rounds: unmount what holds no
// attached image, detach what is not mounted, again.
func ReleaseUnder(t testing.TB, dir string) {
	t.Helper()
	lm := loop.New()
	for round := 0; round < 4; round++ {
		loops, err := LoopsUnder(dir)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		mounts := testutil.MountsUnder(t, dir)
		if len(loops) == 0 && len(mounts) == 0 {
			return
		}
		for _, m := range mounts {
			if holdsBackingFile(m, loops) {
				continue // detach its loop devices first
			}
			if err := unix.Unmount(m, 0); err != nil {
				// Busy (a process inside): detach it from the tree; the
				// kernel finishes when the last user goes.
				_ = unix.Unmount(m, unix.MNT_DETACH)
			}
		}
		sources := mountSources(t)
		if loops, err = LoopsUnder(dir); err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for dev := range loops {
			if sources[dev] && round < 3 {
				continue // still mounted: next round
			}
			if err := lm.Detach(dev); err != nil {
				t.Logf("cleanup: detach %s: %v", dev, err)
			}
		}
	}
	if loops, err := LoopsUnder(dir); err != nil || len(loops) > 0 {
		t.Errorf("cleanup: loop devices left attached to images under %s: %v %v", dir, loops, err)
	}
	if mounts := testutil.MountsUnder(t, dir); len(mounts) > 0 {
		t.Errorf("cleanup: mounts left under %s: %v", dir, mounts)
	}
}

// holdsBackingFile reports whether an attached loop device's backing file
// lives at or below the mount point m.
func holdsBackingFile(m string, loops map[string]string) bool {
	for _, b := range loops {
		if strings.HasPrefix(b, m+"/") {
			return true
		}
	}
	return false
}

// LoopsUnder returns the attached loop devices (/dev/loopN) whose backing
// file is below dir, with that file's path, from
// /sys/block/loopN/loop/backing_file.
func LoopsUnder(dir string) (map[string]string, error) {
	all, err := AttachedLoops()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for dev, b := range all {
		if strings.HasPrefix(b, dir+"/") {
			out[dev] = b
		}
	}
	return out, nil
}

// LoopsFor returns the loop devices attached to the file at path, sorted.
func LoopsFor(path string) ([]string, error) {
	all, err := AttachedLoops()
	if err != nil {
		return nil, err
	}
	var out []string
	for dev, b := range all {
		if b == path {
			out = append(out, dev)
		}
	}
	sort.Strings(out)
	return out, nil
}

// AttachedLoops maps every attached loop device to its backing file's path
// as sysfs shows it (" (deleted)" removed).
func AttachedLoops() (map[string]string, error) {
	paths, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			continue // detached meanwhile (by this or another process)
		}
		if err != nil {
			return nil, err
		}
		name := filepath.Base(filepath.Dir(filepath.Dir(p)))
		out["/dev/"+name] = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), " (deleted)")
	}
	return out, nil
}

// LosetupFor returns the devices `losetup -j path` lists.
func LosetupFor(t testing.TB, path string) []string {
	t.Helper()
	out, err := exec.Command("losetup", "-j", path).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -j %s: %v: %s", path, err, out)
	}
	var devs []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if dev, _, ok := strings.Cut(l, ":"); ok {
			devs = append(devs, dev)
		}
	}
	return devs
}

// mountSources returns the sources (devices) of all mounts in this
// process's mount namespace.
func mountSources(t testing.TB) map[string]bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... optional fields - fstype source superopts
		_, after, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fields := strings.Fields(after); len(fields) >= 2 {
			out[fields[1]] = true
		}
	}
	return out
}
