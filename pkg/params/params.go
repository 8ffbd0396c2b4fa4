// Package params parses StorageClass parameters (CreateVolume and
// GetCapacity "parameters") into a typed struct, once, at the CSI boundary.
// Unknown keys and malformed values are errors: a typo in a StorageClass
// must fail the first CreateVolume loudly, not create a volume that ignores
// what the admin asked for.
package params

import (
	"fmt"
	"sort"
	"strings"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// Keys a StorageClass may set.
const (
	KeyType = "type"
	KeyPool = "pool"
)

// Keys the external-provisioner adds with --extra-create-metadata.
const (
	KeyPVCName      = "csi.storage.k8s.io/pvc/name"
	KeyPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
	KeyPVName       = "csi.storage.k8s.io/pv/name"
)

// Params are the parsed parameters of a volume.
type Params struct {
	Type         volume.Kind
	Pool         string
	PVCName      string
	PVCNamespace string
}

var known = []string{KeyType, KeyPool, KeyPVCName, KeyPVCNamespace, KeyPVName}

// Parse validates and parses a parameter map. Defaults: type dir, pool
// "default".
func Parse(m map[string]string) (Params, error) {
	p := Params{Type: volume.KindDir, Pool: pool.DefaultName}
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
			case volume.KindDir:
				p.Type = volume.KindDir
			default:
				return Params{}, fmt.Errorf("parameter %q: unknown volume type %q (supported: %s)", k, v, volume.KindDir)
			}
		case KeyPool:
			if err := (pool.Spec{Name: v, Path: "/x"}).Validate(); err != nil {
				return Params{}, fmt.Errorf("parameter %q: %v", k, err)
			}
			p.Pool = v
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

// Context is the volume_context returned with a volume: what a node or an
// admin reading the PV may want to know.
func (p Params) Context() map[string]string {
	return map[string]string{KeyType: string(p.Type), KeyPool: p.Pool}
}
