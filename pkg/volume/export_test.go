package volume

// HoldLock takes a volume's lock as an operation in progress would, so
// that tests can see what other operations do meanwhile.
func (m *Manager) HoldLock(id string) (unlock func(), ok bool) { return m.cat.locks.TryLock(id) }
