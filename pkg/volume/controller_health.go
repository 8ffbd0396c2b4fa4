package volume

import (
	"errors"
	"fmt"

	"k8s.io/klog/v2"
)

// Health reports the conditions of a ready volume as this process sees
// them (ControllerGetVolumeHealth): controller and node are one process, so
// this includes what this node's staging of the volume looks like. Every
// check costs O(1) in the number of volumes. It takes the volume's lock,
// so no stage or unstage is half done while it looks.
func (c *Controller) Health(id string) (cs []Condition, err error) {
	if why, ok := c.Unreadable(id); ok {
		return recordUnreadable(id, why), nil
	}
	err = c.locked(id, func() error {
		v, err := c.Get(id)
		if errors.Is(err, ErrCorrupt) {
			// A shared pool's record (List reads those anew), or one
			// that became unreadable after start-up.
			cs = recordUnreadable(id, err.Error())
			return nil
		}
		if err != nil {
			return err
		}
		cs, err = c.node.conditions(v)
		return err
	})
	return cs, err
}

// ListHealth pages through ready volumes and unreadable records in ID
// order (like List) and returns those with conditions, at most max of them
// (0: all), and the token for the next page: the last volume examined, ""
// at the end. A volume whose lock is held is skipped this time (an
// operation is changing it; ControllerGetVolumeHealth answers for one
// volume), a volume that cannot be checked is reported with
// ReasonHealthCheckFailed, and an unreadable record with
// ReasonRecordUnreadable.
func (c *Controller) ListHealth(after string, max int) ([]VolumeHealth, string, error) {
	vols, _, err := c.List(after, 0)
	if err != nil {
		return nil, "", err
	}
	var out []VolumeHealth
	for i, v := range vols {
		var cs []Condition
		ok := true
		if v.Unreadable != "" {
			cs = recordUnreadable(v.ID, v.Unreadable)
		} else {
			cs, ok = c.tryCheck(v.ID)
		}
		if !ok || len(cs) == 0 {
			continue
		}
		out = append(out, VolumeHealth{ID: v.ID, Conditions: cs})
		if max > 0 && len(out) == max && i < len(vols)-1 {
			return out, v.ID, nil
		}
	}
	return out, "", nil
}

// tryCheck checks one volume under its try-lock; ok is false when the lock
// is held or the volume went away.
func (c *Controller) tryCheck(id string) ([]Condition, bool) {
	unlock, ok := c.locks.TryLock(id)
	if !ok {
		return nil, false
	}
	defer unlock()
	v, err := c.Get(id)
	if err != nil {
		return nil, false // deleted meanwhile
	}
	cs, err := c.node.conditions(v)
	if err != nil {
		klog.ErrorS(err, "Volume health check failed", "volumeID", id)
		return []Condition{{Severity: Degraded, Reason: ReasonHealthCheckFailed, Message: fmt.Sprintf("volume %s: health check failed: %v", id, err)}}, true
	}
	return cs, true
}
