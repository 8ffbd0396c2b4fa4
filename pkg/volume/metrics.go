package volume

// PoolFigures are one pool's figures as pkg/metrics reports them.
type PoolFigures struct {
	Name string
	// CapacityBytes is the size of the pool's filesystem and FreeBytes what
	// it has available to hostvol (statfs f_bavail, the figure promises are
	// checked against). Both are zero when Err is set.
	CapacityBytes, FreeBytes int64
	// PromisedBytes is what the pool's volumes may still grow into (see
	// promises); it comes from memory and is set even when Err is.
	PromisedBytes int64
	// SnapshotCopies is the number of snapshots being copied into the
	// pool in the background, and SnapshotCopyRemainingBytes what they
	// still have to copy (from memory).
	SnapshotCopies             int
	SnapshotCopyRemainingBytes int64
	// Err is why the filesystem figures could not be read (statfs failed:
	// a missing mount, a hung shared filesystem's error).
	Err error
}

// PoolFigures returns every pool's figures, in name order. It costs one
// statfs per pool and nothing per volume: promised bytes are kept in memory.
func (c *Controller) PoolFigures() []PoolFigures {
	names := c.poolNames()
	out := make([]PoolFigures, 0, len(names))
	copies, remaining := c.copyFigures()
	for _, n := range names {
		f := PoolFigures{Name: n, PromisedBytes: c.promises.pooled(n), SnapshotCopies: copies[n], SnapshotCopyRemainingBytes: remaining[n]}
		if st, err := c.pools[n].Stats(); err != nil {
			f.Err = err
		} else {
			f.CapacityBytes, f.FreeBytes = st.TotalBytes, st.AvailableBytes
		}
		out = append(out, f)
	}
	return out
}

// Kinds are the volume kinds, in the order metrics report them.
var Kinds = []Kind{KindDir, KindLoop, KindBlock}

// VolumeCounts returns how many ready volumes of each kind the node-local
// pools hold, every kind present (0 when it has none). The counts are kept
// with the in-memory index, so this is O(1). Shared-pool volumes are not
// counted: their records live in the pool, change under other nodes, and
// counting them would cost a directory read.
func (c *Controller) VolumeCounts() map[Kind]int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[Kind]int, len(Kinds))
	for _, k := range Kinds {
		out[k] = c.kinds[k]
	}
	return out
}
