package volume

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/failpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/inflight"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

// Config is what a Manager is built from. Every OS touchpoint that tests
// may replace (the mounter) is injected here; only cmd/ builds real ones.
type Config struct {
	NodeID   string
	StateDir string
	Pools    []*pool.Pool
	Mounter  mount.Interface
	// Loop attaches images to loop devices; FS formats and grows their
	// filesystems. Without them, loop and block volumes are refused.
	Loop loop.Manager
	FS   fsutil.Interface
	// Quota finds how each pool limits directory volumes (quota.New() on
	// a node, a quota.Fake in tests). Nil: no pool limits them.
	Quota quota.System
	// InlineMaxBytes and InlineMaxTotalBytes bound CSI inline volumes,
	// which pod authors ask for: the size of one (after rounding up to
	// what its filesystem needs) and of all of them on this node together.
	// 0: no inline volume may be made.
	InlineMaxBytes, InlineMaxTotalBytes int64
}

// Manager owns the volumes of one node.
type Manager struct {
	nodeID  string
	pools   map[string]*pool.Pool
	mounter mounter.Interface
	// protected are the real paths of the pools and the state directory:
	// no target or staging path from a request may be at, inside or above
	// one of them.
	protected []protectedPath
	loop      loop.Manager
	fs        fsutil.Interface
	// enforcers limit the directory volumes of each pool (by pool name).
	enforcers map[string]quota.Enforcer

	// locks are the per-volume try-locks every operation takes.
	locks    inflight.Locks
	promises *promises

	// local holds the records of node-local pools; shared, one store per
	// shared pool, lives inside that pool. nodeStates holds what this node
	// has staged and published, per volume.
	local      *records.Store
	shared     map[string]*records.Store
	nodeStates *records.Store
	// ephemeralDir holds the staging mounts of inline loop volumes, which
	// the kubelet never stages (ephemeral.go).
	ephemeralDir string
	// inline keeps the bytes of this node's inline volumes against the
	// node's cap (ephemeral.go).
	inline *inlineBudget

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

	// stateDirMsg is the state directory's last reported condition, to
	// log changes only (statedir.go).
	stateDirMu  sync.Mutex
	stateDirMsg string
}

// New opens the record stores. Call Load before serving.
func New(cfg Config) (*Manager, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("node ID is required")
	}
	if cfg.Mounter == nil {
		return nil, errors.New("mounter is required")
	}
	m := &Manager{
		nodeID:   cfg.NodeID,
		pools:    make(map[string]*pool.Pool, len(cfg.Pools)),
		mounter:  mounter.FromList(cfg.Mounter),
		loop:     cfg.Loop,
		fs:       cfg.FS,
		promises: newPromises(),
		shared:   make(map[string]*records.Store),
		index:    make(map[string]Volume),
		kinds:    make(map[Kind]int),

		unreadable: make(map[string]string),

		ephemeralDir: filepath.Join(cfg.StateDir, "ephemeral"),
		inline:       newInlineBudget(cfg.InlineMaxBytes, cfg.InlineMaxTotalBytes),
	}
	var err error
	if m.local, err = records.Open(filepath.Join(cfg.StateDir, "volumes")); err != nil {
		return nil, err
	}
	if m.nodeStates, err = records.Open(filepath.Join(cfg.StateDir, "node")); err != nil {
		return nil, err
	}
	for _, p := range cfg.Pools {
		if _, dup := m.pools[p.Name]; dup {
			return nil, fmt.Errorf("pool %q configured twice", p.Name)
		}
		m.pools[p.Name] = p
		if p.Shared {
			s, err := records.Open(p.RecordsDir(cfg.StateDir))
			if err != nil {
				return nil, fmt.Errorf("pool %q: %w", p.Name, err)
			}
			m.shared[p.Name] = s
		}
	}
	m.openEnforcers(cfg.Quota)
	if err := m.protect(cfg.StateDir, "the state directory"); err != nil {
		return nil, err
	}
	for _, p := range cfg.Pools {
		if err := m.protect(p.Path, fmt.Sprintf("pool %q", p.Name)); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// TryLock takes a volume's lock without waiting (see pkg/inflight).
func (m *Manager) TryLock(id string) (func(), bool) { return m.locks.TryLock(id) }

// NodeID is the node this manager serves.
func (m *Manager) NodeID() string { return m.nodeID }

// Pool returns the named pool, or nil.
func (m *Manager) Pool(name string) *pool.Pool { return m.pools[name] }

// Ready reports whether Load has finished.
func (m *Manager) Ready() bool { return m.loaded.Load() }

// store returns the record store for a pool.
func (m *Manager) store(poolName string) *records.Store {
	if s, ok := m.shared[poolName]; ok {
		return s
	}
	return m.local
}

// Load reads every record, finishes or rolls back operations a crash
// interrupted, reports data without a record, and marks the manager ready.
// It is the only O(n) step, and it runs once, at start-up.
func (m *Manager) Load() error {
	m.reconcileDevices()
	stores := map[string]*records.Store{"": m.local}
	for name, s := range m.shared {
		stores[name] = s
	}
	known := make(map[string]bool)
	for sharedPool, s := range stores {
		keys, err := s.Keys()
		if err != nil {
			return err
		}
		for _, id := range keys {
			if err := volumeid.Validate(id); err != nil {
				klog.InfoS("Ignoring file in record directory that is not a volume record", "dir", s.Dir(), "name", id)
				continue
			}
			var v Volume
			if err := s.Get(id, &v); err != nil {
				// Never delete what we cannot read: an admin must look.
				// Node-local ones are kept in memory, so that listing
				// and health report them without reading them again;
				// List reads a shared pool's records anyway.
				klog.ErrorS(err, "Unreadable volume record left in place", "volumeID", id, "dir", s.Dir())
				if sharedPool == "" {
					m.mu.Lock()
					m.unreadable[id] = unreadableReason(s, id, err)
					m.mu.Unlock()
				}
				known[id] = true
				continue
			}
			known[id] = true
			if err := m.reconcile(s, sharedPool != "", v); err != nil {
				return fmt.Errorf("reconcile volume %s: %w", id, err)
			}
		}
	}
	for _, p := range m.pools {
		names, err := p.Entries()
		if err != nil {
			return fmt.Errorf("list pool %q: %w", p.Name, err)
		}
		for _, n := range names {
			if !known[n] {
				// Nothing is lost: data without a record is reported, not removed.
				klog.InfoS("Data in pool has no volume record; leaving it in place", "pool", p.Name, "path", filepath.Join(p.Path, "volumes", n))
			}
		}
	}
	m.reconcileLeases()
	m.loaded.Store(true)
	klog.V(2).InfoS("Volume records loaded", "volumes", m.indexLen())
	return nil
}

func (m *Manager) indexLen() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.index)
}

func (m *Manager) reconcile(s *records.Store, shared bool, v Volume) error {
	if m.otherNode(v) && v.State == StateReady {
		// Once per volume, at start-up: delete and expand refuse it, and
		// stage, publish and stats treat it as not on this node. (A
		// creation or deletion it left half done is still finished below:
		// it was this machine's, under its old name, and nobody else can.)
		klog.InfoS("Volume record names another node; this node will not delete, expand, stage or publish it (was hostvol restarted with another --node-id?)", "volumeID", v.ID, "recordNode", v.Node, "nodeID", m.nodeID, "state", v.State)
	}
	p := m.pools[v.Pool]
	if p != nil {
		m.adoptQuota(v)
	}
	switch v.State {
	case StateReady:
		if !shared {
			m.setIndex(v)
		}
		if p == nil {
			klog.InfoS("Volume's pool is not configured on this node", "volumeID", v.ID, "pool", v.Pool)
			return nil
		}
		if ok, err := dataExists(p, v); err != nil || !ok {
			klog.ErrorS(err, "Volume data is missing", "volumeID", v.ID, "pool", v.Pool, "kind", v.Kind)
		}
		m.promises.set(v.ID, v.Pool, m.unallocated(p, v))
		if v.Ephemeral {
			m.inline.set(v.ID, v.CapacityBytes)
		}
		return nil
	case StateCreating:
		if shared && v.CreatedBy != m.nodeID {
			return nil // another node may still be creating it
		}
		if p == nil {
			return fmt.Errorf("%w: %q", ErrPoolUnavailable, v.Pool)
		}
		klog.InfoS("Rolling back a volume creation interrupted by a restart", "volumeID", v.ID, "name", v.Name)
		return m.removeVolume(s, p, v)
	case StateDeleting:
		if shared && v.CreatedBy != m.nodeID {
			return nil
		}
		if p == nil {
			return fmt.Errorf("%w: %q", ErrPoolUnavailable, v.Pool)
		}
		klog.InfoS("Finishing a volume deletion interrupted by a restart", "volumeID", v.ID, "name", v.Name)
		return m.removeVolume(s, p, v)
	default:
		return fmt.Errorf("unknown state %q", v.State)
	}
}

// removeVolume removes the data, then what limited its size, then the
// record: never a record pointing at data that is gone without saying so
// (it says "deleting" or "creating" until the data is gone), and never a
// project limit or qgroup without the record that names it.
func (m *Manager) removeVolume(s *records.Store, p *pool.Pool, v Volume) error {
	var err error
	if v.Kind.HasImage() {
		err = p.RemoveImage(v.ID)
	} else {
		v, err = m.removeDir(s, p, v)
	}
	if err != nil {
		return fmt.Errorf("remove data of %s: %w", v.ID, err)
	}
	failpoint.Hit("delete-after-data")
	if err := m.clearQuota(v); err != nil {
		return err
	}
	failpoint.Hit("delete-after-quota")
	if err := s.Delete(v.ID); err != nil {
		return err
	}
	m.releaseQuota(v)
	m.deleteIndex(v.ID)
	m.promises.drop(v.ID)
	m.inline.release(v.ID)
	if err := m.nodeStates.Delete(v.ID); err != nil {
		return err
	}
	return nil
}

func (m *Manager) setIndex(v Volume) {
	m.mu.Lock()
	if old, ok := m.index[v.ID]; ok {
		m.kinds[old.Kind]--
	}
	m.index[v.ID] = v
	m.kinds[v.Kind]++
	m.mu.Unlock()
}

func (m *Manager) deleteIndex(id string) {
	m.mu.Lock()
	if old, ok := m.index[id]; ok {
		m.kinds[old.Kind]--
	}
	delete(m.index, id)
	m.mu.Unlock()
}

// lookup finds a volume's record in any state. id must be validated.
func (m *Manager) lookup(id string) (Volume, *records.Store, error) {
	m.mu.RLock()
	v, ok := m.index[id]
	m.mu.RUnlock()
	if ok {
		return v, m.local, nil
	}
	// Not cached: a creating/deleting local record (not indexed) or a
	// shared-pool volume. Both are one file read per store.
	for _, s := range append([]*records.Store{m.local}, m.sharedStores()...) {
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

func (m *Manager) sharedStores() []*records.Store {
	out := make([]*records.Store, 0, len(m.shared))
	for _, n := range m.sharedPoolNames() {
		out = append(out, m.shared[n])
	}
	return out
}

// sharedPoolNames are the names of the shared pools, sorted.
func (m *Manager) sharedPoolNames() []string {
	names := make([]string, 0, len(m.shared))
	for n := range m.shared {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Get returns a ready volume. id must be validated.
func (m *Manager) Get(id string) (Volume, error) {
	v, _, err := m.lookup(id)
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
func (m *Manager) otherNode(v Volume) bool {
	return v.Node != "" && v.Node != m.nodeID
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

// minBlockSize is the smallest raw block volume.
const minBlockSize = 1 << 20

// imageAlign is the granularity of image sizes (filesystem block size).
const imageAlign = 4096

// maxImageSize is the largest image size: the largest whole number of
// 4 KiB blocks an int64 (off_t) holds.
const maxImageSize = math.MaxInt64 / imageAlign * imageAlign

// roundImageSize rounds an image size up to whole 4 KiB blocks. ok is false
// when the rounded size would not fit in an int64: rounding would overflow
// into a negative size, and no filesystem holds such a file anyway. Every
// image size (create and expand) goes through here; each caller decides
// what its refusal means to the CO.
func roundImageSize(size int64) (rounded int64, ok bool) {
	if size > maxImageSize {
		return 0, false
	}
	return (size + imageAlign - 1) / imageAlign * imageAlign, true
}

// chooseSize picks the capacity for a request: the required size, else the
// default capped by the limit; images are rounded up to whole 4 KiB blocks
// and to the filesystem's minimum, within the limit.
func chooseSize(req CreateRequest) (int64, error) {
	if req.LimitBytes > 0 && req.RequiredBytes > req.LimitBytes {
		return 0, fmt.Errorf("%w: required %d bytes exceeds limit %d", ErrOutOfRange, req.RequiredBytes, req.LimitBytes)
	}
	size := req.RequiredBytes
	if size == 0 {
		size = req.DefaultBytes
		if req.LimitBytes > 0 && size > req.LimitBytes {
			size = req.LimitBytes
		}
	}
	if !req.Kind.HasImage() {
		return size, nil
	}
	minSize := int64(minBlockSize)
	if req.Kind == KindLoop {
		minSize = fsutil.MinSize[req.FsType]
	}
	rounded, ok := roundImageSize(max(size, minSize))
	if !ok {
		// No pool holds this much: the same answer as for any size larger
		// than the pool (docs/design.md, "Loop and block volumes").
		return 0, fmt.Errorf("%w: %d bytes is more than any pool can hold", ErrNoSpace, size)
	}
	size = rounded
	if req.LimitBytes > 0 && size > req.LimitBytes {
		return 0, fmt.Errorf("%w: a %s volume needs at least %d bytes (whole 4 KiB blocks), the limit is %d", ErrOutOfRange, kindName(req.Kind, req.FsType), size, req.LimitBytes)
	}
	return size, nil
}

func kindName(k Kind, fsType string) string {
	if k == KindLoop {
		return "loop " + fsType
	}
	return string(k)
}

// compatible reports whether an existing volume satisfies a create request
// (CSI: same name, compatible capacity, capabilities and parameters).
func compatible(v Volume, req CreateRequest) bool {
	if v.Kind != req.Kind || v.Pool != req.Pool || v.ReaderOnly != req.ReaderOnly || v.FsType != req.FsType || v.Ephemeral != req.Ephemeral ||
		v.SingleWriter != req.SingleWriter || v.MultiNode != req.MultiNode {
		return false
	}
	if v.CapacityBytes < req.RequiredBytes {
		return false
	}
	if v.Kind == KindDir && (v.SizeLimit.orOptional() != req.SizeLimit.orOptional() || v.InodeLimit != req.InodeLimit) {
		return false
	}
	return req.LimitBytes == 0 || v.CapacityBytes <= req.LimitBytes
}

// Create makes a volume, or returns the existing one of the same name when
// it is compatible. The caller holds the volume's lock
// (volumeid.FromName(req.Name)).
//
// Order of durable steps: record "creating" -> data -> record "ready". A
// crash after the first leaves a record that Load rolls back; a crash after
// the last leaves a complete volume. Data never exists without a record.
func (m *Manager) Create(req CreateRequest) (Volume, error) {
	id := volumeid.FromName(req.Name)
	p := m.pools[req.Pool]
	if p == nil {
		return Volume{}, fmt.Errorf("%w: %q", ErrPoolUnavailable, req.Pool)
	}
	s := m.store(req.Pool)
	existing, es, err := m.lookup(id)
	switch {
	case err == nil && existing.Name != req.Name:
		return Volume{}, fmt.Errorf("%w: ID %s is taken by volume %s", ErrAlreadyExists, id, untrusted.Quote(existing.Name))
	case err == nil && existing.State == StateReady:
		if !compatible(existing, req) {
			return Volume{}, fmt.Errorf("%w: %s (%s) has %d bytes in pool %q", ErrAlreadyExists, untrusted.Quote(req.Name), id, existing.CapacityBytes, existing.Pool)
		}
		return existing, nil
	case err == nil && existing.CreatedBy != m.nodeID:
		// A shared-pool volume another node is creating or deleting: only
		// that node may finish or roll it back.
		return Volume{}, fmt.Errorf("%w: %s (%s) is %s by node %q", ErrBusy, untrusted.Quote(req.Name), id, existing.State, existing.CreatedBy)
	case err == nil:
		// An earlier attempt failed half-way in this process (its rollback
		// failed too): finish removing it, then create afresh.
		ep := m.pools[existing.Pool]
		if ep == nil {
			return Volume{}, fmt.Errorf("%w: %q", ErrPoolUnavailable, existing.Pool)
		}
		if err := m.removeVolume(es, ep, existing); err != nil {
			return Volume{}, err
		}
	case !errors.Is(err, ErrNotFound):
		return Volume{}, err
	}

	if req.Kind.HasImage() && (m.loop == nil || m.fs == nil) {
		return Volume{}, fmt.Errorf("%w: %s volumes need loop devices, which this node does not offer", ErrInvalid, req.Kind)
	}
	if req.Kind == KindLoop {
		if _, err := fsutil.Check(req.FsType); err != nil || req.FsType == "" {
			return Volume{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	size, err := chooseSize(req)
	if err != nil {
		return Volume{}, err
	}
	limited := false
	if req.Kind == KindDir {
		if limited, err = m.sizeLimitFor(p, req.SizeLimit, req.InodeLimit); err != nil {
			return Volume{}, fmt.Errorf("volume %s: %w", untrusted.Quote(req.Name), err)
		}
	}
	// Data without any record is not ours to reuse or remove (Load reports
	// it and leaves it in place): only DeleteVolume removes data.
	probe := Volume{ID: id, Kind: req.Kind}
	if ok, err := dataExists(p, probe); err != nil {
		return Volume{}, err
	} else if ok {
		return Volume{}, fmt.Errorf("%w: data for %s already exists in pool %q without a volume record; an admin must restore or remove it", ErrAlreadyExists, untrusted.Quote(req.Name), p.Name)
	}
	st, err := p.Stats()
	if err != nil {
		return Volume{}, err
	}
	if err := m.promises.reserve(id, p.Name, st.AvailableBytes, size); err != nil {
		return Volume{}, fmt.Errorf("volume %s: %w", untrusted.Quote(req.Name), err)
	}
	reserved := true
	defer func() {
		if reserved {
			m.promises.drop(id)
		}
	}()

	v := Volume{
		Schema:        recordSchema,
		ID:            id,
		Name:          req.Name,
		Kind:          req.Kind,
		Pool:          p.Name,
		CapacityBytes: size,
		FsType:        req.FsType,
		CreatedBy:     m.nodeID,
		ReaderOnly:    req.ReaderOnly,
		SingleWriter:  req.SingleWriter,
		MultiNode:     req.MultiNode,
		PVCName:       req.PVCName,
		PVCNamespace:  req.PVCNamespace,
		Ephemeral:     req.Ephemeral,
		State:         StateCreating,
		CreatedAt:     time.Now().UTC().Truncate(time.Second),
	}
	if !p.Shared {
		v.Node = m.nodeID
	}
	if req.Kind == KindDir {
		v.SizeLimit, v.InodeLimit = req.SizeLimit.orOptional(), req.InodeLimit
	}
	releaseQuota, err := m.reserveQuota(p, &v, limited)
	if err != nil {
		return Volume{}, err
	}
	if err := s.Put(id, v); err != nil {
		releaseQuota()
		return Volume{}, err
	}
	failpoint.Hit("create-after-intent")
	if v, err = m.createData(p, v); err != nil {
		if rerr := m.removeVolume(s, p, v); rerr != nil {
			klog.ErrorS(rerr, "Rollback of failed creation incomplete; it is retried on the next create or at start-up", "volumeID", id)
		}
		if errors.Is(err, unix.ENOSPC) && !errors.Is(err, ErrNoSpace) {
			// A full pool (filled outside hostvol's promises) refused a
			// mkdir, a subvolume or an image: RESOURCE_EXHAUSTED, like a
			// create the promises refuse.
			err = fmt.Errorf("volume %s in pool %q: %w: %w", untrusted.Quote(req.Name), p.Name, ErrNoSpace, err)
		}
		return Volume{}, err
	}
	failpoint.Hit("create-after-data")
	v.State = StateReady
	if err := s.Put(id, v); err != nil {
		if rerr := m.removeVolume(s, p, v); rerr != nil {
			klog.ErrorS(rerr, "Rollback of failed creation incomplete; it is retried on the next create or at start-up", "volumeID", id)
		}
		return Volume{}, err
	}
	if !p.Shared {
		m.setIndex(v)
	}
	reserved = false
	m.promises.set(id, p.Name, m.unallocated(p, v))
	failpoint.Hit("create-after-ready")
	klog.V(2).InfoS("Volume created", "volumeID", id, "name", req.Name, "pool", p.Name, "capacityBytes", size, "limitedBy", limitedBy(v))
	return v, nil
}

// createData makes a volume's data. It returns the volume completed (a
// btrfs subvolume's ID), or on error as far as it got, for the rollback.
func (m *Manager) createData(p *pool.Pool, v Volume) (Volume, error) {
	if v.Kind.HasImage() {
		return v, m.createImage(p, v)
	}
	if v.Quota != nil {
		return m.createLimitedDir(p, v)
	}
	err := p.CreateDir(v.ID)
	if errors.Is(err, os.ErrExist) {
		// Left by an interrupted attempt under a "creating" record: ours.
		if err := p.RemoveDir(v.ID); err != nil {
			return v, err
		}
		err = p.CreateDir(v.ID)
	}
	if err != nil {
		return v, fmt.Errorf("create data of %s: %w", v.ID, err)
	}
	return v, nil
}

// createImage makes the sparse image of a loop or block volume and, for a
// loop volume, formats it: mkfs works on the file directly, so no loop
// device is needed until the volume is staged.
func (m *Manager) createImage(p *pool.Pool, v Volume) error {
	// A loop volume's image is formatted next, and mkfs fsyncs it.
	syncFile := v.Kind != KindLoop
	err := p.CreateImage(v.ID, v.CapacityBytes, syncFile)
	if errors.Is(err, os.ErrExist) {
		if err := p.RemoveImage(v.ID); err != nil {
			return err
		}
		err = p.CreateImage(v.ID, v.CapacityBytes, syncFile)
	}
	if err != nil {
		return fmt.Errorf("create image of %s: %w", v.ID, err)
	}
	if v.Kind == KindLoop {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if err := m.fs.Format(ctx, v.FsType, p.ImagePath(v.ID)); err != nil {
			if errors.Is(err, fsutil.ErrNoSpace) || poolFull(p) {
				return fmt.Errorf("format %s in pool %q: %w: %w", v.ID, p.Name, ErrNoSpace, err)
			}
			return fmt.Errorf("format %s: %w", v.ID, err)
		}
	}
	return nil
}

// poolFull reports whether a pool has (almost) nothing left, read right
// after a format failed and before the rollback frees the image's blocks.
// The promises counted the image whole, so a pool this full means
// something outside hostvol filled it (or the filesystem's own metadata
// needs outgrew what statfs showed). mkfs naming ENOSPC (fsutil.ErrNoSpace)
// is the exact signal; this one also covers a tool that reports the errno
// otherwise (a number, another wording), and is cheap: one statfs, on the
// failure path only. The threshold is the one under which health calls a
// filesystem exhausted: ext4 and XFS refuse writes with some tens of KiB
// still shown available.
func poolFull(p *pool.Pool) bool {
	st, err := p.Stats()
	return err == nil && st.AvailableBytes < exhaustedBytes
}

// Delete removes a volume and its data. A missing volume is not an error
// (CSI: DeleteVolume is idempotent). The caller holds the volume's lock.
//
// Order of durable steps: record "deleting" -> data removed -> record
// removed. Load finishes a deletion a crash interrupted.
func (m *Manager) Delete(id string) error {
	v, s, err := m.lookup(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if m.otherNode(v) {
		// Not OK either: the provisioner would believe the volume gone
		// while its data stays on the node that owns it.
		return fmt.Errorf("%w: volume %s lives on node %q (its record in %s says so), and this driver runs as node %q: refusing to delete another node's data; run hostvol with --node-id=%s to delete it", ErrOtherNode, id, v.Node, s.Dir(), m.nodeID, v.Node)
	}
	p := m.pools[v.Pool]
	if p == nil {
		return fmt.Errorf("%w: volume %s is in pool %q", ErrPoolUnavailable, id, v.Pool)
	}
	if v.State == StateCreating && v.CreatedBy != m.nodeID {
		return fmt.Errorf("%w: %s is being created by node %q", ErrBusy, id, v.CreatedBy)
	}
	if where, err := m.inUse(v); err != nil {
		return err
	} else if where != "" {
		return fmt.Errorf("%w: %s is still published or staged at %s", ErrInUse, id, where)
	}
	if v.State != StateDeleting {
		v.State = StateDeleting
		if err := s.Put(id, v); err != nil {
			return err
		}
		m.deleteIndex(id)
	}
	failpoint.Hit("delete-after-intent")
	if err := m.removeVolume(s, p, v); err != nil {
		return err
	}
	klog.V(2).InfoS("Volume deleted", "volumeID", id, "name", v.Name)
	return nil
}

// unreadableReason says why a record could not be read, for listings and
// health messages.
func unreadableReason(s *records.Store, id string, err error) string {
	return fmt.Sprintf("record %s cannot be read: %v", filepath.Join(s.Dir(), id+".json"), err)
}

// Listed is one entry of List: a ready volume, or a volume whose record
// cannot be read, of which only the ID (and, when known, the pool) is set
// and Unreadable says why.
type Listed struct {
	Volume
	Unreadable string
}

// List returns the ready volumes, and the volumes whose records cannot be
// read, with IDs greater than after, in ID order, at most max of them (0:
// all), and the token for the next page ("" at the end).
func (m *Manager) List(after string, max int) ([]Listed, string, error) {
	m.mu.RLock()
	ids := make([]string, 0, len(m.index)+len(m.unreadable))
	vols := make(map[string]Listed, len(m.index)+len(m.unreadable))
	for id, v := range m.index {
		if id > after {
			ids = append(ids, id)
			vols[id] = Listed{Volume: v}
		}
	}
	for id, why := range m.unreadable {
		if _, dup := vols[id]; id > after && !dup {
			ids = append(ids, id)
			vols[id] = Listed{Volume: Volume{ID: id, Node: m.nodeID}, Unreadable: why}
		}
	}
	m.mu.RUnlock()
	shared := map[string]string{} // ID -> pool, for those not listed yet
	for _, name := range m.sharedPoolNames() {
		keys, err := m.shared[name].Keys()
		if err != nil {
			return nil, "", err
		}
		for _, id := range keys {
			if id > after && volumeid.Validate(id) == nil {
				if _, dup := vols[id]; !dup {
					ids = append(ids, id)
					shared[id] = name
				}
			}
		}
	}
	sort.Strings(ids)
	out := make([]Listed, 0, len(ids))
	for _, id := range ids {
		if max > 0 && len(out) == max {
			return out, out[len(out)-1].ID, nil
		}
		l, ok := vols[id]
		if !ok {
			v, err := m.Get(id)
			switch {
			case errors.Is(err, records.ErrCorrupt):
				// Another node may write it again; until then it is
				// listed as what it is.
				s := m.shared[shared[id]]
				l = Listed{Volume: Volume{ID: id, Pool: shared[id]}, Unreadable: unreadableReason(s, id, err)}
			case err != nil:
				continue // deleted meanwhile, or not ready
			default:
				l = Listed{Volume: v}
			}
		}
		out = append(out, l)
	}
	return out, "", nil
}

// Unreadable returns why a node-local volume's record could not be read
// at start-up, if it could not. It costs one map lookup.
func (m *Manager) Unreadable(id string) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	why, ok := m.unreadable[id]
	return why, ok
}
