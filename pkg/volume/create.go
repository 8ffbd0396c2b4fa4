package volume

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// minBlockSize is the smallest raw block volume.
const minBlockSize = 1 << 20

// imageAlign is the granularity of image sizes (filesystem block size).
const imageAlign = 4096

// maxImageSize is the largest image size: the largest whole number of
// 4 KiB blocks an int64 (off_t) holds.
const maxImageSize = math.MaxInt64 / imageAlign * imageAlign

// roundImageSize rounds an image size up to whole 4 KiB blocks. ok is false
// when the rounded size would not fit in an int64: rounding would overflow
// into a negative size, and no filesystem holds such a file anyway. Every
// image size (create and expand) goes through here; each caller decides
// what its refusal means to the CO.
func roundImageSize(size int64) (rounded int64, ok bool) {
	if size > maxImageSize {
		return 0, false
	}
	return (size + imageAlign - 1) / imageAlign * imageAlign, true
}

// chooseSize picks the capacity for a request: the required size, else the
// default capped by the limit; images are rounded up to whole 4 KiB blocks
// and to the filesystem's minimum, within the limit.
func chooseSize(req CreateRequest) (int64, error) {
	if req.LimitBytes > 0 && req.RequiredBytes > req.LimitBytes {
		return 0, fmt.Errorf("%w: required %d bytes exceeds limit %d", ErrOutOfRange, req.RequiredBytes, req.LimitBytes)
	}
	size := req.RequiredBytes
	if size == 0 {
		size = req.DefaultBytes
		if req.LimitBytes > 0 && size > req.LimitBytes {
			size = req.LimitBytes
		}
	}
	if !req.Kind.HasImage() {
		return size, nil
	}
	minSize := int64(minBlockSize)
	if req.Kind == KindLoop {
		minSize = fsutil.MinSize[req.FsType]
	}
	rounded, ok := roundImageSize(max(size, minSize))
	if !ok {
		// No pool holds this much: the same answer as for any size larger
		// than the pool (docs/design/loop-block.md).
		return 0, fmt.Errorf("%w: %d bytes is more than any pool can hold", ErrNoSpace, size)
	}
	size = rounded
	if req.LimitBytes > 0 && size > req.LimitBytes {
		return 0, fmt.Errorf("%w: a %s volume needs at least %d bytes (whole 4 KiB blocks), the limit is %d", ErrOutOfRange, kindName(req.Kind, req.FsType), size, req.LimitBytes)
	}
	return size, nil
}

func kindName(k Kind, fsType string) string {
	if k == KindLoop {
		return "loop " + fsType
	}
	return string(k)
}

// compatible reports whether an existing volume satisfies a create request
// (CSI: same name, compatible capacity, capabilities and parameters).
func compatible(v Volume, req CreateRequest) bool {
	if v.Kind != req.Kind || v.Pool != req.Pool || v.ReaderOnly != req.ReaderOnly || v.FsType != req.FsType || v.Ephemeral != req.Ephemeral ||
		v.SingleWriter != req.SingleWriter || v.MultiNode != req.MultiNode {
		return false
	}
	if v.CapacityBytes < req.RequiredBytes || v.SourceSnapshotID != req.SourceSnapshotID || v.SourceVolumeID != req.SourceVolumeID {
		return false
	}
	if v.Kind == KindDir && (v.SizeLimit.orOptional() != req.SizeLimit.orOptional() || v.InodeLimit != req.InodeLimit) {
		return false
	}
	return req.LimitBytes == 0 || v.CapacityBytes <= req.LimitBytes
}

// Create makes a volume, or returns the existing one of the same name when
// it is compatible. It takes the lock of the volume's ID
// (volumeid.FromName(req.Name)).
//
// Order of durable steps: record "creating" -> data -> record "ready". A
// crash after the first leaves a record that Load rolls back; a crash after
// the last leaves a complete volume. Data never exists without a record.
func (c *Controller) Create(req CreateRequest) (v Volume, err error) {
	err = c.locked(volumeid.FromName(req.Name), func() error {
		v, err = c.create(req)
		return err
	})
	return v, err
}

// create is Create under the lock.
func (c *Controller) create(req CreateRequest) (Volume, error) {
	p := c.pools[req.Pool]
	if p == nil {
		return Volume{}, fmt.Errorf("%w: %q", ErrPoolUnavailable, req.Pool)
	}
	if existing, done, err := c.settleExisting(req); err != nil || done {
		return existing, err
	}
	src, err := c.resolveSource(&req)
	if err != nil {
		return Volume{}, fmt.Errorf("volume %s: %w", untrusted.Quote(req.Name), err)
	}
	v, limited, err := c.newRecord(p, req)
	if err != nil {
		return Volume{}, err
	}
	st, err := p.Stats()
	if err != nil {
		return Volume{}, err
	}
	if err := c.promises.reserve(v.ID, p.Name, st.AvailableBytes, v.CapacityBytes); err != nil {
		return Volume{}, fmt.Errorf("volume %s: %w", untrusted.Quote(req.Name), err)
	}
	v, err = c.createDurably(p, v, limited, src)
	if err != nil {
		c.promises.drop(v.ID)
		return Volume{}, err
	}
	c.promises.set(v.ID, p.Name, c.unallocated(p, v))
	failpoint.Hit("create-after-ready")
	klog.V(2).InfoS("Volume created", "volumeID", v.ID, "name", req.Name, "pool", p.Name, "capacityBytes", v.CapacityBytes, "limitedBy", limitedBy(v))
	return v, nil
}

// settleExisting looks for a record under the request's ID. done is true
// when the request is answered by it: the existing volume when compatible,
// else an error. A record an earlier attempt in this process left half-way
// (its rollback failed too) is removed, and creation goes on afresh.
func (c *Controller) settleExisting(req CreateRequest) (existing Volume, done bool, err error) {
	id := volumeid.FromName(req.Name)
	existing, es, err := c.lookup(id)
	switch {
	case errors.Is(err, ErrNotFound):
		return Volume{}, false, nil
	case err != nil:
		return Volume{}, true, err
	case existing.Name != req.Name:
		return Volume{}, true, fmt.Errorf("%w: ID %s is taken by volume %s", ErrAlreadyExists, id, untrusted.Quote(existing.Name))
	case existing.State == StateReady:
		if !compatible(existing, req) {
			return Volume{}, true, fmt.Errorf("%w: %s (%s) has %d bytes in pool %q", ErrAlreadyExists, untrusted.Quote(req.Name), id, existing.CapacityBytes, existing.Pool)
		}
		return existing, true, nil
	case existing.CreatedBy != c.nodeID:
		// A shared-pool volume another node is creating or deleting: only
		// that node may finish or roll it back.
		return Volume{}, true, fmt.Errorf("%w: %s (%s) is %s by node %q", ErrBusy, untrusted.Quote(req.Name), id, existing.State, existing.CreatedBy)
	}
	ep := c.pools[existing.Pool]
	if ep == nil {
		return Volume{}, true, fmt.Errorf("%w: %q", ErrPoolUnavailable, existing.Pool)
	}
	if err := c.removeVolume(es, ep, existing); err != nil {
		return Volume{}, true, err
	}
	return Volume{}, false, nil
}

// newRecord checks what a new volume needs (loop devices, a filesystem,
// its size, a size limit the pool can enforce, no stray data under its ID)
// and returns its "creating" record, and whether its size is to be
// limited.
func (c *Controller) newRecord(p *pool.Pool, req CreateRequest) (Volume, bool, error) {
	if req.Kind.HasImage() && !c.images {
		return Volume{}, false, fmt.Errorf("%w: %s volumes need loop devices, which this node does not offer", ErrInvalid, req.Kind)
	}
	if req.Kind == KindLoop {
		if _, err := fsutil.Check(req.FsType); err != nil || req.FsType == "" {
			return Volume{}, false, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	size, err := chooseSize(req)
	if err != nil {
		return Volume{}, false, err
	}
	limited := false
	if req.Kind == KindDir {
		if limited, err = c.sizeLimitFor(p, req.SizeLimit, req.InodeLimit); err != nil {
			return Volume{}, false, fmt.Errorf("volume %s: %w", untrusted.Quote(req.Name), err)
		}
	}
	id := volumeid.FromName(req.Name)
	// Data without any record is not ours to reuse or remove (Load reports
	// it and leaves it in place): only DeleteVolume removes data.
	if ok, err := dataExists(p, Volume{ID: id, Kind: req.Kind}); err != nil {
		return Volume{}, false, err
	} else if ok {
		return Volume{}, false, fmt.Errorf("%w: data for %s already exists in pool %q without a volume record; an admin must restore or remove it", ErrAlreadyExists, untrusted.Quote(req.Name), p.Name)
	}
	v := Volume{
		Schema: recordSchema, ID: id, Name: req.Name, Kind: req.Kind, Pool: p.Name,
		CapacityBytes: size, FsType: req.FsType, CreatedBy: c.nodeID,
		ReaderOnly: req.ReaderOnly, SingleWriter: req.SingleWriter, MultiNode: req.MultiNode,
		PVCName: req.PVCName, PVCNamespace: req.PVCNamespace, Ephemeral: req.Ephemeral,
		SourceSnapshotID: req.SourceSnapshotID, SourceVolumeID: req.SourceVolumeID,
		State: StateCreating, CreatedAt: time.Now().UTC().Truncate(time.Second),
	}
	if !p.Shared {
		v.Node = c.nodeID
	}
	if req.Kind == KindDir {
		v.SizeLimit, v.InodeLimit = req.SizeLimit.orOptional(), req.InodeLimit
	}
	return v, limited, nil
}

// createDurably writes the "creating" record, makes the data and marks the
// record ready; a failure removes what it made.
func (c *Controller) createDurably(p *pool.Pool, v Volume, limited bool, src *contentSource) (Volume, error) {
	s := c.store(p.Name)
	releaseQuota, err := c.reserveQuota(p, &v, limited)
	if err != nil {
		return v, err
	}
	if err := s.Put(v.ID, v); err != nil {
		releaseQuota()
		return v, err
	}
	failpoint.Hit("create-after-intent")
	if src != nil {
		v, err = c.createFromSource(p, v, src)
	} else {
		v, err = c.createData(p, v)
	}
	if err != nil {
		c.rollBack(s, p, v)
		if errors.Is(err, unix.ENOSPC) && !errors.Is(err, ErrNoSpace) {
			// A full pool (filled outside hostvol's promises) refused a
			// mkdir, a subvolume or an image: RESOURCE_EXHAUSTED, like a
			// create the promises refuse.
			err = fmt.Errorf("volume %s in pool %q: %w: %w", untrusted.Quote(v.Name), p.Name, ErrNoSpace, err)
		}
		return v, err
	}
	failpoint.Hit("create-after-data")
	v.State, v.Frozen = StateReady, ""
	if err := s.Put(v.ID, v); err != nil {
		c.rollBack(s, p, v)
		return v, err
	}
	if !p.Shared {
		c.setIndex(v)
	}
	return v, nil
}

// rollBack removes what a failed creation made; what it cannot remove is
// removed by the next create of the name or at start-up.
func (c *Controller) rollBack(s *records.Store, p *pool.Pool, v Volume) {
	if err := c.removeVolume(s, p, v); err != nil {
		klog.ErrorS(err, "Rollback of failed creation incomplete; it is retried on the next create or at start-up", "volumeID", v.ID)
	}
}

// createData makes a volume's data. It returns the volume completed (a
// btrfs subvolume's ID), or on error as far as it got, for the rollback.
func (c *Controller) createData(p *pool.Pool, v Volume) (Volume, error) {
	if v.Kind.HasImage() {
		return v, c.createImage(p, v)
	}
	if v.Quota != nil {
		return c.createLimitedDir(p, v)
	}
	err := p.CreateDir(v.ID)
	if errors.Is(err, os.ErrExist) {
		// Left by an interrupted attempt under a "creating" record: ours.
		if err := p.RemoveDir(v.ID); err != nil {
			return v, err
		}
		err = p.CreateDir(v.ID)
	}
	if err != nil {
		return v, fmt.Errorf("create data of %s: %w", v.ID, err)
	}
	return v, nil
}

// createImage makes the sparse image of a loop or block volume and, for a
// loop volume, formats it: mkfs works on the file directly, so no loop
// device is needed until the volume is staged.
func (c *Controller) createImage(p *pool.Pool, v Volume) error {
	// A loop volume's image is formatted next, and mkfs fsyncs it.
	syncFile := v.Kind != KindLoop
	err := p.CreateImage(v.ID, v.CapacityBytes, syncFile)
	if errors.Is(err, os.ErrExist) {
		if err := p.RemoveImage(v.ID); err != nil {
			return err
		}
		err = p.CreateImage(v.ID, v.CapacityBytes, syncFile)
	}
	if err != nil {
		return fmt.Errorf("create image of %s: %w", v.ID, err)
	}
	if v.Kind == KindLoop {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if err := c.fs.Format(ctx, v.FsType, p.ImagePath(v.ID)); err != nil {
			if errors.Is(err, fsutil.ErrNoSpace) || poolFull(p) {
				return fmt.Errorf("format %s in pool %q: %w: %w", v.ID, p.Name, ErrNoSpace, err)
			}
			return fmt.Errorf("format %s: %w", v.ID, err)
		}
	}
	return nil
}

// poolFull reports whether a pool has (almost) nothing left, read right
// after a format failed and before the rollback frees the image's blocks.
// The promises counted the image whole, so a pool this full means
// something outside hostvol filled it (or the filesystem's own metadata
// needs outgrew what statfs showed). mkfs naming ENOSPC (fsutil.ErrNoSpace)
// is the exact signal; this one also covers a tool that reports the errno
// otherwise (a number, another wording), and is cheap: one statfs, on the
// failure path only. The threshold is the one under which health calls a
// filesystem exhausted: ext4 and XFS refuse writes with some tens of KiB
// still shown available.
func poolFull(p *pool.Pool) bool {
	st, err := p.Stats()
	return err == nil && st.AvailableBytes < exhaustedBytes
}
