package replication

import (
	"math/bits"
	"sync"
)

// slots is a fixed table of this node's calls that wait for the peer's
// answer (reads through the peer, resync and verify requests), keyed by
// the ID sent with them. An ID's low bits are its slot and its high bits
// a sequence number, so an answer naming a slot that was reused since (a
// late, duplicated or forged one) does not match the call now in it. The
// table also counts the calls' bytes against a budget.
//
// Lock ownership: the Link's mu guards every field; cond's L is that
// mutex, and callers wait on it for room.
type slots[T any] struct {
	calls []*T
	ids   []uint64
	sizes []int64
	shift uint // log2(len(calls))
	seq   uint64
	out   int   // calls in the table
	bytes int64 // their sizes
	cond  sync.Cond
}

// init sizes the table to n slots (a power of two) under mu.
func (s *slots[T]) init(n int, mu *sync.Mutex) {
	s.calls, s.ids, s.sizes = make([]*T, n), make([]uint64, n), make([]int64, n)
	s.shift = uint(bits.TrailingZeros(uint(n)))
	s.cond.L = mu
}

// full reports whether a call of n bytes must wait: every slot is taken,
// or the calls in flight would exceed budget (one call always fits).
func (s *slots[T]) full(n, budget int64) bool {
	return s.out == len(s.calls) || (s.bytes > 0 && s.bytes+n > budget)
}

// take puts c, of n bytes, in a free slot and returns its ID; the caller
// checked full.
func (s *slots[T]) take(c *T, n int64) uint64 {
	slot := 0
	for s.calls[slot] != nil {
		slot++
	}
	s.seq++
	id := s.seq<<s.shift | uint64(slot)
	s.calls[slot], s.ids[slot], s.sizes[slot] = c, id, n
	s.out++
	s.bytes += n
	return id
}

// get returns the call with ID id, or nil.
func (s *slots[T]) get(id uint64) *T {
	slot := id & uint64(len(s.calls)-1)
	if s.calls[slot] == nil || s.ids[slot] != id {
		return nil
	}
	return s.calls[slot]
}

// release frees the slot of ID id and wakes the waiters; false if it no
// longer holds that call (drained, or answered before).
func (s *slots[T]) release(id uint64) bool {
	slot := id & uint64(len(s.calls)-1)
	if s.calls[slot] == nil || s.ids[slot] != id {
		return false
	}
	s.calls[slot] = nil
	s.out--
	s.bytes -= s.sizes[slot]
	s.cond.Broadcast()
	return true
}

// each calls f with every call in the table and its ID.
func (s *slots[T]) each(f func(c *T, id uint64)) {
	for slot, c := range s.calls {
		if c != nil {
			f(c, s.ids[slot])
		}
	}
}

// drain empties the table, calling f with every call in it.
func (s *slots[T]) drain(f func(c *T)) {
	for slot, c := range s.calls {
		if c != nil {
			s.calls[slot] = nil
			f(c)
		}
	}
	s.out, s.bytes = 0, 0
	s.cond.Broadcast()
}
