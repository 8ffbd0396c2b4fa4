// Package params parses StorageClass parameters (CreateVolume and
// GetCapacity "parameters") into a typed struct, once, at the CSI boundary.
// Unknown keys and malformed values are errors: a typo in a StorageClass
// must fail the first CreateVolume loudly, not create a volume that ignores
// what the admin asked for.
package params

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
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
)

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
	PVCName       string
	PVCNamespace  string
	SizeLimit     volume.SizeLimit
	InodeLimit    int64 // 0: none
}

var known = []string{KeyType, KeyPool, KeyAllowBlockRWX, KeyFsType, KeySizeLimit, KeyInodeLimit, KeyPVCName, KeyPVCNamespace, KeyPVName}

// Parse validates and parses a parameter map. Defaults: type dir, pool
// "default", sizeLimit required.
func Parse(m map[string]string) (Params, error) {
	p := Params{Type: volume.KindDir, Pool: pool.DefaultName, SizeLimit: volume.SizeLimitRequired}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m[k]
		switch k {
		case KeyType:
			switch volume.Kind(v) {
			case volume.KindDir, volume.KindLoop:
				p.Type = volume.Kind(v)
			default:
				return Params{}, fmt.Errorf("parameter %q: unknown volume type %q (supported: %s, %s)", k, v, volume.KindDir, volume.KindLoop)
			}
		case KeyPool:
			if err := (pool.Spec{Name: v, Path: "/x"}).Validate(); err != nil {
				return Params{}, fmt.Errorf("parameter %q: %v", k, err)
			}
			p.Pool = v
		case KeyAllowBlockRWX:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Params{}, fmt.Errorf("parameter %q: want true or false, got %q", k, v)
			}
			p.AllowBlockRWX = b
		case KeyFsType:
			t, err := fsutil.Check(v)
			if err != nil {
				return Params{}, fmt.Errorf("parameter %q: %v", k, err)
			}
			p.FsType = t
		case KeySizeLimit:
			switch volume.SizeLimit(v) {
			case volume.SizeLimitRequired, volume.SizeLimitOptional:
				p.SizeLimit = volume.SizeLimit(v)
			default:
				return Params{}, fmt.Errorf("parameter %q: want %s or %s, got %q", k, volume.SizeLimitRequired, volume.SizeLimitOptional, v)
			}
		case KeyInodeLimit:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return Params{}, fmt.Errorf("parameter %q: want a positive number of inodes, got %q", k, v)
			}
			p.InodeLimit = n
		case KeyPVCName:
			p.PVCName = v
		case KeyPVCNamespace:
			p.PVCNamespace = v
		case KeyPVName:
			// The PV name is the CSI volume name already.
		default:
			return Params{}, fmt.Errorf("unknown parameter %q (known: %s)", k, strings.Join(known, ", "))
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
