// Package params parses StorageClass parameters (CreateVolume and
// GetCapacity "parameters") into a typed struct, once, at the CSI boundary.
// Unknown keys and malformed values are errors: a typo in a StorageClass
// must fail the first CreateVolume loudly, not create a volume that ignores
// what the admin asked for.
package params

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/seed3e7d50b2/hostvol/pkg/bytesize"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// Keys a StorageClass may set.
const (
	KeyType = "type"
	KeyPool = "pool"
	// KeyAllowBlockRWX lets raw block volumes be created with a
	// multi-node writer access mode (ReadWriteMany). Off by default: two
	// writers on one block device need an application that coordinates.
	KeyAllowBlockRWX = "allowBlockRWX"
	// KeyFsType is the filesystem of a loop volume. The external-provisioner
	// passes it in the volume capability; other clients may pass it here.
	KeyFsType = "csi.storage.k8s.io/fstype"
	// KeySizeLimit says what happens to a directory volume on a pool that
	// cannot enforce its size: "required" (default) refuses it,
	// "optional" accepts it without a hard limit.
	KeySizeLimit = "sizeLimit"
	// KeyInodeLimit is a hard limit on the files and directories a
	// directory volume may hold (XFS and ext4 project quotas).
	KeyInodeLimit = "inodeLimit"
	// KeyAllowLiveCopy lets a clone (StorageClass) or a snapshot
	// (VolumeSnapshotClass) that must be a file-by-file copy be made of a
	// volume published read-write: "true" accepts a copy that may not be
	// consistent. Default false: such a request is FAILED_PRECONDITION.
	KeyAllowLiveCopy = "allowLiveCopy"
)

// TopologyKey is the topology segment that pins node-local volumes.
const TopologyKey = "topology.hostvol.csi.io/node"

// KeyRecordUnreadable is the volume_context key with which ListVolumes
// lists a volume whose record cannot be read: its value says why. Such an
// entry has no capacity; hostvol leaves the record and the data alone.
const KeyRecordUnreadable = "recordUnreadable"

// Keys the external-provisioner adds with --extra-create-metadata.
const (
	KeyPVCName      = "csi.storage.k8s.io/pvc/name"
	KeyPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
	KeyPVName       = "csi.storage.k8s.io/pv/name"
)

// Params are the parsed parameters of a volume.
type Params struct {
	Type          volume.Kind // KindDir or KindLoop; block is chosen by the access type
	Pool          string
	FsType        string
	AllowBlockRWX bool
	AllowLiveCopy bool
	PVCName       string
	PVCNamespace  string
	SizeLimit     volume.SizeLimit
	InodeLimit    int64 // 0: none
}

var known = []string{KeyType, KeyPool, KeyAllowBlockRWX, KeyAllowLiveCopy, KeyFsType, KeySizeLimit, KeyInodeLimit, KeyPVCName, KeyPVCNamespace, KeyPVName}

// Parse validates and parses a parameter map. Defaults: type dir, pool
// "default", sizeLimit required.
func Parse(m map[string]string) (Params, error) {
	p := Params{Type: volume.KindDir, Pool: pool.DefaultName, SizeLimit: volume.SizeLimitRequired}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		switch k {
		case KeyType:
			switch volume.Kind(v) {
			case volume.KindDir, volume.KindLoop:
				p.Type = volume.Kind(v)
			default:
				return Params{}, fmt.Errorf("parameter %s: unknown volume type %s (supported: %s, %s)", untrusted.Quote(k), untrusted.Quote(v), volume.KindDir, volume.KindLoop)
			}
		case KeyPool:
			if err := pool.ValidName(v); err != nil {
				return Params{}, fmt.Errorf("parameter %s: %w", untrusted.Quote(k), err)
			}
			p.Pool = v
		case KeyAllowBlockRWX, KeyAllowLiveCopy:
			b, err := parseBool(k, v)
			if err != nil {
				return Params{}, err
			}
			if k == KeyAllowBlockRWX {
				p.AllowBlockRWX = b
			} else {
				p.AllowLiveCopy = b
			}
		case KeyFsType:
			t, err := fsutil.Check(v)
			if err != nil {
				return Params{}, fmt.Errorf("parameter %s: %v", untrusted.Quote(k), err)
			}
			p.FsType = t
		case KeySizeLimit:
			switch volume.SizeLimit(v) {
			case volume.SizeLimitRequired, volume.SizeLimitOptional:
				p.SizeLimit = volume.SizeLimit(v)
			default:
				return Params{}, fmt.Errorf("parameter %s: want %s or %s, got %s", untrusted.Quote(k), volume.SizeLimitRequired, volume.SizeLimitOptional, untrusted.Quote(v))
			}
		case KeyInodeLimit:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return Params{}, fmt.Errorf("parameter %s: want a positive number of inodes, got %s", untrusted.Quote(k), untrusted.Quote(v))
			}
			p.InodeLimit = n
		case KeyPVCName:
			p.PVCName = v
		case KeyPVCNamespace:
			p.PVCNamespace = v
		case KeyPVName:
			// The PV name is the CSI volume name already.
		default:
			return Params{}, fmt.Errorf("unknown parameter %s (known: %s)", untrusted.Quote(k), strings.Join(known, ", "))
		}
	}
	return p, nil
}

func parseBool(k, v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("parameter %s: want true or false, got %s", untrusted.Quote(k), untrusted.Quote(v))
	}
	return b, nil
}

// Keys the csi-snapshotter adds to CreateSnapshot's parameters with
// --extra-create-metadata.
const (
	KeySnapshotName        = "csi.storage.k8s.io/volumesnapshot/name"
	KeySnapshotNamespace   = "csi.storage.k8s.io/volumesnapshot/namespace"
	KeySnapshotContentName = "csi.storage.k8s.io/volumesnapshotcontent/name"
)

// SnapshotParams are the parsed parameters of a CreateSnapshot (its
// VolumeSnapshotClass's).
type SnapshotParams struct {
	AllowLiveCopy bool
}

// ParseSnapshot validates and parses CreateSnapshot's parameters.
func ParseSnapshot(m map[string]string) (SnapshotParams, error) {
	var p SnapshotParams
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch k {
		case KeyAllowLiveCopy:
			b, err := parseBool(k, m[k])
			if err != nil {
				return SnapshotParams{}, err
			}
			p.AllowLiveCopy = b
		case KeySnapshotName, KeySnapshotNamespace, KeySnapshotContentName:
		default:
			return SnapshotParams{}, fmt.Errorf("unknown snapshot parameter %s (known: %s)", untrusted.Quote(k), KeyAllowLiveCopy)
		}
	}
	return p, nil
}

// Context is the volume_context returned with a volume: what an admin
// reading the PV may want to know. The node reads its own record, never this.
func Context(kind volume.Kind, poolName, fsType string) map[string]string {
	c := map[string]string{KeyType: string(kind), KeyPool: poolName}
	if fsType != "" {
		c["fsType"] = fsType
	}
	return c
}

// KeySize is the size of a CSI inline volume (a Kubernetes quantity such as
// "1Gi"), which has no claim to carry one.
const KeySize = "size"

// Keys the kubelet adds to an inline volume's attributes (podInfoOnMount);
// they describe the pod, not the volume.
const (
	KeyPodName            = "csi.storage.k8s.io/pod.name"
	KeyPodNamespace       = "csi.storage.k8s.io/pod.namespace"
	KeyPodUID             = "csi.storage.k8s.io/pod.uid"
	KeyServiceAccountName = "csi.storage.k8s.io/serviceAccount.name"
	KeyServiceAccountToks = "csi.storage.k8s.io/serviceAccount.tokens"
	KeyEphemeral          = "csi.storage.k8s.io/ephemeral"
)

// Inline is what a pod's volumeAttributes ask of a CSI inline volume.
type Inline struct {
	Params
	// SizeBytes is the size asked for; 0 takes the driver's default.
	SizeBytes    int64
	PodName      string
	PodNamespace string
}

// IsEphemeral reports whether a NodePublishVolume's volume context is that
// of a CSI inline volume.
func IsEphemeral(volumeContext map[string]string) bool {
	return volumeContext[KeyEphemeral] == "true"
}

// InlineAttributes are the attributes a pod may ever set on a CSI inline
// volume; an admin may allow fewer (InlinePolicy.Attributes). sizeLimit is
// not among them: an inline volume is always hard-sized, since its pod's
// author, not the cluster's admin, would choose to lift the limit. Nor is
// allowBlockRWX: inline volumes are never raw block.
var InlineAttributes = []string{KeySize, KeyType, KeyFsType, KeyPool, KeyInodeLimit}

// InlinePolicy is what an admin lets pod authors ask of CSI inline volumes:
// a security boundary, since anyone who may create a pod may write
// volumeAttributes (docs/security.md).
type InlinePolicy struct {
	// Pools are the pools inline volumes may live in (node-local ones
	// only); none turns inline volumes off.
	Pools []string
	// Attributes are the keys of InlineAttributes a pod may set; the
	// others take their defaults.
	Attributes []string
	// MaxBytes bounds one inline volume, MaxTotalBytes all of a node's.
	MaxBytes, MaxTotalBytes int64
}

// Default inline volume bounds: scratch space the size of a generous
// emptyDir, and at most four of them at full size per node.
const (
	DefaultInlineMaxBytes      = 4 << 30
	DefaultInlineMaxTotalBytes = 16 << 30
)

// DefaultInlinePolicy allows every inline attribute in the pool "default",
// within the default bounds.
func DefaultInlinePolicy() InlinePolicy {
	return InlinePolicy{
		Pools:         []string{pool.DefaultName},
		Attributes:    append([]string(nil), InlineAttributes...),
		MaxBytes:      DefaultInlineMaxBytes,
		MaxTotalBytes: DefaultInlineMaxTotalBytes,
	}
}

// ErrInlineOff is returned (wrapped) by ParseInline when the node allows no
// inline volumes at all.
var ErrInlineOff = errors.New("inline volumes are turned off")

// ErrInlineTooLarge is returned (wrapped) by ParseInline for a size above
// the policy's MaxBytes.
var ErrInlineTooLarge = errors.New("inline volume too large")

// ParseInline parses the volume context of an inline volume against what
// the admin allows: the StorageClass keys of pol.Attributes (type, pool,
// csi.storage.k8s.io/fstype, inodeLimit) plus size, next to the pod
// information the kubelet adds. As with a class, unknown keys are errors;
// so are keys the policy does not allow, a pool it does not list and a
// size above its MaxBytes. sizeLimit is always required.
func ParseInline(ctx map[string]string, pol InlinePolicy) (Inline, error) {
	if len(pol.Pools) == 0 {
		return Inline{}, ErrInlineOff
	}
	rest := make(map[string]string, len(ctx))
	var in Inline
	for _, k := range slices.Sorted(maps.Keys(ctx)) {
		v := ctx[k]
		switch k {
		case KeyPodName:
			in.PodName = v
			continue
		case KeyPodNamespace:
			in.PodNamespace = v
			continue
		case KeyPodUID, KeyServiceAccountName, KeyServiceAccountToks, KeyEphemeral:
			continue
		case KeyPVCName, KeyPVCNamespace, KeyPVName:
			return Inline{}, fmt.Errorf("parameter %s belongs to a claim, not to an inline volume", untrusted.Quote(k))
		}
		if !slices.Contains(pol.Attributes, k) {
			if slices.Contains(known, k) || k == KeySize {
				return Inline{}, fmt.Errorf("parameter %s may not be set on inline volumes on this node (allowed: %s)", untrusted.Quote(k), strings.Join(pol.Attributes, ", "))
			}
			return Inline{}, fmt.Errorf("unknown parameter %s (inline volumes take: %s)", untrusted.Quote(k), strings.Join(pol.Attributes, ", "))
		}
		if k == KeySize {
			n, err := bytesize.Parse(v)
			if err != nil {
				return Inline{}, fmt.Errorf("parameter %s: %v", untrusted.Quote(k), err)
			}
			if n == 0 {
				return Inline{}, fmt.Errorf("parameter %s: size %s: want a positive size (leave it out for the driver's default)", untrusted.Quote(k), untrusted.Quote(v))
			}
			in.SizeBytes = n
			continue
		}
		rest[k] = v
	}
	p, err := Parse(rest)
	if err != nil {
		return Inline{}, err
	}
	p.SizeLimit = volume.SizeLimitRequired
	if in.SizeBytes > pol.MaxBytes {
		return Inline{}, fmt.Errorf("%w: size %s is more than the %d bytes an inline volume may have on this node", ErrInlineTooLarge, untrusted.Quote(ctx[KeySize]), pol.MaxBytes)
	}
	if !slices.Contains(pol.Pools, p.Pool) {
		return Inline{}, fmt.Errorf("pool %s may not hold inline volumes on this node (allowed: %s)", untrusted.Quote(p.Pool), strings.Join(pol.Pools, ", "))
	}
	in.Params = p
	return in, nil
}
