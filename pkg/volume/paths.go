package volume

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
)

// mountPointErr describes a target or staging path that could not be made
// ready; a symlink or a path of the wrong type makes the request invalid.
func mountPointErr(what string, err error) error {
	if errors.Is(err, mounter.ErrSymlink) || errors.Is(err, mounter.ErrWrongType) {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// protectedPath is a directory no request may mount over, into or above.
type protectedPath struct {
	real, what string
}

// protect adds dir (as it is resolved now) to the protected paths.
func (n *Node) protect(dir, what string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("resolve %s %s: %w", what, dir, err)
	}
	n.protected = append(n.protected, protectedPath{real: real, what: what})
	return nil
}

// checkRequestPath refuses a target or staging path that is, contains or
// lies inside a pool or the state directory (with symlinks of its existing
// ancestors resolved): a mount there would hide or expose hostvol's own
// data.
func (n *Node) checkRequestPath(what, path string) error {
	real, err := mounter.ResolvePath(path)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrInvalid, what, untrusted.Quote(path), err)
	}
	for _, p := range n.protected {
		switch {
		case mounter.Within(real, p.real):
			return fmt.Errorf("%w: %s %s is inside %s (%s); hostvol never mounts into its own directories", ErrInvalid, what, untrusted.Quote(path), p.what, p.real)
		case mounter.Within(p.real, real):
			return fmt.Errorf("%w: %s %s contains %s (%s); a mount there would hide it", ErrInvalid, what, untrusted.Quote(path), p.what, p.real)
		}
	}
	return nil
}
