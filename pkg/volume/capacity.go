package volume

import (
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

// promises tracks, per pool, the bytes existing volumes may still grow
// into: for a sparse image, its capacity minus what it already occupies; for
// a limited directory, its capacity minus its quota usage; for a directory
// without a limit, its capacity. A pool can promise a new volume only what
// its free space exceeds that by, so two 4 GiB volumes never land on one
// 4 GiB disk.
//
// Each volume's figure is kept in memory and updated by create, delete and
// expand in O(1); images and limited directories fill up as pods write,
// which only makes the kept figure too high (conservative) until the
// periodic refresh re-reads them.
// Check-and-reserve happens under a short in-memory lock, so concurrent
// creates cannot both take the last free bytes. Shared pools count only the
// volumes this node knows of.
type promises struct {
	mu     sync.Mutex
	byVol  map[string]promise
	byPool map[string]int64
}

type promise struct {
	pool  string
	bytes int64
}

func newPromises() *promises {
	return &promises{byVol: map[string]promise{}, byPool: map[string]int64{}}
}

// set records what a volume may still grow into.
func (ps *promises) set(id, poolName string, bytes int64) {
	if bytes < 0 {
		bytes = 0
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if old, ok := ps.byVol[id]; ok {
		ps.byPool[old.pool] -= old.bytes
	}
	ps.byVol[id] = promise{pool: poolName, bytes: bytes}
	ps.byPool[poolName] += bytes
}

// update replaces a known volume's figure; unknown volumes are ignored.
func (ps *promises) update(id string, bytes int64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if old, ok := ps.byVol[id]; ok {
		ps.byPool[old.pool] += max(bytes, 0) - old.bytes
		ps.byVol[id] = promise{pool: old.pool, bytes: max(bytes, 0)}
	}
}

// drop forgets a volume.
func (ps *promises) drop(id string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if old, ok := ps.byVol[id]; ok {
		ps.byPool[old.pool] -= old.bytes
		delete(ps.byVol, id)
	}
}

// pooled returns the bytes promised in a pool.
func (ps *promises) pooled(poolName string) int64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.byPool[poolName]
}

// reserve records bytes for id if the pool's free space covers them on top
// of what is already promised; extra is what the volume already holds
// (expansion: the current promise is replaced).
func (ps *promises) reserve(id, poolName string, free, bytes int64) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	current := int64(0)
	if old, ok := ps.byVol[id]; ok && old.pool == poolName {
		current = old.bytes
	}
	avail := free - (ps.byPool[poolName] - current)
	if bytes > avail {
		return fmt.Errorf("%w: pool %q can promise %d more bytes, %d asked", ErrNoSpace, poolName, max(avail, 0), bytes)
	}
	ps.byPool[poolName] += bytes - current
	ps.byVol[id] = promise{pool: poolName, bytes: bytes}
	return nil
}

// unallocated is what a volume may still grow into, read from its data: a
// limited directory's capacity minus its quota usage, like an image's.
func (c *Controller) unallocated(p *pool.Pool, v Volume) int64 {
	if !v.Kind.HasImage() {
		if u, ok, err := c.quotaUsage(v); ok && err == nil {
			return v.CapacityBytes - u.Bytes
		}
		return v.CapacityBytes
	}
	_, allocated, err := p.ImageUsage(v.ID)
	if err != nil {
		return v.CapacityBytes
	}
	return v.CapacityBytes - allocated
}

// AvailableBytes is what the pool can still promise: its free space minus
// what existing volumes may still grow into.
func (c *Controller) AvailableBytes(poolName string) (int64, error) {
	p := c.pools[poolName]
	if p == nil {
		return 0, fmt.Errorf("%w: %q", ErrPoolUnavailable, poolName)
	}
	st, err := p.Stats()
	if err != nil {
		return 0, err
	}
	return max(st.AvailableBytes-c.promises.pooled(poolName), 0), nil
}

// refreshPromises re-reads how much of each image is allocated, and how
// much each limited directory holds. It runs in the background, off the
// request path; a volume whose lock is held is skipped this round.
func (c *Controller) refreshPromises() {
	c.mu.RLock()
	vols := make([]Volume, 0, len(c.index))
	for _, v := range c.index {
		if v.Kind.HasImage() || v.Quota != nil {
			vols = append(vols, v)
		}
	}
	c.mu.RUnlock()
	for _, v := range vols {
		p := c.pools[v.Pool]
		if p == nil {
			continue
		}
		unlock, ok := c.locks.TryLock(v.ID)
		if !ok {
			continue // an operation is changing it; next round
		}
		if cur, err := c.Get(v.ID); err == nil {
			c.promises.update(v.ID, c.unallocated(p, cur))
		}
		unlock()
	}
}

// RefreshEvery refreshes the promised figures every interval until stop is
// closed.
func (c *Controller) RefreshEvery(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			start := time.Now()
			c.refreshPromises()
			klog.V(5).InfoS("Refreshed promised capacity", "duration", time.Since(start))
		}
	}
}
