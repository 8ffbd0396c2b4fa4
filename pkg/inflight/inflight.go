// Package inflight provides per-key try-locks. An operation on a volume
// takes the volume's lock without waiting; a second operation on the same
// volume while the first runs fails at once (the driver answers ABORTED and
// the CO retries), and operations on different volumes never contend beyond
// a map access.
package inflight

import "sync"

// Locks is a set of per-key try-locks. The zero value is ready to use.
type Locks struct {
	mu   sync.Mutex
	held map[string]struct{}
}

// TryLock takes the lock for key. It returns a function that releases it and
// true, or nil and false when the key is already held.
func (l *Locks) TryLock(key string) (unlock func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == nil {
		l.held = make(map[string]struct{})
	}
	if _, busy := l.held[key]; busy {
		return nil, false
	}
	l.held[key] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.held, key)
			l.mu.Unlock()
		})
	}, true
}
