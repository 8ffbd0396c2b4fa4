package pool

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Check is what a pool looks like now, for health reports. It holds facts
// only; pkg/volume decides what is abnormal.
type Check struct {
	// Problem says why the pool's path no longer serves as the pool: it is
	// missing, not a directory, or no longer the directory hostvol opened
	// at start-up (its filesystem was unmounted, or something was mounted
	// over it). "" when the path is the pool. When set, ReadOnly and FS are
	// zero: the path's filesystem is not the pool's.
	Problem string
	// ReadOnly is set when the filesystem mounted at the pool's path is
	// read-only (statfs ST_RDONLY): remounted read-only after an error, or
	// mounted so.
	ReadOnly bool
	// FS are the filesystem's figures at the pool's path.
	FS FSStats
}

// Check looks at the pool's path: one stat of the path, one of the
// directory opened at start-up, one statfs. Errors that say something about
// the pool (missing, not a directory, not the same directory, statfs
// failing) are reported in Problem, never returned: a health report must
// still be given when the pool is broken.
func (p *Pool) Check() Check {
	fi, err := os.Stat(p.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return Check{Problem: fmt.Sprintf("pool %q: path %s does not exist", p.Name, p.Path)}
	case err != nil:
		return Check{Problem: fmt.Sprintf("pool %q: %v", p.Name, err)}
	case !fi.IsDir():
		return Check{Problem: fmt.Sprintf("pool %q: %s is not a directory (%s)", p.Name, p.Path, fi.Mode().Type())}
	}
	// Every data operation goes through p.root, the directory opened at
	// start-up; publishes bind p.Path's subdirectories. If the two differ,
	// volumes are being served from a directory that is no longer the pool.
	ri, err := p.root.Stat(".")
	if err != nil {
		return Check{Problem: fmt.Sprintf("pool %q: the directory opened at start-up: %v", p.Name, err)}
	}
	if !os.SameFile(fi, ri) {
		return Check{Problem: fmt.Sprintf("pool %q: %s is no longer the directory hostvol opened at start-up (its filesystem was unmounted or something was mounted over it); fix the mount and restart hostvol", p.Name, p.Path)}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p.Path, &st); err != nil {
		return Check{Problem: fmt.Sprintf("pool %q: statfs %s: %v", p.Name, p.Path, err)}
	}
	return Check{ReadOnly: st.Flags&unix.ST_RDONLY != 0, FS: fromStatfs(&st)}
}
