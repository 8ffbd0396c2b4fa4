package volume

import "time"

// HoldLock takes a volume's lock as an operation in progress would, so
// that tests can see what other operations do meanwhile.
func (m *Manager) HoldLock(id string) (unlock func(), ok bool) { return m.cat.locks.TryLock(id) }

// SetSnapshotSyncWait sets how long CreateSnapshot waits for a background
// copy before it answers ready_to_use=false.
func SetSnapshotSyncWait(m *Manager, d time.Duration) { m.Snapshots.syncWait = d }
