package driver_test

// The helpers every test of this package shares: a driver started through
// test/testutil with clients for its services, requests, and checks of
// what the fakes and the filesystem saw.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

const (
	mib      = int64(1) << 20
	testNode = testutil.DefaultNodeID
)

// harness is a driver served on a socket plus clients for its services.
type harness struct {
	*testutil.Env
	ctrl    csi.ControllerClient
	node    csi.NodeClient
	ident   csi.IdentityClient
	mounter *mount.FakeMounter // nil when the test passed its own mounter
}

// start runs a driver with testutil.StartDriver (a FakeMounter unless the
// options name a mounter) and dials it.
func start(t *testing.T, o testutil.Options) *harness {
	t.Helper()
	h := &harness{Env: testutil.StartDriver(t, o)}
	h.mounter = h.FakeMounter
	h.ctrl, h.node, h.ident = h.Client.ControllerClient, h.Client.NodeClient, h.Client.IdentityClient
	return h
}

// poolPath is the path of the harness's first pool.
func (h *harness) poolPath() string { return h.Pools[0].Path }

// dataDir is where a volume's data lives in the first pool.
func (h *harness) dataDir(id string) string { return h.Pools[0].DirPath(id) }

// mountCap is a mount volume capability.
func mountCap(mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

var (
	snw  = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	snsw = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	mnro = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	snro = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
)

// createReq is a 1 MiB single-node-writer request in the default pool.
func createReq(name string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: mib},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw)},
	}
}

// create makes a volume and returns its ID.
func (h *harness) create(t *testing.T, req *csi.CreateVolumeRequest) string {
	t.Helper()
	resp, err := h.ctrl.CreateVolume(t.Context(), req)
	require.NoError(t, err)
	require.NoError(t, volumeid.Validate(resp.GetVolume().GetVolumeId()))
	return resp.GetVolume().GetVolumeId()
}

func publishReq(id, target string, c *csi.VolumeCapability, readOnly bool) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: c, Readonly: readOnly}
}

// publish publishes a volume read-write, single-node-writer, at target.
func (h *harness) publish(t *testing.T, id, target string) {
	t.Helper()
	_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, target, mountCap(snw), false))
	require.NoError(t, err)
}

// mountAt returns the fake mount at path, if any.
func (h *harness) mountAt(t *testing.T, path string) (mount.MountPoint, bool) {
	t.Helper()
	mps, err := h.mounter.List()
	require.NoError(t, err)
	for _, mp := range mps {
		if mp.Path == path {
			return mp, true
		}
	}
	return mount.MountPoint{}, false
}

// requireCode asserts the gRPC code of err (codes.OK for nil).
func requireCode(t *testing.T, want codes.Code, err error) {
	t.Helper()
	require.Equal(t, want, status.Code(err), "error: %v", err)
}

// recordFiles lists the record files in a record directory.
func recordFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// snapshotTree describes every entry under root (type, mode, size, mtime,
// content digest, link target), so that a test can assert that nothing at
// all changed.
func snapshotTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + l
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(sum[:])
		}
		out[p] = desc
		return nil
	})
	require.NoError(t, err)
	return out
}

// plantSentinels puts the files a path traversal from the pool or state
// directories would reach: <dir>/etc/passwd and <dir>/x/keep.
// startHostile starts a driver for hostile-input cases: a volume "existing"
// published at <dir>/published, so that a lookup that wrongly matched would
// have a publication to act on, and sentinels planted. It returns the
// volume's ID and a snapshot of the tree, which no hostile call may change.
func startHostile(t *testing.T) (*harness, string, map[string]string) {
	t.Helper()
	h := start(t, testutil.Options{})
	existing := h.create(t, createReq("existing"))
	h.publish(t, existing, filepath.Join(h.Dir, "published"))
	plantSentinels(t, h.Dir)
	return h, existing, snapshotTree(t, h.Dir)
}

// rwAndRO starts a driver with two volumes: "rw" (single node writer) and
// "ro" (multi node reader only). It returns their IDs.
func rwAndRO(t *testing.T) (h *harness, rw, ro string) {
	t.Helper()
	h = start(t, testutil.Options{})
	rw = h.create(t, createReq("rw"))
	roReq := createReq("ro")
	roReq.VolumeCapabilities = []*csi.VolumeCapability{mountCap(mnro)}
	return h, rw, h.create(t, roReq)
}

// publishAs publishes id at <dir>/name and requires the answer want; when
// it is not OK, nothing may be mounted or made there. It returns the mount
// and whether the publish succeeded.
func (h *harness) publishAs(t *testing.T, id, name string, c *csi.VolumeCapability, readOnly bool, want codes.Code) (mount.MountPoint, bool) {
	t.Helper()
	target := filepath.Join(h.Dir, name)
	_, err := h.node.NodePublishVolume(t.Context(), publishReq(id, target, c, readOnly))
	requireCode(t, want, err)
	mp, mounted := h.mountAt(t, target)
	if want != codes.OK {
		require.False(t, mounted)
		require.NoDirExists(t, target)
		return mp, false
	}
	require.True(t, mounted)
	return mp, true
}

func plantSentinels(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0\n"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "x"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "x", "keep"), []byte("keep"), 0o644))
}

// gateMounter is a FakeMounter whose Mount at one target blocks until the
// test releases it, so that a NodePublishVolume can be held in the middle
// of its work while the volume's lock is taken.
type gateMounter struct {
	*mount.FakeMounter
	target  string
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gateMounter) Mount(source, target, fstype string, opts []string) error {
	if target == g.target {
		g.once.Do(func() { close(g.entered) })
		<-g.release
	}
	return g.FakeMounter.Mount(source, target, fstype, opts)
}

// heldPublish is a NodePublishVolume of the volume "held" that is stopped
// in its mount, so holding the volume's lock, until release is called.
type heldPublish struct {
	h         *harness
	base      string // a temporary directory for targets
	id        string // the held volume
	target    string
	published chan error // the publish's answer, once released
	release   func()
}

// startHeld starts a driver, creates the volume "held" and the volumes
// others names, and holds a NodePublishVolume of "held" in its mount.
func startHeld(t *testing.T, others ...string) (*heldPublish, []string) {
	t.Helper()
	base := t.TempDir()
	gate := &gateMounter{
		FakeMounter: mount.NewFakeMounter(nil),
		target:      filepath.Join(base, "held"),
		entered:     make(chan struct{}),
		release:     make(chan struct{}),
	}
	h := start(t, testutil.Options{Mounter: gate})
	p := &heldPublish{h: h, base: base, target: gate.target, published: make(chan error, 1)}
	// Registered after StartDriver's cleanup, so it runs first: a failing
	// test must not leave the held call blocking the server's graceful stop.
	p.release = sync.OnceFunc(func() { close(gate.release) })
	t.Cleanup(p.release)
	p.id = h.create(t, createReq("held"))
	var ids []string
	for _, name := range others {
		ids = append(ids, h.create(t, createReq(name)))
	}
	go func() {
		_, err := h.node.NodePublishVolume(context.Background(), publishReq(p.id, p.target, mountCap(snw), false))
		p.published <- err
	}()
	<-gate.entered // NodePublishVolume of held now holds its lock.
	return p, ids
}
