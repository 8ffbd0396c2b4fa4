package pool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
)

// snapshotsDir holds the data of snapshots: <pool>/snapshots/<ID>.img for
// an image's. A snapshot lives in its source's pool: neither a reflink nor
// a btrfs snapshot crosses filesystems.
const snapshotsDir = "snapshots"

func snapshotImageName(id string) string { return filepath.Join(snapshotsDir, id+imageExt) }

// SnapshotImagePath is where a snapshot's image lives. id must be a
// validated snapshot ID.
func (p *Pool) SnapshotImagePath(id string) string {
	return filepath.Join(p.Path, snapshotImageName(id))
}

// CopyOptions say how a copy is made.
type CopyOptions struct {
	// Reflink clones each regular file (FICLONE): a whole image, or each
	// file of a tree. Else the data is copied region by region, keeping
	// holes.
	Reflink bool
	// Progress, if set, is called now and then with the bytes of file data
	// copied so far (for the metric and log line of a background copy).
	Progress func(done int64)
}

// SnapshotImage copies the image of volume volID to the image of snapshot
// snapID: by FICLONE when o.Reflink is set (instant: the copy shares the
// image's blocks until either side writes them; DetectCopy says whether
// the pool can; no fallback), else by copying the image's data and keeping
// its holes (copy_file_range, which a filesystem may still serve by
// sharing blocks). The copy is durable on return. An existing snapshot
// image is an error wrapping os.ErrExist; a missing image one wrapping
// os.ErrNotExist; a failed or cancelled copy removes what it wrote.
func (p *Pool) SnapshotImage(ctx context.Context, volID, snapID string, o CopyOptions) error {
	return p.copyFile(ctx, imageName(volID), snapshotImageName(snapID), o)
}

// RestoreImage copies the image of snapshot snapID to the new image of
// volume volID, as SnapshotImage does the other way.
func (p *Pool) RestoreImage(ctx context.Context, snapID, volID string, o CopyOptions) error {
	return p.copyFile(ctx, snapshotImageName(snapID), imageName(volID), o)
}

// CloneImage copies the image of volume srcVolID to the new image of volume
// volID, as SnapshotImage does.
func (p *Pool) CloneImage(ctx context.Context, srcVolID, volID string, o CopyOptions) error {
	return p.copyFile(ctx, imageName(srcVolID), imageName(volID), o)
}

// SnapshotImageExists reports whether a snapshot's image exists (a regular
// file: anything else there is an error).
func (p *Pool) SnapshotImageExists(id string) (bool, error) {
	_, _, err := p.SnapshotImageUsage(id)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// SnapshotImageUsage returns a snapshot image's apparent size and the bytes
// it occupies on the pool's filesystem.
func (p *Pool) SnapshotImageUsage(id string) (size, allocated int64, err error) {
	fi, st, err := p.statRegular(snapshotImageName(id), "image of snapshot "+id)
	if err != nil {
		return 0, 0, err
	}
	return fi.Size(), st.Blocks * 512, nil
}

// RemoveSnapshotImage removes a snapshot's image and makes the removal
// durable. A missing image is not an error.
func (p *Pool) RemoveSnapshotImage(id string) error {
	if err := p.root.Remove(snapshotImageName(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return p.syncDir(snapshotsDir)
}

// copyFile copies the regular file src to the new file dst (names in the
// pool), then makes dst and its directory entry durable; on failure dst is
// removed.
func (p *Pool) copyFile(ctx context.Context, src, dst string, o CopyOptions) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	s, err := p.root.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	fi, err := s.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s in pool %q is not a regular file", src, p.Name)
	}
	d, err := p.root.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = p.root.Remove(dst)
		}
	}()
	if o.Reflink {
		err = unix.IoctlFileClone(int(d.Fd()), int(s.Fd()))
		if err == nil && o.Progress != nil {
			o.Progress(fi.Size())
		}
	} else {
		_, err = copySparse(ctx, d, s, fi.Size(), o.Progress)
	}
	if err != nil {
		return fmt.Errorf("copy %s to %s in pool %q: %w", src, dst, p.Name, err)
	}
	failpoint.Hit("snapshot-mid-copy")
	if err := d.Sync(); err != nil {
		return err
	}
	return p.syncDir(filepath.Dir(dst))
}

// copyChunk is the most copySparse copies between two looks at its context.
const copyChunk = 16 << 20

// copySparse copies the data of src (size bytes) into the empty dst,
// region by region as SEEK_DATA and SEEK_HOLE find them, so that holes stay
// holes. It stops with ctx's error between chunks, and reports the bytes
// copied so far to progress (if set) after each. It returns the bytes of
// data copied.
func copySparse(ctx context.Context, dst, src *os.File, size int64, progress func(int64)) (int64, error) {
	var done int64
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data from off to the end
		}
		if err != nil {
			return done, err
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return done, err
		}
		for data < hole {
			if err := ctx.Err(); err != nil {
				return done, err
			}
			roff, woff := data, data
			n, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(min(hole-data, copyChunk)), 0)
			if err != nil {
				return done, err
			}
			if n == 0 {
				break // the file shrank under us: copy what is left of it
			}
			data += int64(n)
			done += int64(n)
			if progress != nil {
				progress(done)
			}
		}
		off = hole
	}
	return done, dst.Truncate(size)
}
