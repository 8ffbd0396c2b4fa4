// Package sanity runs csi-sanity (github.com/kubernetes-csi/csi-test/v5)
// against hostvol inside go test. Ginkgo allows one suite per process, so
// each variant (fake mounter, real mounts) is its own package under here.
package sanity

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// Config builds the csi-sanity configuration for a running driver, starting
// from sanity.NewTestConfig() so that the idempotency specs stay on.
//
// Specs that csi-sanity skips against hostvol, and why (each is skipped by
// csi-sanity itself because hostvol does not advertise the capability):
//   - ControllerPublishVolume/Unpublish: attachRequired is false; local
//     volumes need no attach step.
//   - Snapshots, restores and clones run (CREATE_DELETE_SNAPSHOT,
//     LIST_SNAPSHOTS, GET_SNAPSHOT, CLONE_VOLUME and
//     SNAPSHOT_ACCESSIBILITY_CONSTRAINTS are advertised), by the method of
//     each package's pool: btrfs snapshots (btrfs), reflinks (loopxfs),
//     copies (real, fake, loopext4, block). One of their specs, "should
//     succeed when creating a snapshot with accessibility requirements",
//     compares the snapshot's accessible topology with NodeGetInfo's using
//     gomega's Equal, a reflect.DeepEqual of two protobuf messages.
//     NodeGetInfo's was marshaled into two requests since, which fills the
//     message's internal size cache, and a received message's is empty, so
//     the two never compare equal however right the answer is (csi-test
//     v5.6.0, the newest release). Rather than skip it, the connection
//     csi-sanity dials fills the size cache of every reply it receives
//     (sizeCachedReplies): both sides then carry the size of their content
//     and the spec compares what the driver answered. pkg/driver's
//     TestCreateSnapshotTopology checks the same with proto.Equal, and a
//     requisite that excludes this node (RESOURCE_EXHAUSTED).
//   - Expansion runs through NodeExpandVolume alone, as in a cluster: the
//     node advertises EXPAND_VOLUME and the controller does not (see
//     ControllerGetCapabilities), so the node grows the image too.
//   - ModifyVolume / VolumeAttributesClass: MODIFY_VOLUME is not advertised.
//   - Volume and storage health runs: ControllerGetVolumeHealth,
//     ControllerListVolumeHealth, NodeGetVolumeHealth and
//     NodeGetStorageHealth are advertised (GET_VOLUME_HEALTH,
//     LIST_VOLUME_HEALTH, GET_STORAGE_HEALTH). csi-sanity v5.6.0 has no
//     ControllerGetVolume spec (GET_VOLUME is advertised; pkg/driver tests
//     it), and CSI v1.13 removed VolumeCondition, so there is no condition
//     in NodeGetVolumeStats or ListVolumes to check. The conditions
//     themselves are provoked for real in test/health.
//   - GroupController (volume group snapshots): not implemented.
//   - ListVolumes pagination with concurrent changes is an XIt (pending) in
//     csi-sanity itself.
func Config(t *testing.T, endpoint string) sanity.TestConfig {
	t.Helper()
	base := t.TempDir()
	cfg := sanity.NewTestConfig()
	cfg.Address = endpoint
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithChainUnaryInterceptor(sizeCachedReplies))
	cfg.ControllerDialOptions = append(cfg.ControllerDialOptions, grpc.WithChainUnaryInterceptor(sizeCachedReplies))
	cfg.TargetPath = filepath.Join(base, "mount")
	cfg.StagingPath = filepath.Join(base, "staging")
	// 64 MiB instead of 10 GiB: directory volumes refuse sizes the pool
	// cannot hold, and test machines may have little free disk.
	cfg.TestVolumeSize = 64 << 20
	// The CSI spec asks the SP to remove the target path at unpublish;
	// check it for real.
	cfg.CheckPath = func(p string) (sanity.PathKind, error) {
		fi, err := os.Lstat(p)
		switch {
		case os.IsNotExist(err):
			return sanity.PathIsNotFound, nil
		case err != nil:
			return sanity.PathIsOther, err
		case fi.IsDir():
			return sanity.PathIsDir, nil
		case fi.Mode().IsRegular():
			return sanity.PathIsFile, nil
		default:
			return sanity.PathIsOther, nil
		}
	}
	testutil.CleanupUnder(t, base)
	return cfg
}

// Volumes describes the volumes a csi-sanity run creates, for the variants
// that test loop-device and raw block volumes rather than directories.
type Volumes struct {
	// AccessType is csi-sanity's TestVolumeAccessType: "mount" (the
	// default when empty) or "block".
	AccessType string
	// Parameters are the CreateVolume (StorageClass) parameters.
	Parameters map[string]string
	// Size is TestVolumeSize; 0 keeps Config's 64 MiB. XFS needs 300 MiB.
	Size int64
}

// VolumesOf describes volumes of the harness's kind k.
func VolumesOf(k testutil.Kind) Volumes {
	v := Volumes{Parameters: k.Params, Size: k.Size}
	if k.Block {
		v.AccessType = "block"
	}
	return v
}

// StartReal starts a driver with the adapters cmd/hostvol builds on the
// pool at poolPath ("": a plain directory), and returns it. Every mount
// and loop device under its directory is released at the end. Needs root.
func StartReal(t *testing.T, poolPath string) *testutil.Env {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	testutil.CleanupUnder(t, dir)
	return testutil.NewNode(t, dir, poolPath).Env
}

// RunReal runs csi-sanity on volumes of kind k against a driver started
// with StartReal on a plain pool. Needs root.
func RunReal(t *testing.T, k testutil.Kind) {
	t.Helper()
	sanity.Test(t, ConfigFor(t, StartReal(t, "").Endpoint, VolumesOf(k)))
}

// ConfigFor is Config for volumes of the given shape. Config itself is
// ConfigFor with the zero Volumes: directory volumes, mount access, 64 MiB.
func ConfigFor(t *testing.T, endpoint string, v Volumes) sanity.TestConfig {
	t.Helper()
	cfg := Config(t, endpoint)
	if v.AccessType != "" {
		cfg.TestVolumeAccessType = v.AccessType
	}
	cfg.TestVolumeParameters = v.Parameters
	if v.Size > 0 {
		cfg.TestVolumeSize = v.Size
	}
	return cfg
}

// sizeCachedReplies fills the size cache of every protobuf message in a
// reply, as marshaling fills it in every message sent, so that
// reflect.DeepEqual of a sent and a received message (gomega's Equal in
// csi-sanity) compares their content only (see Config).
func sizeCachedReplies(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if m, ok := reply.(proto.Message); ok && err == nil {
		proto.Size(m)
	}
	return err
}
