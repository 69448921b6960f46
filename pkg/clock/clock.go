package clock

import (
	"sort"
	"sync"
	"time"
)

// Tick is DRBD's unit of time, 0.1 s: the state machine's tick (the
// unit of ping-timeout and timeout) and the resync controller's period
// (DRBD's SLEEP_TIME, HZ/10). One constant, because DRBD's rates and
// timeouts are written in it.
const Tick = 100 * time.Millisecond

// Clock gives the time and tickers. Implementations are safe for
// concurrent use.
type Clock interface {
	Now() time.Time
	// NewTicker returns a channel that receives the time every d, and a
	// function that stops it. Like time.Ticker, a slow reader misses
	// ticks instead of queueing them.
	NewTicker(d time.Duration) (c <-chan time.Time, stop func())
}

// Real is the system clock.
type Real struct{}

// Now implements Clock.
func (Real) Now() time.Time { return time.Now() }

// NewTicker implements Clock.
func (Real) NewTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// Fake is a clock that moves only when Advance is called. Its tickers
// fire, in order of their due times, as Advance passes them; each fire
// is a non-blocking send on a channel of capacity 1, as time.Ticker's.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*fakeTicker
}

type fakeTicker struct {
	c       chan time.Time
	every   time.Duration
	next    time.Time
	stopped bool
}

// NewFake returns a fake clock that reads start.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

// Now implements Clock.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTicker implements Clock. d must be positive.
func (f *Fake) NewTicker(d time.Duration) (<-chan time.Time, func()) {
	if d <= 0 {
		panic("clock: non-positive ticker interval")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTicker{c: make(chan time.Time, 1), every: d, next: f.now.Add(d)}
	f.tickers = append(f.tickers, t)
	return t.c, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		t.stopped = true
	}
}

// Advance moves the clock by d and fires every ticker that came due.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.now.Add(d)
	live := f.tickers[:0]
	for _, t := range f.tickers {
		if !t.stopped {
			live = append(live, t)
		}
	}
	f.tickers = live
	for {
		sort.Slice(live, func(i, j int) bool { return live[i].next.Before(live[j].next) })
		if len(live) == 0 || live[0].next.After(end) {
			break
		}
		t := live[0]
		f.now = t.next
		select {
		case t.c <- t.next:
		default:
		}
		t.next = t.next.Add(t.every)
	}
	f.now = end
}
