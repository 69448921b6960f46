package node

import "sync"

// rangeLock serializes overlapping writes: a write waits until no
// earlier write to an overlapping range is in progress. That keeps the
// order of overlapping writes the same on both nodes, because the
// earlier one has completed locally and been sent (in protocol C: acked)
// before the later one is even issued.
type rangeLock struct {
	mu     sync.Mutex
	cond   *sync.Cond
	active []span
}

type span struct{ off, end int64 }

func newRangeLock() *rangeLock {
	l := &rangeLock{active: make([]span, 0, 64)}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// lock waits for [off, off+n) to be free and takes it.
func (l *rangeLock) lock(off, n int64) {
	s := span{off, off + n}
	l.mu.Lock()
	for l.overlaps(s) {
		l.cond.Wait()
	}
	l.active = append(l.active, s)
	l.mu.Unlock()
}

func (l *rangeLock) overlaps(s span) bool {
	for _, a := range l.active {
		if a.off < s.end && s.off < a.end {
			return true
		}
	}
	return false
}

// unlock releases a range taken by lock.
func (l *rangeLock) unlock(off, n int64) {
	s := span{off, off + n}
	l.mu.Lock()
	for i, a := range l.active {
		if a == s {
			last := len(l.active) - 1
			l.active[i] = l.active[last]
			l.active = l.active[:last]
			break
		}
	}
	l.mu.Unlock()
	l.cond.Broadcast()
}
