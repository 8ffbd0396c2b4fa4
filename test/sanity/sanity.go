// Package sanity runs csi-sanity (github.com/kubernetes-csi/csi-test/v5)
// against hostvol inside go test. Ginkgo allows one suite per process, so
// each variant (fake mounter, real mounts) is its own package under here.
package sanity

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// Config builds the csi-sanity configuration for a running driver, starting
// from sanity.NewTestConfig() so that the idempotency specs stay on.
//
// Specs that csi-sanity skips against hostvol, and why (each is skipped by
// csi-sanity itself because hostvol does not advertise the capability):
//   - ControllerPublishVolume/Unpublish: attachRequired is false; local
//     volumes need no attach step.
//   - Snapshots (Create/Delete/ListSnapshots, create from snapshot): not yet
//     implemented; CREATE_DELETE_SNAPSHOT is not advertised.
//   - Clone (create from source volume): CLONE_VOLUME is not advertised.
//   - Expansion (ControllerExpandVolume, NodeExpandVolume): EXPAND_VOLUME is
//     not advertised yet for directory volumes (they have no enforced size
//     until project quotas land).
//   - ModifyVolume / VolumeAttributesClass: MODIFY_VOLUME is not advertised.
//   - ControllerGetVolume, volume and storage health: not advertised yet.
//   - GroupController (volume group snapshots): not implemented.
//   - ListVolumes pagination with concurrent changes is an XIt (pending) in
//     csi-sanity itself.
func Config(t *testing.T, endpoint string) sanity.TestConfig {
	t.Helper()
	base := t.TempDir()
	cfg := sanity.NewTestConfig()
	cfg.Address = endpoint
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
	t.Cleanup(func() { testutil.UnmountUnder(t, base) })
	return cfg
}
