package volume

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
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

// Manager is the volume layer of one hostvol process: the controller side
// and the node side over one catalog of volumes. hostvol runs both sides
// in every node plugin (the provisioner runs in distributed mode), so they
// share the records and the per-volume locks; each exported operation
// takes its volume's lock itself.
type Manager struct {
	Controller *Controller
	Node       *Node
	Snapshots  *Snapshots
	cat        *catalog
}

// New opens the record stores. Call Load before serving.
func New(cfg Config) (*Manager, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("node ID is required")
	}
	if cfg.Mounter == nil {
		return nil, errors.New("mounter is required")
	}
	cat, err := newCatalog(cfg.NodeID, cfg.StateDir, cfg.Pools)
	if err != nil {
		return nil, err
	}
	nodeStates, err := records.Open(filepath.Join(cfg.StateDir, "node"))
	if err != nil {
		return nil, err
	}
	cat.stateDirs = append(cat.stateDirs, nodeStates.Dir())
	q := newQuotas(cfg.Quota, cfg.Pools)
	ctrl := &Controller{
		catalog:  cat,
		quotas:   q,
		promises: newPromises(),
		images:   cfg.Loop != nil && cfg.FS != nil,
		fs:       cfg.FS,
	}
	node := &Node{
		catalog:      cat,
		quotas:       q,
		ctrl:         ctrl,
		mounter:      mounter.FromList(cfg.Mounter),
		loop:         cfg.Loop,
		fs:           cfg.FS,
		nodeStates:   nodeStates,
		ephemeralDir: filepath.Join(cfg.StateDir, "ephemeral"),
		inline:       newInlineBudget(cfg.InlineMaxBytes, cfg.InlineMaxTotalBytes),
	}
	ctrl.node = node
	snaps := &Snapshots{catalog: cat, ctrl: ctrl, node: node, syncWait: 2 * time.Second}
	if err := node.protect(cfg.StateDir, "the state directory"); err != nil {
		return nil, err
	}
	for _, p := range cfg.Pools {
		if err := node.protect(p.Path, fmt.Sprintf("pool %q", p.Name)); err != nil {
			return nil, err
		}
	}
	return &Manager{Controller: ctrl, Node: node, Snapshots: snaps, cat: cat}, nil
}

// Load settles what a restart left behind and marks the manager ready:
// loop devices no staging owns are detached, every record is read and an
// operation a crash interrupted is finished or rolled back, data without a
// record is reported, and leases this node no longer needs are released.
// It is the only O(n) step, and it runs once, at start-up.
func (m *Manager) Load() error {
	m.Node.reconcileDevices()
	if err := m.Snapshots.load(); err != nil {
		return err
	}
	if err := m.Controller.load(); err != nil {
		return err
	}
	m.Node.reconcileLeases()
	m.cat.loaded.Store(true)
	klog.V(2).InfoS("Volume records loaded", "volumes", m.cat.indexLen(), "snapshots", m.Snapshots.SnapshotCount())
	return nil
}

// Ready reports whether Load has finished.
func (m *Manager) Ready() bool { return m.cat.loaded.Load() }

// Close releases what the size enforcers hold open. Call it once, after
// the last operation.
func (m *Manager) Close() error { return m.Controller.close() }

// detectCopy finds and logs, once per pool, how it can copy a volume's
// data (pool.DetectCopy): what snapshots, restores and clones of its
// volumes can use. A probe that fails is logged, and the pool copies data
// byte by byte; it does not stop start-up.
func detectCopy(pools []*pool.Pool) map[string]pool.CopySupport {
	out := make(map[string]pool.CopySupport, len(pools))
	for _, p := range pools {
		cs, err := p.DetectCopy()
		if err != nil {
			klog.ErrorS(err, "Detecting how the pool copies data failed", "pool", p.Name, "path", p.Path)
			continue
		}
		out[p.Name] = cs
		kv := []any{"pool", p.Name, "path", p.Path, "btrfs", cs.Btrfs, "reflink", cs.Reflink}
		if cs.NoReflink != "" {
			kv = append(kv, "noReflink", cs.NoReflink)
		}
		klog.InfoS("Pool copy support", kv...)
	}
	return out
}
