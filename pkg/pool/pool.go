// Package pool describes the storage pools of a node and their on-disk
// layout. A pool is a directory on a local (or, if shared, a cluster-wide)
// filesystem; hostvol keeps directory volumes under <pool>/volumes/<ID>,
// the image files of loop and block volumes under <pool>/images/<ID>.img,
// and snapshots' data under <pool>/snapshots/.
//
// All operations on a volume's data go through an os.Root opened on the
// pool, so no path built from a request, and no symlink planted inside a
// volume, can make hostvol touch anything outside the pool.
package pool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
)

const (
	volumesDir = "volumes"
	imagesDir  = "images"
	imageExt   = ".img"
	// sharedRecordsDir holds the records of a shared pool inside the pool
	// itself, so that every node mounting the pool can find them.
	sharedRecordsDir = ".hostvol/records"
	// dirMode is a directory volume's: pods of any UID must be able to
	// write to it.
	dirMode = 0o777
	// layoutMode is the layout directories' (volumes/, images/, snapshots/): owner only. Pods reach their
	// data through bind mounts, which need no search right on the parents,
	// so host users get none: they can neither list the volumes nor reach
	// a volume's world-writable data by its path.
	layoutMode = 0o700
)

// layoutDirs are the directories Open makes in a pool, each layoutMode.
var layoutDirs = []string{volumesDir, imagesDir, snapshotsDir}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidName returns an error unless name can name a pool: a DNS label
// (lowercase letters, digits and '-', 1-63 characters, starting and ending
// with a letter or digit), so that it is safe in paths, metrics labels and
// StorageClasses alike. The name is quoted and cut in the error
// (untrusted.Quote): a StorageClass may carry anything.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("pool name %s: want lowercase letters, digits and '-', 1-63 characters, starting and ending with a letter or digit", untrusted.Quote(name))
	}
	return nil
}

// DefaultName is the pool used when a StorageClass names none.
const DefaultName = "default"

// Spec is a pool as configured: --pool NAME=PATH[,shared].
type Spec struct {
	Name   string
	Path   string
	Shared bool
}

// ParseSpec parses NAME=PATH or NAME=PATH,shared.
func ParseSpec(s string) (Spec, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Spec{}, fmt.Errorf("pool %q: want NAME=PATH[,shared]", s)
	}
	var sp Spec
	sp.Name = name
	path, opts, _ := strings.Cut(rest, ",")
	sp.Path = path
	if opts != "" {
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "shared":
				sp.Shared = true
			default:
				return Spec{}, fmt.Errorf("pool %q: unknown option %q (known: shared)", name, o)
			}
		}
	}
	return sp, sp.Validate()
}

// String formats the spec the way ParseSpec reads it.
func (s Spec) String() string {
	if s.Shared {
		return s.Name + "=" + s.Path + ",shared"
	}
	return s.Name + "=" + s.Path
}

// Validate checks the name and that the path is absolute and clean.
func (s Spec) Validate() error {
	if err := ValidName(s.Name); err != nil {
		return err
	}
	if s.Path == "" || !filepath.IsAbs(s.Path) {
		return fmt.Errorf("pool %q: path %q must be absolute", s.Name, s.Path)
	}
	if filepath.Clean(s.Path) != s.Path || strings.ContainsRune(s.Path, 0) {
		return fmt.Errorf("pool %q: path %q must be clean (no trailing '/', '.', '..' or '//')", s.Name, s.Path)
	}
	if s.Path == "/" {
		return fmt.Errorf("pool %q: path must not be /", s.Name)
	}
	return nil
}

// Pool is an opened pool.
type Pool struct {
	Spec
	root *os.Root // the pool directory
}

// Open creates the pool's layout if needed and opens it. The pool path
// itself must exist: a missing mount should stop start-up, not silently
// create a directory on the root filesystem.
func Open(s Spec) (*Pool, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	fi, err := os.Stat(s.Path)
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", s.Name, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("pool %q: %s is not a directory", s.Name, s.Path)
	}
	for _, d := range layoutDirs {
		if err := os.Mkdir(filepath.Join(s.Path, d), layoutMode); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("pool %q: %w", s.Name, err)
		}
	}
	root, err := os.OpenRoot(s.Path)
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", s.Name, err)
	}
	p := &Pool{Spec: s, root: root}
	p.fixLayoutModes()
	return p, nil
}

// fixLayoutModes sets the layout directories to layoutMode: an existing pool
// may have other modes (0711, or made by hand), and mkdir is subject to
// the umask. A pool
// whose modes cannot be changed (mounted read-only) still opens: the mode
// is a hardening, and health reports a read-only pool.
func (p *Pool) fixLayoutModes() {
	for _, d := range layoutDirs {
		fi, err := p.root.Lstat(d)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() == layoutMode {
			continue // not a directory: the operations on it will say so
		}
		if err := p.root.Chmod(d, layoutMode|os.ModeDir); err != nil {
			klog.ErrorS(err, "Could not restrict a pool directory's mode", "pool", p.Name, "path", filepath.Join(p.Path, d), "mode", fmt.Sprintf("%#o", fi.Mode().Perm()), "want", fmt.Sprintf("%#o", layoutMode))
			continue
		}
		klog.InfoS("Restricted a pool directory's mode", "pool", p.Name, "path", filepath.Join(p.Path, d), "from", fmt.Sprintf("%#o", fi.Mode().Perm()), "to", fmt.Sprintf("%#o", layoutMode))
	}
}

// Close releases the pool's directory handle.
func (p *Pool) Close() error { return p.root.Close() }

// RecordsDir is where the records of this pool's volumes live: the node's
// state directory for a node-local pool, the pool itself for a shared one.
func (p *Pool) RecordsDir(stateDir string) string {
	if p.Shared {
		return filepath.Join(p.Path, sharedRecordsDir)
	}
	return filepath.Join(stateDir, "volumes")
}

// DirPath is the host path of a directory volume's data. id must be a
// validated volume ID.
func (p *Pool) DirPath(id string) string {
	return filepath.Join(p.Path, volumesDir, id)
}

// CreateDir creates the data directory of a directory volume and makes the
// creation durable. An existing directory is an error wrapping os.ErrExist.
func (p *Pool) CreateDir(id string) error { return p.CreateDirWith(id, nil) }

// MakeDir creates the directory name in the open directory parent.
type MakeDir func(parent *os.File, name string, mode os.FileMode) error

// CreateDirWith is CreateDir with the directory made by mk in the pool's
// volumes/ directory (a btrfs subvolume, say); nil mk is mkdir.
func (p *Pool) CreateDirWith(id string, mk MakeDir) error {
	name := filepath.Join(volumesDir, id)
	if mk == nil {
		if err := p.root.Mkdir(name, dirMode); err != nil {
			return err
		}
	} else {
		parent, err := p.root.OpenFile(volumesDir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		err = mk(parent, id, dirMode)
		parent.Close()
		if err != nil {
			return err
		}
	}
	// Mkdir is subject to the umask; pods of any UID must be able to write.
	if err := p.root.Chmod(name, dirMode|os.ModeDir); err != nil {
		return err
	}
	return p.syncDir(volumesDir)
}

// RemoveDir removes a volume's data without following any symlink inside
// it, and makes the removal durable. A missing directory is not an error.
func (p *Pool) RemoveDir(id string) error {
	// Remove the top-level entries one by one (each with RemoveAll, which
	// never follows symlinks and stays inside the root), so that a crash
	// test can stop the process with the removal half done.
	name := filepath.Join(volumesDir, id)
	d, err := p.root.OpenFile(name, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		names, rerr := d.Readdirnames(-1)
		_ = d.Close()
		if rerr != nil {
			return rerr
		}
		for i, n := range names {
			if err := p.root.RemoveAll(filepath.Join(name, n)); err != nil {
				return err
			}
			if i == 0 {
				failpoint.Hit("delete-mid-data")
			}
		}
	}
	// Either the directory is now empty, or id is not a directory (a
	// symlink or file someone put there): RemoveAll removes the entry itself.
	if err := p.root.RemoveAll(name); err != nil {
		return err
	}
	return p.syncDir(volumesDir)
}

// DirExists reports whether the volume's data directory exists and is a
// real directory (not a symlink).
func (p *Pool) DirExists(id string) (bool, error) {
	fi, err := p.root.Lstat(filepath.Join(volumesDir, id))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s in pool %q is not a directory (%s)", id, p.Name, fi.Mode().Type())
	}
	return true, nil
}

// Entries lists the volume IDs that have data in the pool: directories in
// volumes/ and images in images/ (for start-up reconciliation).
func (p *Pool) Entries() ([]string, error) {
	dirs, err := p.readDir(volumesDir)
	if err != nil {
		return nil, err
	}
	images, err := p.Images()
	if err != nil {
		return nil, err
	}
	return append(dirs, images...), nil
}

// readDir lists the names in one of the pool's directories.
func (p *Pool) readDir(name string) ([]string, error) {
	f, err := p.root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// OpenDir opens a volume's data directory without following symlinks.
func (p *Pool) OpenDir(id string) (*os.File, error) {
	return p.root.OpenFile(filepath.Join(volumesDir, id), os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
}

// DirStats returns the statistics of the filesystem holding a volume's data
// directory, read through a descriptor opened inside the pool without
// following symlinks.
func (p *Pool) DirStats(id string) (FSStats, error) {
	f, err := p.root.OpenFile(filepath.Join(volumesDir, id), os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return FSStats{}, err
	}
	defer f.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return FSStats{}, err
	}
	return fromStatfs(&st), nil
}

// Stats returns the statistics of the pool's filesystem.
func (p *Pool) Stats() (FSStats, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p.Path, &st); err != nil {
		return FSStats{}, fmt.Errorf("statfs pool %q: %w", p.Name, err)
	}
	return fromStatfs(&st), nil
}

func (p *Pool) syncDir(name string) error {
	f, err := p.root.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// ImagePath is the host path of a loop or block volume's image file. id
// must be a validated volume ID.
func (p *Pool) ImagePath(id string) string {
	return filepath.Join(p.Path, imagesDir, id+imageExt)
}

func imageName(id string) string { return filepath.Join(imagesDir, id+imageExt) }

// CreateImage creates a sparse image file of size bytes; its directory
// entry is durable on return, and so is the file itself when syncFile is
// set. Callers that format the image next pass false: mkfs fsyncs the file
// when it is done. An existing image is an error wrapping os.ErrExist.
func (p *Pool) CreateImage(id string, size int64, syncFile bool) error {
	f, err := p.root.OpenFile(imageName(id), os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if syncFile {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return p.syncDir(imagesDir)
}

// OpenImage opens a volume's image read-write without following symlinks.
func (p *Pool) OpenImage(id string) (*os.File, error) {
	f, err := p.root.OpenFile(imageName(id), os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("image of %s in pool %q is not a regular file", id, p.Name)
	}
	return f, nil
}

// GrowImage extends a volume's image to size bytes (sparse) and makes it
// durable. It never shrinks: a smaller size is an error.
func (p *Pool) GrowImage(id string, size int64) error {
	f, err := p.OpenImage(id)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if size < fi.Size() {
		return fmt.Errorf("image of %s is %d bytes; refusing to shrink it to %d", id, fi.Size(), size)
	}
	if size == fi.Size() {
		return nil
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// ImageUsage returns an image's apparent size and the bytes it occupies on
// the pool's filesystem.
func (p *Pool) ImageUsage(id string) (size, allocated int64, err error) {
	fi, st, err := p.statImage(id)
	if err != nil {
		return 0, 0, err
	}
	return fi.Size(), st.Blocks * 512, nil
}

// ImageFileID returns the device and inode of a volume's image, as the
// kernel reports a loop device's backing file (loop.Image).
func (p *Pool) ImageFileID(id string) (dev, ino uint64, err error) {
	_, st, err := p.statImage(id)
	if err != nil {
		return 0, 0, err
	}
	return uint64(st.Dev), uint64(st.Ino), nil
}

// statImage lstats a volume's image, which must be a regular file.
func (p *Pool) statImage(id string) (os.FileInfo, *syscall.Stat_t, error) {
	return p.statRegular(imageName(id), "image of "+id)
}

// statRegular lstats name in the pool, which must be a regular file (what
// says which, for the error).
func (p *Pool) statRegular(name, what string) (os.FileInfo, *syscall.Stat_t, error) {
	fi, err := p.root.Lstat(name)
	if err != nil {
		return nil, nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s in pool %q is not a regular file", what, p.Name)
	}
	return fi, st, nil
}

// Images lists the volume IDs that have an image in the pool.
func (p *Pool) Images() ([]string, error) {
	names, err := p.readDir(imagesDir)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if id, ok := strings.CutSuffix(n, imageExt); ok {
			out = append(out, id)
		}
	}
	return out, nil
}

// ImageExists reports whether a volume's image exists.
func (p *Pool) ImageExists(id string) (bool, error) {
	_, _, err := p.ImageUsage(id)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// RemoveImage removes a volume's image and makes the removal durable. A
// missing image is not an error.
func (p *Pool) RemoveImage(id string) error {
	if err := p.root.Remove(imageName(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return p.syncDir(imagesDir)
}

// FSStats are a filesystem's figures in bytes and inodes.
type FSStats struct {
	TotalBytes, FreeBytes, AvailableBytes int64
	TotalInodes, FreeInodes               int64
}

// FSStatsOf converts statfs figures.
func FSStatsOf(st *unix.Statfs_t) FSStats { return fromStatfs(st) }

func fromStatfs(st *unix.Statfs_t) FSStats {
	bs := int64(st.Bsize)
	return FSStats{
		TotalBytes:     int64(st.Blocks) * bs,
		FreeBytes:      int64(st.Bfree) * bs,
		AvailableBytes: int64(st.Bavail) * bs,
		TotalInodes:    int64(st.Files),
		FreeInodes:     int64(st.Ffree),
	}
}
