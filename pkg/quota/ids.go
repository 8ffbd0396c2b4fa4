package quota

import (
	"container/heap"
	"fmt"
	"sync"
)

// projectIDs hands out the project IDs of one filesystem: the lowest free ID
// in [first, last], never one still held. Pools on one filesystem share it
// (project IDs are per filesystem). Every call holds the mutex for a few map
// and heap operations only, never across I/O, and costs O(log n).
//
// IDs below next are either held (in held) or in one of the free ranges;
// IDs from next up are all free. A free range may also cover IDs that are
// held again (adopt does not search the heap): take skips those, so each
// is skipped once.
type projectIDs struct {
	mu          sync.Mutex
	first, last uint32
	next        uint32
	held        map[uint32]string // ID -> owner ("" for an ID used outside hostvol)
	free        rangeHeap
}

func newProjectIDs(first, last uint32) *projectIDs {
	return &projectIDs{first: first, last: last, next: first, held: map[uint32]string{}}
}

// take holds and returns the lowest free ID for owner.
func (p *projectIDs) take(owner string) (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.free.Len() > 0 {
		r := &p.free[0]
		id := r.lo
		if r.lo == r.hi {
			heap.Pop(&p.free)
		} else {
			r.lo++
			heap.Fix(&p.free, 0)
		}
		if _, held := p.held[id]; !held {
			p.held[id] = owner
			return id, nil
		}
	}
	if p.next > p.last || p.next < p.first {
		return 0, fmt.Errorf("%w: all of %d-%d are held", ErrExhausted, p.first, p.last)
	}
	id := p.next
	p.next++
	p.held[id] = owner
	return id, nil
}

// adopt holds id for owner (an ID read from a record). An ID outside the
// range is held too, so that it is never released into it by mistake.
func (p *projectIDs) adopt(owner string, id uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if o, held := p.held[id]; held && o != owner {
		return fmt.Errorf("project ID %d is held by %q, also claimed by %q", id, o, owner)
	}
	p.held[id] = owner
	if id >= p.next && id >= p.first && id <= p.last {
		// The IDs skipped over are free until something adopts them.
		if id > p.next {
			heap.Push(&p.free, idRange{lo: p.next, hi: id - 1})
		}
		p.next = id + 1
	}
	return nil
}

// markForeign holds id for nobody: it is in use on the filesystem (files
// or limits) without a record of ours, so it is never handed out.
func (p *projectIDs) markForeign(id uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held[id] = ""
}

// release frees id if owner holds it.
func (p *projectIDs) release(owner string, id uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if o, held := p.held[id]; !held || o != owner {
		return
	}
	delete(p.held, id)
	if id >= p.first && id < p.next {
		heap.Push(&p.free, idRange{lo: id, hi: id})
	}
}

// holder returns who holds id.
func (p *projectIDs) holder(id uint32) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	o, ok := p.held[id]
	return o, ok
}

// idRange is the free IDs lo..hi.
type idRange struct{ lo, hi uint32 }

// rangeHeap is a min-heap of free ranges by their lowest ID (container/heap).
type rangeHeap []idRange

func (h rangeHeap) Len() int           { return len(h) }
func (h rangeHeap) Less(i, j int) bool { return h[i].lo < h[j].lo }
func (h rangeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *rangeHeap) Push(x any)        { *h = append(*h, x.(idRange)) }
func (h *rangeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
