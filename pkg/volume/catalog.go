package volume

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/seed3e7d50b2/hostvol/pkg/inflight"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// catalog is what the two sides of a node's volume layer share: the
// pools, the volume records (node-local ones in the state directory, a
// shared pool's in the pool), the in-memory index of node-local records,
// and the per-volume locks. Every exported operation of Controller and
// Node takes its volume's lock (locked); the unexported ones run under
// it, so one operation may call another without taking it twice.
type catalog struct {
	nodeID string
	pools  map[string]*pool.Pool

	// local holds the records of node-local pools; shared, one store per
	// shared pool, lives inside that pool.
	local  *records.Store
	shared map[string]*records.Store

	locks inflight.Locks

	// index caches the records of node-local pools (the files stay the
	// source of truth). Shared-pool records are always read from the pool,
	// since other nodes change them.
	mu    sync.RWMutex
	index map[string]Volume
	// kinds counts the index's volumes by kind, for metrics (under mu).
	kinds map[Kind]int
	// unreadable holds the node-local records Load could not read, by ID,
	// with why (under mu). They are never deleted (an admin must look);
	// List and the health RPCs report them. A record fixed by hand is
	// read again at the next start.
	unreadable map[string]string

	loaded atomic.Bool

	// snapshotStore holds the snapshot records and their index
	// (snapshot.go); copy is what each pool can do to copy data, by pool
	// name (pool.DetectCopy at start-up).
	*snapshotStore
	copy map[string]pool.CopySupport

	// stateDirs are the state directory's record directories, whose
	// writability StateDirHealth reports; stateDirMsg is its last reported
	// condition, to log changes only.
	stateDirs   []string
	stateDirMu  sync.Mutex
	stateDirMsg string
}

func newCatalog(nodeID, stateDir string, pools []*pool.Pool) (*catalog, error) {
	c := &catalog{
		nodeID:     nodeID,
		pools:      make(map[string]*pool.Pool, len(pools)),
		shared:     make(map[string]*records.Store),
		index:      make(map[string]Volume),
		kinds:      make(map[Kind]int),
		unreadable: make(map[string]string),
	}
	var err error
	if c.local, err = records.Open(filepath.Join(stateDir, "volumes")); err != nil {
		return nil, err
	}
	if c.snapshotStore, err = openSnapshotStore(stateDir); err != nil {
		return nil, err
	}
	c.stateDirs = []string{c.local.Dir(), c.snaps.Dir()}
	c.copy = detectCopy(pools)
	for _, p := range pools {
		if _, dup := c.pools[p.Name]; dup {
			return nil, fmt.Errorf("pool %q configured twice", p.Name)
		}
		c.pools[p.Name] = p
		if p.Shared {
			s, err := records.Open(p.RecordsDir(stateDir))
			if err != nil {
				return nil, fmt.Errorf("pool %q: %w", p.Name, err)
			}
			c.shared[p.Name] = s
		}
	}
	return c, nil
}

// locked runs fn under the volume's try-lock: ErrBusy (the CO retries)
// when another operation on the volume is under way. It is also where
// errors of the layers below get their volume-level meaning, so that
// callers map only this package's errors.
func (c *catalog) locked(id string, fn func() error) error {
	unlock, ok := c.locks.TryLock(id)
	if !ok {
		return fmt.Errorf("%w: an operation on volume %s is already in progress", ErrBusy, id)
	}
	defer unlock()
	return translate(fn())
}

// translate gives an error of a lower layer its volume-level sentinel.
func translate(err error) error {
	if errors.Is(err, loop.ErrBusy) && !errors.Is(err, ErrBusy) {
		// The last close of a loop device is still under way: retryable.
		return fmt.Errorf("%w: %w", ErrBusy, err)
	}
	return err
}

// CheckID validates a volume ID from a request: ErrInvalid when it is
// malformed, ErrNotFound when it is well-formed but not one hostvol makes.
func CheckID(id string) error {
	return idError(volumeid.Validate(id))
}

// idError maps an ID validation error to the volume layer's: ErrNotFound
// for an ID hostvol does not make (volumeid.ErrForeign), else ErrInvalid.
func idError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, volumeid.ErrForeign):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	default:
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
}

// Pool returns the named pool, or nil.
func (c *catalog) Pool(name string) *pool.Pool { return c.pools[name] }

// store returns the record store for a pool.
func (c *catalog) store(poolName string) *records.Store {
	if s, ok := c.shared[poolName]; ok {
		return s
	}
	return c.local
}

func (c *catalog) indexLen() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.index)
}

func (c *catalog) setIndex(v Volume) {
	c.mu.Lock()
	if old, ok := c.index[v.ID]; ok {
		c.kinds[old.Kind]--
	}
	c.index[v.ID] = v
	c.kinds[v.Kind]++
	c.mu.Unlock()
}

func (c *catalog) deleteIndex(id string) {
	c.mu.Lock()
	if old, ok := c.index[id]; ok {
		c.kinds[old.Kind]--
	}
	delete(c.index, id)
	c.mu.Unlock()
}

// lookup finds a volume's record in any state. id must be validated.
func (c *catalog) lookup(id string) (Volume, *records.Store, error) {
	c.mu.RLock()
	v, ok := c.index[id]
	c.mu.RUnlock()
	if ok {
		return v, c.local, nil
	}
	// Not cached: a creating/deleting local record (not indexed) or a
	// shared-pool volume. Both are one file read per store.
	for _, s := range append([]*records.Store{c.local}, c.sharedStores()...) {
		var v Volume
		err := s.Get(id, &v)
		if err == nil {
			return v, s, nil
		}
		if !errors.Is(err, records.ErrNotFound) {
			return Volume{}, nil, err
		}
	}
	return Volume{}, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
}

func (c *catalog) sharedStores() []*records.Store {
	out := make([]*records.Store, 0, len(c.shared))
	for _, n := range c.sharedPoolNames() {
		out = append(out, c.shared[n])
	}
	return out
}

// sharedPoolNames are the names of the shared pools, sorted.
func (c *catalog) sharedPoolNames() []string { return slices.Sorted(maps.Keys(c.shared)) }

// poolNames are the names of all pools, sorted.
func (c *catalog) poolNames() []string { return slices.Sorted(maps.Keys(c.pools)) }

// Get returns a ready volume. id must be validated.
func (c *catalog) Get(id string) (Volume, error) {
	v, _, err := c.lookup(id)
	if err != nil {
		return Volume{}, err
	}
	if v.State != StateReady {
		return Volume{}, fmt.Errorf("%w: %s is %s", ErrNotFound, id, v.State)
	}
	return v, nil
}

// otherNode reports whether a volume's record names another node: a
// node-local volume created while hostvol ran with another --node-id.
// Shared-pool volumes (no node) belong to every node.
func (c *catalog) otherNode(v Volume) bool {
	return v.Node != "" && v.Node != c.nodeID
}

// Unreadable returns why a node-local volume's record could not be read
// at start-up, if it could not. It costs one map lookup.
func (c *catalog) Unreadable(id string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	why, ok := c.unreadable[id]
	return why, ok
}

// dataExists reports whether a volume's data (directory or image) exists.
func dataExists(p *pool.Pool, v Volume) (bool, error) {
	if v.Kind.HasImage() {
		return p.ImageExists(v.ID)
	}
	return p.DirExists(v.ID)
}

// dataPresent returns ErrNotFound when a volume's data (directory or
// image) is gone, or is no longer a directory or regular file, with a
// message saying so: nothing on the node can reach or measure it.
func dataPresent(p *pool.Pool, v Volume) error {
	if msg := dataProblem(p, v); msg != "" {
		return fmt.Errorf("%w: volume %s: %s", ErrNotFound, v.ID, msg)
	}
	return nil
}

// dataProblem says what is wrong with a volume's data ("its data is
// missing: ... does not exist"), or "".
func dataProblem(p *pool.Pool, v Volume) string {
	where := p.DirPath(v.ID)
	if v.Kind.HasImage() {
		where = p.ImagePath(v.ID)
	}
	ok, err := dataExists(p, v)
	switch {
	case err != nil:
		return fmt.Sprintf("its data at %s is not usable: %v", where, err)
	case !ok:
		return fmt.Sprintf("its data is missing: %s does not exist", where)
	}
	return ""
}

// unreadableReason says why a record could not be read, for listings and
// health messages.
func unreadableReason(s *records.Store, id string, err error) string {
	return fmt.Sprintf("record %s cannot be read: %v", filepath.Join(s.Dir(), id+".json"), err)
}

// clearExpandPending records that the node has caught up with the image.
func (c *catalog) clearExpandPending(v Volume) error {
	cur, s, err := c.lookup(v.ID)
	if err != nil {
		return err
	}
	cur.NodeExpandPending = false
	if err := s.Put(v.ID, cur); err != nil {
		return err
	}
	if s == c.local {
		c.setIndex(cur)
	}
	return nil
}
