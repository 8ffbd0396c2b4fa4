package volume

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
)

// Restores and clones: CreateVolume with a snapshot or a volume as its
// content source. The new volume is made on the source's node, in the
// source's pool, of the source's kind and filesystem; its data starts as
// the source's by the fastest method the pool offers (a writable btrfs
// snapshot, a reflink, else a copy); a larger size than the source's
// grows the image or the limit (and the filesystem at the next stage); a
// smaller one is ErrOutOfRange.

// restoreWait bounds how long a restore waits for its snapshot's
// background copy before it answers ErrBusy (the CO retries).
const restoreWait = 30 * time.Second

// contentSource is a create request's resolved source.
type contentSource struct {
	snap *Snapshot // restore
	vol  *Volume   // clone
	// size is the smallest capacity the new volume may have.
	size int64
	// allowLiveCopy: a clone may copy a volume published read-write.
	allowLiveCopy bool
}

func (cs *contentSource) kind() (Kind, string, string) {
	if cs.snap != nil {
		return cs.snap.Kind, cs.snap.FsType, cs.snap.Pool
	}
	return cs.vol.Kind, cs.vol.FsType, cs.vol.Pool
}

func (cs *contentSource) what() string {
	if cs.snap != nil {
		return "snapshot " + cs.snap.ID
	}
	return "volume " + cs.vol.ID
}

// resolveSource finds a create request's source and checks the request
// against it; on return the request's sizes are at least the source's.
// Nil when the request has none.
func (c *Controller) resolveSource(req *CreateRequest) (*contentSource, error) {
	cs := contentSource{allowLiveCopy: req.AllowLiveCopy}
	switch {
	case req.SourceSnapshotID != "":
		snap, ok := c.snapshot(req.SourceSnapshotID)
		if !ok || snap.State == StateCreating || snap.State == StateDeleting {
			return nil, c.notHere(req.SourceSnapshotID)
		}
		snap, err := c.waitReady(snap, restoreWait)
		if err != nil {
			return nil, err
		}
		cs.snap, cs.size = &snap, snap.SizeBytes
	case req.SourceVolumeID != "":
		v, err := c.Get(req.SourceVolumeID)
		if errors.Is(err, ErrNotFound) || (err == nil && c.otherNode(v)) {
			return nil, fmt.Errorf("%w: volume %s, the source of the clone, is not on node %q; a clone is made on its source's node", ErrElsewhere, req.SourceVolumeID, c.nodeID)
		}
		if err != nil {
			return nil, err
		}
		cs.vol, cs.size = &v, v.CapacityBytes
	default:
		return nil, nil
	}
	kind, fsType, poolName := cs.kind()
	switch {
	case kind != req.Kind || (kind == KindLoop && fsType != req.FsType):
		return nil, fmt.Errorf("%w: %s holds a %s volume, the request asks for a %s volume", ErrInvalid, cs.what(), kindName(kind, fsType), kindName(req.Kind, req.FsType))
	case poolName != req.Pool:
		return nil, fmt.Errorf("%w: %s is in pool %q and can only be restored or cloned there; the request names pool %q", ErrInvalid, cs.what(), poolName, req.Pool)
	case req.RequiredBytes > 0 && req.RequiredBytes < cs.size, req.LimitBytes > 0 && req.LimitBytes < cs.size:
		return nil, fmt.Errorf("%w: %s holds %d bytes; a volume made from it cannot be smaller (required %d, limit %d)", ErrOutOfRange, cs.what(), cs.size, req.RequiredBytes, req.LimitBytes)
	}
	req.DefaultBytes = max(req.DefaultBytes, cs.size)
	return &cs, nil
}

// createFromSource makes a new volume's data from its source. It returns
// the volume completed (a subvolume's ID, a growth pending on the node),
// or on error as far as it got, for the rollback.
func (c *Controller) createFromSource(p *pool.Pool, v Volume, cs *contentSource) (Volume, error) {
	if cs.vol != nil {
		var out Volume
		err := c.locked(cs.vol.ID, func() error {
			src, err := c.Get(cs.vol.ID) // again, under its lock
			if err != nil {
				return err
			}
			out, err = c.cloneData(p, v, src, cs.allowLiveCopy)
			return err
		})
		return out, err
	}
	if v.Kind.HasImage() {
		if err := p.RestoreImage(bg(), cs.snap.ID, v.ID, pool.CopyOptions{Reflink: c.copySupport(p).Reflink}); err != nil {
			return v, fmt.Errorf("restore snapshot %s into %s: %w", cs.snap.ID, v.ID, err)
		}
		return c.growCopied(p, v, cs.size)
	}
	if cs.snap.Method == MethodSubvolume && c.subvolumeLimited(v) {
		if err := p.RestoreSubvolume(cs.snap.ID, v.ID); err != nil {
			return v, fmt.Errorf("restore snapshot %s into %s: %w", cs.snap.ID, v.ID, err)
		}
		return c.limitCopiedDir(p, v)
	}
	v, err := c.createEmptyDir(p, v)
	if err != nil {
		return v, err
	}
	if _, err := p.CopyDirFromSnapshot(bg(), cs.snap.ID, v.ID, pool.CopyOptions{Reflink: c.copySupport(p).Reflink}); err != nil {
		return v, fmt.Errorf("copy snapshot %s into %s: %w", cs.snap.ID, v.ID, err)
	}
	return v, nil
}

// cloneData makes a clone's data from src, under src's lock: its image
// reflinked with the filesystem frozen (or copied with it synced), or its
// directory snapshotted (btrfs) or copied. A copy of a volume published
// read-write is refused unless the class allows it.
func (c *Controller) cloneData(p *pool.Pool, v, src Volume, allowLiveCopy bool) (Volume, error) {
	use, err := c.node.snapshotUse(src)
	if err != nil {
		return v, err
	}
	reflink := c.copySupport(p).Reflink
	instant := (v.Kind.HasImage() && reflink) || (!v.Kind.HasImage() && subvolume(src) && c.subvolumeLimited(v))
	if !instant && len(use.writers) > 0 && !allowLiveCopy {
		return v, fmt.Errorf("%w: volume %s is published read-write at %s, and pool %q can only clone it by copying it file by file, "+
			"which is not a consistent copy of a volume being written; stop the pods that write it, or set allowLiveCopy: \"true\" in the StorageClass to accept such a copy",
			ErrNotAllowed, src.ID, strings.Join(use.writers, ", "), p.Name)
	}
	switch {
	case v.Kind.HasImage() && reflink:
		// The freeze is recorded in the new volume's "creating" record,
		// which start-up thaws and rolls back after a crash.
		record := func(frozen string) error {
			v.Frozen = frozen
			return c.store(p.Name).Put(v.ID, v)
		}
		err := quiesce(use, record, func() error {
			return p.CloneImage(bg(), src.ID, v.ID, pool.CopyOptions{Reflink: true})
		})
		if err != nil {
			return v, fmt.Errorf("clone %s into %s: %w", src.ID, v.ID, err)
		}
		return c.growCopied(p, v, src.CapacityBytes)
	case v.Kind.HasImage():
		if err := settle(use); err != nil {
			return v, err
		}
		if err := p.CloneImage(bg(), src.ID, v.ID, pool.CopyOptions{}); err != nil {
			return v, fmt.Errorf("clone %s into %s: %w", src.ID, v.ID, err)
		}
		return c.growCopied(p, v, src.CapacityBytes)
	case instant:
		if err := p.CloneSubvolume(src.ID, v.ID); err != nil {
			return v, fmt.Errorf("clone %s into %s: %w", src.ID, v.ID, err)
		}
		return c.limitCopiedDir(p, v)
	}
	v, err = c.createEmptyDir(p, v)
	if err != nil {
		return v, err
	}
	if _, err := p.CloneDir(bg(), src.ID, v.ID, pool.CopyOptions{Reflink: reflink}); err != nil {
		return v, fmt.Errorf("copy %s into %s: %w", src.ID, v.ID, err)
	}
	return v, nil
}

// growCopied grows a restored or cloned image to the volume's capacity;
// the filesystem follows at the next stage.
func (c *Controller) growCopied(p *pool.Pool, v Volume, from int64) (Volume, error) {
	if v.CapacityBytes <= from {
		return v, nil
	}
	if err := p.GrowImage(v.ID, v.CapacityBytes); err != nil {
		return v, fmt.Errorf("grow %s to %d bytes: %w", v.ID, v.CapacityBytes, err)
	}
	v.NodeExpandPending = v.Kind == KindLoop
	return v, nil
}

// subvolume reports whether a directory volume is a btrfs subvolume with a
// qgroup limit.
func subvolume(v Volume) bool {
	return v.Quota != nil && v.Quota.Method == quota.BtrfsQgroup && v.Quota.SubvolumeID != 0
}

// subvolumeLimited reports whether a new directory volume is to be a btrfs
// subvolume with a qgroup limit.
func (c *Controller) subvolumeLimited(v Volume) bool {
	return v.Quota != nil && v.Quota.Method == quota.BtrfsQgroup && c.enforcerOf(v) != nil
}

// limitCopiedDir sets the limit of a restored or cloned subvolume: its
// own qgroup (made by the kernel with the subvolume, never inherited), at
// the volume's capacity.
func (c *Controller) limitCopiedDir(p *pool.Pool, v Volume) (Volume, error) {
	return limitDir(p, c.enforcerOf(v), v)
}

// createEmptyDir makes a directory volume's empty directory (limited when
// the record says so), for a copy into it.
func (c *Controller) createEmptyDir(p *pool.Pool, v Volume) (Volume, error) {
	if v.Quota != nil {
		return c.createLimitedDir(p, v)
	}
	if err := p.CreateDir(v.ID); err != nil && !errors.Is(err, os.ErrExist) {
		return v, fmt.Errorf("create data of %s: %w", v.ID, err)
	}
	return v, nil
}

// copySupport is what the pool can do (pool.DetectCopy at start-up).
func (c *Controller) copySupport(p *pool.Pool) pool.CopySupport { return c.copy[p.Name] }
