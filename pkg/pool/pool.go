// Package pool describes the storage pools of a node and their on-disk
// layout. A pool is a directory on a local (or, if shared, a cluster-wide)
// filesystem; hostvol keeps its volumes under <pool>/volumes/<volume ID>.
//
// All operations on a volume's data go through an os.Root opened on the
// pool's volumes directory, so no path built from a request, and no symlink
// planted inside a volume, can make hostvol touch anything outside the pool.
package pool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
)

const (
	volumesDir = "volumes"
	// sharedRecordsDir holds the records of a shared pool inside the pool
	// itself, so that every node mounting the pool can find them.
	sharedRecordsDir = ".hostvol/records"
	dirMode          = 0o777
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

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
	if !nameRE.MatchString(s.Name) {
		return fmt.Errorf("pool name %q: want lowercase letters, digits and '-', 1-63 characters, starting and ending with a letter or digit", s.Name)
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
	root *os.Root // the volumes directory
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
	vd := filepath.Join(s.Path, volumesDir)
	if err := os.Mkdir(vd, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("pool %q: %w", s.Name, err)
	}
	root, err := os.OpenRoot(vd)
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", s.Name, err)
	}
	return &Pool{Spec: s, root: root}, nil
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
func (p *Pool) CreateDir(id string) error {
	if err := p.root.Mkdir(id, dirMode); err != nil {
		return err
	}
	// Mkdir is subject to the umask; pods of any UID must be able to write.
	if err := p.root.Chmod(id, dirMode|os.ModeDir); err != nil {
		return err
	}
	return p.syncVolumesDir()
}

// RemoveDir removes a volume's data without following any symlink inside
// it, and makes the removal durable. A missing directory is not an error.
func (p *Pool) RemoveDir(id string) error {
	// Remove the top-level entries one by one (each with RemoveAll, which
	// never follows symlinks and stays inside the root), so that a crash
	// test can stop the process with the removal half done.
	d, err := p.root.OpenFile(id, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
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
			if err := p.root.RemoveAll(filepath.Join(id, n)); err != nil {
				return err
			}
			if i == 0 {
				failpoint.Hit("delete-mid-data")
			}
		}
	}
	// Either the directory is now empty, or id is not a directory (a
	// symlink or file someone put there): RemoveAll removes the entry itself.
	if err := p.root.RemoveAll(id); err != nil {
		return err
	}
	return p.syncVolumesDir()
}

// DirExists reports whether the volume's data directory exists and is a
// real directory (not a symlink).
func (p *Pool) DirExists(id string) (bool, error) {
	fi, err := p.root.Lstat(id)
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

// Entries lists the names in the pool's volumes directory (for start-up
// reconciliation).
func (p *Pool) Entries() ([]string, error) {
	f, err := p.root.Open(".")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// DirStats returns the statistics of the filesystem holding a volume's data
// directory, read through a descriptor opened inside the pool without
// following symlinks.
func (p *Pool) DirStats(id string) (FSStats, error) {
	f, err := p.root.OpenFile(id, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
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

func (p *Pool) syncVolumesDir() error {
	f, err := p.root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// FSStats are a filesystem's figures in bytes and inodes.
type FSStats struct {
	TotalBytes, FreeBytes, AvailableBytes int64
	TotalInodes, FreeInodes               int64
}

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
