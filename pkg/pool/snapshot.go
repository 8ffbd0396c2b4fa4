package pool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
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

// SnapshotImage copies the image of volume volID to the image of snapshot
// snapID: by FICLONE when reflink is set (instant: the copy shares the
// image's blocks until either side writes them; DetectCopy says whether
// the pool can), else by copying the image's data and keeping its holes
// (copy_file_range, which a filesystem may still serve by sharing
// blocks). The copy is durable on return. An existing snapshot image is an
// error wrapping os.ErrExist; a failed copy removes what it wrote.
func (p *Pool) SnapshotImage(volID, snapID string, reflink bool) error {
	return p.copyFile(imageName(volID), snapshotImageName(snapID), reflink)
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
func (p *Pool) copyFile(src, dst string, reflink bool) (err error) {
	s, err := p.root.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
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
	if reflink {
		err = unix.IoctlFileClone(int(d.Fd()), int(s.Fd()))
	} else {
		err = copySparse(d, s, fi.Size())
	}
	if err != nil {
		return fmt.Errorf("copy %s to %s in pool %q: %w", src, dst, p.Name, err)
	}
	if err := d.Sync(); err != nil {
		return err
	}
	return p.syncDir(filepath.Dir(dst))
}

// copySparse copies the data of src (size bytes) into the empty dst,
// region by region as SEEK_DATA and SEEK_HOLE find them, so that holes stay
// holes.
func copySparse(dst, src *os.File, size int64) error {
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data from off to the end
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for data < hole {
			roff, woff := data, data
			n, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(min(hole-data, 1<<30)), 0)
			if err != nil {
				return err
			}
			if n == 0 {
				return io.ErrUnexpectedEOF
			}
			data += int64(n)
		}
		off = hole
	}
	return dst.Truncate(size)
}
