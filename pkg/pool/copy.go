package pool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// CopySupport is how a pool can copy a volume's data, for snapshots,
// restores and clones: by btrfs subvolume snapshot (directory volumes that
// are subvolumes), by reflink (FICLONE: the copy shares the original's
// blocks until either side writes them; XFS with reflink=1, btrfs), or
// else only by reading and writing every byte.
type CopySupport struct {
	// Btrfs is true on a btrfs filesystem.
	Btrfs bool
	// Reflink is true when one file of the pool can be cloned into another.
	Reflink bool
	// NoReflink says why Reflink is false (the probe's error).
	NoReflink string
}

// Names of the two scratch files of the reflink probe, in images/: not
// volume IDs, so nothing else in hostvol takes them for an image.
const (
	probeSrc = ".reflink-probe.src"
	probeDst = ".reflink-probe.dst"
)

// DetectCopy finds what the pool offers: a statfs for btrfs, and one
// FICLONE of a 4 KiB file into another in images/, both removed again (and
// removed first, should a crash have left them). It writes 4 KiB; call it
// once per pool, at start-up.
func (p *Pool) DetectCopy() (CopySupport, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p.Path, &st); err != nil {
		return CopySupport{}, fmt.Errorf("pool %q: %w", p.Name, err)
	}
	cs := CopySupport{Btrfs: st.Type == unix.BTRFS_SUPER_MAGIC}
	err := p.probeReflink()
	switch {
	case err == nil:
		cs.Reflink = true
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL), errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOTTY):
		cs.NoReflink = fmt.Sprintf("the filesystem cannot clone files (FICLONE: %v)", err)
	default:
		return CopySupport{}, fmt.Errorf("pool %q: reflink probe: %w", p.Name, err)
	}
	return cs, nil
}

// probeReflink clones a scratch file into another and removes both.
func (p *Pool) probeReflink() error {
	src, dst := filepath.Join(imagesDir, probeSrc), filepath.Join(imagesDir, probeDst)
	for _, n := range []string{src, dst} {
		if err := p.root.Remove(n); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	defer func() {
		_ = p.root.Remove(src)
		_ = p.root.Remove(dst)
	}()
	s, err := p.root.OpenFile(src, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.Write(make([]byte, 4096)); err != nil {
		return err
	}
	d, err := p.root.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.IoctlFileClone(int(d.Fd()), int(s.Fd()))
}
