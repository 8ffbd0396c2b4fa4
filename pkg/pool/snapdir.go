package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

func snapshotDirName(id string) string { return filepath.Join(snapshotsDir, id) }
func volumeDirName(id string) string   { return filepath.Join(volumesDir, id) }

// SnapshotDirPath is the host path of a directory volume's snapshot. id
// must be a validated snapshot ID.
func (p *Pool) SnapshotDirPath(id string) string {
	return filepath.Join(p.Path, snapshotDirName(id))
}

// SnapshotDirExists reports whether a snapshot's directory exists and is a
// real directory (not a symlink).
func (p *Pool) SnapshotDirExists(id string) (bool, error) {
	fi, err := p.root.Lstat(snapshotDirName(id))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("snapshot %s in pool %q is not a directory (%s)", id, p.Name, fi.Mode().Type())
	}
	return true, nil
}

// openDirIn opens the directory name of the pool without following a
// symlink, and so that listing it leaves its access time (O_NOATIME: a
// copy's source, and the destination checked for being empty, keep theirs).
func (p *Pool) openDirIn(name string) (*os.File, error) {
	f, err := p.root.OpenFile(name, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) { // not the owner, without CAP_FOWNER
		f, err = p.root.OpenFile(name, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	}
	return f, err
}

// SnapshotSubvolume makes a read-only btrfs snapshot of the directory
// volume volID, which must be a subvolume, at snapshots/<snapID>: instant,
// sharing every block with the volume, with a qgroup of its own (no
// limit, nothing inherited) when quotas are on. Durable on return: the
// kernel commits the snapshot's transaction before answering, and the
// parent is fsynced besides. An existing snapshot is an error wrapping
// os.ErrExist, a missing volume one wrapping os.ErrNotExist.
func (p *Pool) SnapshotSubvolume(volID, snapID string) error {
	return p.snapshotSubvolume(volumeDirName(volID), snapshotsDir, snapID, true)
}

// RestoreSubvolume makes a writable btrfs snapshot of the snapshot snapID
// at volumes/<volID>, as SnapshotSubvolume does. The new subvolume has its
// own qgroup, without a limit: the caller sets it.
func (p *Pool) RestoreSubvolume(snapID, volID string) error {
	return p.snapshotSubvolume(snapshotDirName(snapID), volumesDir, volID, false)
}

// CloneSubvolume makes a writable btrfs snapshot of the directory volume
// srcVolID at volumes/<volID>, as RestoreSubvolume does.
func (p *Pool) CloneSubvolume(srcVolID, volID string) error {
	return p.snapshotSubvolume(volumeDirName(srcVolID), volumesDir, volID, false)
}

func (p *Pool) snapshotSubvolume(srcName, parentName, name string, readOnly bool) error {
	src, err := p.openDirIn(srcName)
	if err != nil {
		return err
	}
	defer src.Close()
	id, err := quota.BtrfsSubvolumeID(src)
	if err != nil {
		return err
	}
	if id == 0 {
		return fmt.Errorf("%s in pool %q is not a btrfs subvolume", srcName, p.Name)
	}
	parent, err := p.openDirIn(parentName)
	if err != nil {
		return err
	}
	defer parent.Close()
	if err := quota.BtrfsSnapshot(src, parent, name, readOnly); err != nil {
		return err
	}
	return parent.Sync()
}

// SnapshotSubvolumeID returns the btrfs subvolume ID of a snapshot's
// directory (its qgroup is 0/<ID>), or 0 if it is not a subvolume. A
// missing directory is an error wrapping os.ErrNotExist.
func (p *Pool) SnapshotSubvolumeID(id string) (uint64, error) {
	d, err := p.openDirIn(snapshotDirName(id))
	if err != nil {
		return 0, err
	}
	defer d.Close()
	return quota.BtrfsSubvolumeID(d)
}

// CopyDirToSnapshot creates snapshots/<snapID> and copies the tree of the
// directory volume volID into it, on any filesystem (copyTree says how);
// the snapshot's root gets the volume root's owner, mode and times. It
// returns the bytes of file data copied. An existing snapshot directory is
// an error wrapping os.ErrExist, a missing volume one wrapping
// os.ErrNotExist. A copy that fails or is cancelled (ctx) removes the
// whole snapshot directory; one that a crash stops leaves it for the
// caller's records to find.
func (p *Pool) CopyDirToSnapshot(ctx context.Context, volID, snapID string, o CopyOptions) (n int64, err error) {
	src, err := p.openDirIn(volumeDirName(volID))
	if err != nil {
		return 0, err
	}
	defer src.Close()
	name := snapshotDirName(snapID)
	if err := p.root.Mkdir(name, 0o700); err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			if rerr := p.RemoveSnapshotDir(snapID); rerr != nil {
				klog.ErrorS(rerr, "Could not remove a failed snapshot copy", "pool", p.Name, "snapshotID", snapID)
			}
		}
	}()
	dst, err := p.openDirIn(name)
	if err != nil {
		return 0, err
	}
	defer dst.Close()
	return copyTree(ctx, src, dst, o)
}

// CopyDirFromSnapshot copies the tree of snapshot snapID into the existing,
// empty directory volume volID (made by the caller, so that everything
// made inside inherits its project ID under project quotas), and gives the
// volume's root the snapshot root's owner, mode, extended attributes and
// times. It returns the bytes of file data copied. A volume that is not
// empty is an error wrapping os.ErrExist. A copy that fails or is
// cancelled leaves the volume half filled: the caller removes the volume.
func (p *Pool) CopyDirFromSnapshot(ctx context.Context, snapID, volID string, o CopyOptions) (int64, error) {
	return p.copyDirInto(ctx, snapshotDirName(snapID), volID, o)
}

// CloneDir copies the tree of the directory volume srcVolID into the
// existing, empty directory volume volID, as CopyDirFromSnapshot does.
func (p *Pool) CloneDir(ctx context.Context, srcVolID, volID string, o CopyOptions) (int64, error) {
	return p.copyDirInto(ctx, volumeDirName(srcVolID), volID, o)
}

func (p *Pool) copyDirInto(ctx context.Context, srcName, volID string, o CopyOptions) (int64, error) {
	src, err := p.openDirIn(srcName)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dst, err := p.openDirIn(volumeDirName(volID))
	if err != nil {
		return 0, err
	}
	defer dst.Close()
	names, err := dst.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if len(names) > 0 {
		return 0, fmt.Errorf("volume %s in pool %q is not empty: %w", volID, p.Name, os.ErrExist)
	}
	return copyTree(ctx, src, dst, o)
}

// RemoveSnapshotDir removes a snapshot's directory, whatever it is: a
// btrfs subvolume, read-only or not (BTRFS_IOC_SNAP_DESTROY), or a tree of
// files, removed entry by entry without following a symlink and whatever
// the modes of its directories. The removal is durable on return (an fsync
// of snapshots/, which btrfs turns into a commit for a deleted
// subvolume). A missing directory is not an error.
func (p *Pool) RemoveSnapshotDir(id string) error {
	parent, err := p.openDirIn(snapshotsDir)
	if err != nil {
		return err
	}
	defer parent.Close()
	if err := removeEntry(parent, id); err != nil {
		return fmt.Errorf("remove snapshot %s in pool %q: %w", id, p.Name, err)
	}
	return parent.Sync()
}

// SnapshotEntries lists the snapshot IDs that have data in the pool:
// directories in snapshots/ and images (.img trimmed), for start-up's
// report of strays. Names that are not snapshot IDs are left out.
func (p *Pool) SnapshotEntries() ([]string, error) {
	names, err := p.readDir(snapshotsDir)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var ids []string
	for _, n := range names {
		id := strings.TrimSuffix(n, imageExt)
		if volumeid.ValidateSnapshot(id) != nil || seen[id] {
			continue
		}
		seen[id] = true
		ids = append(ids, id)
	}
	return ids, nil
}
