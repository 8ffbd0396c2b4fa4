package volume

import (
	"errors"
	"sort"

	"github.com/seed3e7d50b2/hostvol/pkg/records"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

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
func (c *Controller) List(after string, max int) ([]Listed, string, error) {
	c.mu.RLock()
	ids := make([]string, 0, len(c.index)+len(c.unreadable))
	vols := make(map[string]Listed, len(c.index)+len(c.unreadable))
	for id, v := range c.index {
		if id > after {
			ids = append(ids, id)
			vols[id] = Listed{Volume: v}
		}
	}
	for id, why := range c.unreadable {
		if _, dup := vols[id]; id > after && !dup {
			ids = append(ids, id)
			vols[id] = Listed{Volume: Volume{ID: id, Node: c.nodeID}, Unreadable: why}
		}
	}
	c.mu.RUnlock()
	shared := map[string]string{} // ID -> pool, for those not listed yet
	for _, name := range c.sharedPoolNames() {
		keys, err := c.shared[name].Keys()
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
			v, err := c.Get(id)
			switch {
			case errors.Is(err, records.ErrCorrupt):
				// Another node may write it again; until then it is
				// listed as what it is.
				s := c.shared[shared[id]]
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
