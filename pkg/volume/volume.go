// Package volume is hostvol's storage backend: it creates, deletes, lists,
// publishes and measures volumes, keeping one durable record per volume. It
// knows nothing of gRPC; the driver package maps its sentinel errors to CSI
// status codes.
//
// A Manager holds the two sides of one node's volume layer, built over one
// catalog (catalog.go: pools, records, the index, per-volume locks):
//
//   - Controller: create.go, delete.go, list.go, expand.go, capacity.go
//     (promised capacity), quota.go (size limits), controller.go (loading
//     the records at start-up), controller_health.go, metrics.go.
//   - Node: node.go (node states), targets.go (what is mounted where),
//     stage.go, publish.go, paths.go (request paths), stats.go,
//     node_expand.go, node_health.go, ephemeral.go (inline volumes),
//     reconcile.go and lease.go (start-up, shared pools).
//
// Snapshots belong in a third type beside these two, over the same catalog
// (snapshot*.go), rather than in either side.
//
// Every exported operation of Controller and Node takes its volume's
// try-lock itself (ErrBusy while another operation holds it); besides it
// only a short in-memory index lock is taken, so operations on different
// volumes run in parallel and none of them costs more as the number of
// volumes grows.
package volume

import (
	"errors"
	"time"

	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
)

// Kind is how a volume is stored.
type Kind string

// Volume kinds.
const (
	// KindDir is a directory in a pool.
	KindDir Kind = "dir"
	// KindLoop is a filesystem in a sparse image file, attached to a loop
	// device at stage and mounted at the staging path.
	KindLoop Kind = "loop"
	// KindBlock is a sparse image file attached to a loop device and handed
	// to pods as a raw block device; it is never formatted.
	KindBlock Kind = "block"
)

// HasImage reports whether volumes of the kind live in an image file.
func (k Kind) HasImage() bool { return k == KindLoop || k == KindBlock }

// State is a volume's place in its life cycle. Only StateReady volumes are
// visible to users; the others exist so that start-up can finish or roll
// back an operation a crash interrupted.
type State string

// Volume states, in life-cycle order.
const (
	// StateCreating: the record was written, the data may be partly made.
	StateCreating State = "creating"
	// StateReady: the data is complete.
	StateReady State = "ready"
	// StateDeleting: the data is being removed; the record goes last.
	StateDeleting State = "deleting"
)

// recordSchema is the version of the Volume record layout.
const recordSchema = 1

// Volume is the durable record of one volume.
type Volume struct {
	Schema        int    `json:"schema"`
	ID            string `json:"id"`
	Name          string `json:"name"`
	Kind          Kind   `json:"kind"`
	Pool          string `json:"pool"`
	CapacityBytes int64  `json:"capacityBytes"`
	// FsType is the filesystem of a loop volume (ext4, xfs).
	FsType string `json:"fsType,omitempty"`
	// NodeExpandPending is set when the image grew and the loop device
	// and filesystem still have to follow (NodeExpandVolume or next stage).
	NodeExpandPending bool `json:"nodeExpandPending,omitempty"`
	// Node is the node the volume lives on; empty for a shared pool, whose
	// volumes are reachable from every node.
	Node string `json:"node,omitempty"`
	// CreatedBy is the node that created the volume (for shared pools, the
	// one allowed to roll back a creation it did not finish).
	CreatedBy string `json:"createdBy"`
	// ReaderOnly is set when the volume was created with reader-only access
	// modes only: every publish is then read-only and a writer is refused.
	ReaderOnly bool `json:"readerOnly,omitempty"`
	// SingleWriter is set when the volume was created for
	// SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod) only: every publish is
	// then exclusive, whatever access mode the publish names.
	SingleWriter bool `json:"singleWriter,omitempty"`
	// MultiNode is set when the volume was created with a multi-node
	// access mode (a raw block volume of a class with allowBlockRWX, or a
	// volume of a shared pool): its image may be attached on several
	// nodes at once, so a shared pool's lease is not taken for it.
	MultiNode bool `json:"multiNode,omitempty"`
	// SizeLimit and InodeLimit are what the class asked of a directory
	// volume ("" in records from before size limits: optional).
	SizeLimit  SizeLimit `json:"sizeLimit,omitempty"`
	InodeLimit int64     `json:"inodeLimit,omitempty"`
	// Quota is how a directory volume's size is enforced (a project ID, a
	// btrfs subvolume); nil when it is not. The "creating" record carries
	// it before the directory exists, so that start-up can clear what a
	// crash left behind.
	Quota *quota.Handle `json:"quota,omitempty"`
	// PVCName and PVCNamespace, when the provisioner passes them, tell an
	// admin looking at the node which claim owns the data.
	PVCName      string `json:"pvcName,omitempty"`
	PVCNamespace string `json:"pvcNamespace,omitempty"`
	// Ephemeral marks a CSI inline volume: made by the first
	// NodePublishVolume of a pod's volume and deleted by its last
	// NodeUnpublishVolume (ephemeral.go). PVCName and PVCNamespace then
	// name the pod.
	Ephemeral bool `json:"ephemeral,omitempty"`
	// SourceSnapshotID and SourceVolumeID name what the volume's data
	// started as: a restore's snapshot, a clone's volume.
	SourceSnapshotID string `json:"sourceSnapshotID,omitempty"`
	SourceVolumeID   string `json:"sourceVolumeID,omitempty"`
	// Frozen is the staging path of a clone source's filesystem while it
	// is frozen for the clone's reflink, in the clone's "creating"
	// record: start-up thaws it after a crash.
	Frozen    string    `json:"frozen,omitempty"`
	State     State     `json:"state"`
	CreatedAt time.Time `json:"createdAt"`
}

// Sentinel errors: every error of this package wraps one of them (errors
// of the layers below are given one here), and the driver maps each to one
// gRPC code.
var (
	// ErrNotFound: no such volume, or not on this node.
	ErrNotFound = errors.New("volume not found")
	// ErrAlreadyExists: a volume of that name exists and is incompatible
	// with the request, or a target is published incompatibly.
	ErrAlreadyExists = errors.New("volume already exists with different properties")
	// ErrInUse: the operation conflicts with the volume's current use
	// (published elsewhere under single-writer mode, delete while published).
	ErrInUse = errors.New("volume in use")
	// ErrBusy: another node is in the middle of an operation on this
	// shared-pool volume; the CO should retry.
	ErrBusy = errors.New("volume busy")
	// ErrNotAllowed: the request exceeds the volume's capabilities (a
	// writer publish of a reader-only volume).
	ErrNotAllowed = errors.New("operation not allowed for this volume")
	// ErrNoSpace: the pool cannot hold the requested capacity.
	ErrNoSpace = errors.New("not enough space in pool")
	// ErrPoolUnavailable: the volume's pool is not configured on this node.
	ErrPoolUnavailable = errors.New("pool not available on this node")
	// ErrInvalid: the request is malformed in a way only the backend sees.
	ErrInvalid = errors.New("invalid request")
	// ErrOutOfRange: a capacity the volume cannot have (shrinking, under
	// the filesystem's minimum within the limit).
	ErrOutOfRange = errors.New("capacity out of range")
	// ErrNotStaged: a publish or expansion needs the volume staged first.
	ErrNotStaged = errors.New("volume not staged")
	// ErrOtherNode: the volume's record names another node (hostvol was
	// restarted with another --node-id on the same state directory): this
	// node must not remove data that node owns.
	ErrOtherNode = errors.New("volume belongs to another node")
	// ErrCorrupt: a volume's record exists but cannot be decoded; it is
	// left in place for an admin.
	ErrCorrupt = records.ErrCorrupt
)

// CreateRequest describes a volume to create. The driver has validated and
// parsed the CSI request into it.
type CreateRequest struct {
	Name          string
	Kind          Kind
	FsType        string // loop volumes: ext4 (default) or xfs
	Pool          string
	RequiredBytes int64 // 0: no lower bound
	LimitBytes    int64 // 0: no upper bound
	DefaultBytes  int64 // size when neither bound is given
	ReaderOnly    bool
	// SingleWriter: created for SINGLE_NODE_SINGLE_WRITER only.
	SingleWriter bool
	// MultiNode: created with a multi-node access mode.
	MultiNode    bool
	PVCName      string
	PVCNamespace string
	// SizeLimit says what to do when the pool cannot enforce a directory
	// volume's size ("": optional; the driver passes the class's value,
	// whose default is required). InodeLimit (0: none) is a hard limit
	// on the files a directory volume may hold.
	SizeLimit  SizeLimit
	InodeLimit int64
	// Ephemeral makes a CSI inline volume (see Volume.Ephemeral).
	Ephemeral bool
	// SourceSnapshotID (a restore) or SourceVolumeID (a clone), both
	// validated, is what the volume's data starts as (restore.go).
	SourceSnapshotID string
	SourceVolumeID   string
	// AllowLiveCopy lets a clone that must be a full copy be made of a
	// volume published read-write (StorageClass allowLiveCopy).
	AllowLiveCopy bool
}

// PublishRequest describes a NodePublishVolume.
type PublishRequest struct {
	ID          string
	TargetPath  string
	StagingPath string
	// ReadOnly as asked by the CO; forced on for reader-only volumes/modes.
	ReadOnly bool
	// Writer is true for access modes that may write.
	Writer bool
	// SingleWriter is true for SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod).
	SingleWriter bool
	// MountFlags are extra options for the bind mount (validated).
	MountFlags []string
	// Block is true for a raw block publish.
	Block bool
}

// StageRequest describes a NodeStageVolume.
type StageRequest struct {
	ID          string
	StagingPath string
	// Block is true for the raw block access type.
	Block bool
	// FsType as the CO asks ("" accepts the volume's own).
	FsType string
	// MountFlags are options for mounting a loop volume's filesystem.
	MountFlags []string
}

// Stats are the figures NodeGetVolumeStats reports.
type Stats struct {
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
}
