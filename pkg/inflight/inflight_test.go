package inflight

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTryLock(t *testing.T) {
	var l Locks
	unlockA, ok := l.TryLock("a")
	require.True(t, ok)
	_, ok = l.TryLock("a")
	require.False(t, ok, "second lock of a held key must fail")
	unlockB, ok := l.TryLock("b")
	require.True(t, ok, "other keys are independent")
	unlockA()
	unlockA() // idempotent
	again, ok := l.TryLock("a")
	require.True(t, ok)
	again()
	unlockB()
}

func TestOnlyOneHolderUnderContention(t *testing.T) {
	var l Locks
	var holders, maxHolders atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				unlock, ok := l.TryLock("k")
				if !ok {
					continue
				}
				n := holders.Add(1)
				for {
					m := maxHolders.Load()
					if n <= m || maxHolders.CompareAndSwap(m, n) {
						break
					}
				}
				holders.Add(-1)
				unlock()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, int32(1), maxHolders.Load())
}
