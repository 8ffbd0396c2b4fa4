package volume

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
)

// Stats measures a volume that is published or staged at path: a limited
// directory's own usage against its limit (quota accounting), the
// filesystem of an unlimited directory's pool or of a loop volume, the size
// of a block volume.
func (n *Node) Stats(id, path string) (Stats, error) {
	v, ns, clean, err := n.usedAt(id, path)
	if err != nil {
		return Stats{}, err
	}
	p := n.pools[v.Pool]
	if v.Kind != KindLoop {
		// A directory or image that vanished is NOT_FOUND, saying so. A
		// loop volume is measured on its mounted filesystem, which lives
		// on while its loop device holds the image.
		if err := dataPresent(p, v); err != nil {
			return Stats{}, err
		}
	}
	var fs pool.FSStats
	switch v.Kind {
	case KindBlock:
		size, _, err := p.ImageUsage(v.ID)
		if err != nil {
			return Stats{}, err
		}
		if dev, err := n.findDevice(p, v, ns.Device); err == nil && dev != "" {
			if s, err := n.loop.Size(dev); err == nil {
				size = s
			}
		}
		return Stats{TotalBytes: size}, nil
	case KindLoop:
		// Measure only the volume's own filesystem: after a reboot, or an
		// unmount by hand, the path is a plain directory of another one.
		src, err := n.source(v, ns)
		if err != nil {
			return Stats{}, err
		}
		var mounted bool
		if src != "" {
			mounted, err = n.shows(clean, src)
		} else if dataProblem(p, v) != "" {
			// Its image is gone, so nothing identifies the filesystem; one
			// still mounted at the recorded path outlives the image.
			mounted, err = n.mounter.MountRoot(clean)
		}
		if err != nil {
			return Stats{}, err
		}
		if !mounted {
			return Stats{}, fmt.Errorf("%w: volume %s is not mounted at %s any more (the node rebooted, or it was unmounted); it is measured once staged and published again", ErrNotFound, id, untrusted.Quote(path))
		}
		var st unix.Statfs_t
		if err := unix.Statfs(clean, &st); err != nil {
			return Stats{}, fmt.Errorf("statfs %s: %w", clean, err)
		}
		fs = pool.FSStatsOf(&st)
	default:
		if st, ok, err := n.limitedDirStats(p, v); ok {
			return st, err
		}
		if fs, err = p.DirStats(v.ID); err != nil {
			return Stats{}, fmt.Errorf("stat data of %s: %w", id, err)
		}
	}
	return Stats{
		TotalBytes:     fs.TotalBytes,
		AvailableBytes: fs.AvailableBytes,
		UsedBytes:      fs.TotalBytes - fs.FreeBytes,
		TotalInodes:    fs.TotalInodes,
		FreeInodes:     fs.FreeInodes,
		UsedInodes:     fs.TotalInodes - fs.FreeInodes,
	}, nil
}

// usedAt checks that a volume of this node is published or staged at path
// (and that path exists) and returns it with its node state and the clean
// path. Any other path is NOT_FOUND: stats and expansion never touch paths
// hostvol did not mount.
func (n *Node) usedAt(id, path string) (Volume, nodeState, string, error) {
	v, err := n.onThisNode(id)
	if err != nil {
		return Volume{}, nodeState{}, "", err
	}
	ns, err := n.getNodeState(id)
	if err != nil {
		return Volume{}, nodeState{}, "", err
	}
	clean := filepath.Clean(path)
	if _, ok := ns.Targets[clean]; !ok && clean != ns.StagingPath {
		return Volume{}, nodeState{}, "", fmt.Errorf("%w: %s is not published or staged at %s", ErrNotFound, id, path)
	}
	if _, err := os.Lstat(clean); err != nil {
		return Volume{}, nodeState{}, "", fmt.Errorf("%w: %s: %v", ErrNotFound, path, err)
	}
	return v, ns, clean, nil
}
