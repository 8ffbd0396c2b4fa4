package volume

import "sort"

// snapshotUse reports how a volume is used on this node, for a snapshot
// or clone of it: where its filesystem is staged (to freeze or sync), the
// loop device its image is attached to (to flush), and the targets it is
// published read-write at. Mounts that are gone are not counted.
func (n *Node) snapshotUse(v Volume) (snapshotUse, error) {
	ns, src, err := n.stateOf(v)
	if err != nil {
		return snapshotUse{}, err
	}
	if _, err := n.liveTargets(v, &ns, src); err != nil {
		return snapshotUse{}, err
	}
	var u snapshotUse
	for t, tg := range ns.Targets {
		if !tg.ReadOnly {
			u.writers = append(u.writers, t)
		}
	}
	sort.Strings(u.writers)
	if !v.Kind.HasImage() {
		return u, nil
	}
	u.device = src
	if v.Kind == KindLoop {
		live, err := n.staged(v, ns, src)
		if err != nil {
			return snapshotUse{}, err
		}
		if live {
			u.stagingPath = ns.StagingPath
		}
	}
	return u, nil
}
