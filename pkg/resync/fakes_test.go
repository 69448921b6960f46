package resync

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/clock"
)

// fakeClock is a Clock whose ticks the test sends by hand (tick).
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
	c   chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), c: make(chan time.Time)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTicker(time.Duration) (<-chan time.Time, func()) { return f.c, func() {} }

func (f *fakeClock) advance(d time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	return f.now
}

// memBitmap is a bitmap.Bitmap behind a mutex, adapted with BitmapOf, with
// hooks to check who calls it.
type memBitmap struct {
	Bitmap
	mu  sync.Mutex
	raw *bitmap.Bitmap

	onSetInSync func(off, n int64) // called before the bits are cleared
}

func newMemBitmap(t testing.TB, size int64) *memBitmap {
	raw, err := bitmap.New(size, BlockSize)
	require.NoError(t, err)
	m := &memBitmap{raw: raw}
	m.Bitmap = BitmapOf(size, func(f func(*bitmap.Bitmap)) {
		m.mu.Lock()
		defer m.mu.Unlock()
		f(m.raw)
	})
	return m
}

func (m *memBitmap) SetInSync(off, n int64) {
	if m.onSetInSync != nil {
		m.onSetInSync(off, n)
	}
	m.Bitmap.SetInSync(off, n)
}

// dirty returns the set bits as byte ranges [off, off+n) of whole blocks.
func (m *memBitmap) dirty() [][2]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out [][2]int64
	for i := range m.raw.Bits() {
		if !m.raw.Test(i) {
			continue
		}
		off := int64(i) * BlockSize
		if k := len(out); k > 0 && out[k-1][0]+out[k-1][1] == off {
			out[k-1][1] += BlockSize
		} else {
			out = append(out, [2]int64{off, BlockSize})
		}
	}
	return out
}

// fakeReq is one request the fake transport received.
type fakeReq struct {
	verify  bool
	off, n  int64
	csum    []byte
	digests []byte
	done    func(Result)
	vdone   func([]byte, error)
}

// fakeTransport records requests and completes them when the test says so
// (or at once, inline, with autoComplete). It fails the test when two
// requests in flight overlap.
type fakeTransport struct {
	t  testing.TB
	mu sync.Mutex

	pending []*fakeReq
	all     []fakeReq // every request, in order

	fetchErr     error                 // returned by Fetch/Verify (synchronous failure)
	autoComplete func(r *fakeReq) bool // if it returns true, the request is completed inside the call
	onRequest    func(off, n int64)    // called inside Fetch/Verify
	peer         []byte                // verify: the peer's disk
	digest       func(dst, b []byte) []byte
}

func newFakeTransport(t testing.TB) *fakeTransport { return &fakeTransport{t: t} }

func (f *fakeTransport) add(r *fakeReq) error {
	if f.onRequest != nil {
		f.onRequest(r.off, r.n)
	}
	f.mu.Lock()
	if f.fetchErr != nil {
		f.mu.Unlock()
		return f.fetchErr
	}
	for _, p := range f.pending {
		if r.off < p.off+p.n && p.off < r.off+r.n {
			f.t.Errorf("request [%d, +%d) overlaps [%d, +%d) in flight", r.off, r.n, p.off, p.n)
		}
	}
	f.all = append(f.all, *r)
	auto := f.autoComplete != nil && f.autoComplete(r)
	if !auto {
		// (One completed inline is never pending: the test's goroutine
		// could otherwise take it and complete it a second time.)
		f.pending = append(f.pending, r)
	}
	f.mu.Unlock()
	if auto {
		f.completeReq(r, Result{Wire: r.n})
	}
	return nil
}

func (f *fakeTransport) Fetch(off, n int64, csum []byte, done func(Result)) error {
	return f.add(&fakeReq{off: off, n: n, csum: csum, done: done})
}

func (f *fakeTransport) Verify(off, n int64, digests []byte, done func([]byte, error)) error {
	return f.add(&fakeReq{verify: true, off: off, n: n, digests: digests, vdone: done})
}

// numPending is the number of requests in flight.
func (f *fakeTransport) numPending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

// requests returns every request so far as [off, n] pairs.
func (f *fakeTransport) requests() [][2]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][2]int64, 0, len(f.all))
	for _, r := range f.all {
		out = append(out, [2]int64{r.off, r.n})
	}
	return out
}

// take removes and returns pending request i.
func (f *fakeTransport) take(i int) *fakeReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.pending[i]
	f.pending = slices.Delete(f.pending, i, i+1)
	return r
}

// complete completes pending request i with res (for verify: the mask
// computed against peer, or res.Err).
func (f *fakeTransport) complete(i int, res Result) {
	f.completeReq(f.take(i), res)
}

func (f *fakeTransport) completeReq(r *fakeReq, res Result) {
	f.mu.Lock()
	if i := slices.Index(f.pending, r); i >= 0 {
		f.pending = slices.Delete(f.pending, i, i+1)
	}
	f.mu.Unlock()
	if !r.verify {
		r.done(res)
		return
	}
	if res.Err != nil {
		r.vdone(nil, res.Err)
		return
	}
	r.vdone(f.mismatch(r), nil)
}

// mismatch compares the request's digests with the peer's blocks.
func (f *fakeTransport) mismatch(r *fakeReq) []byte {
	blocks := (r.n + BlockSize - 1) / BlockSize
	mask := make([]byte, (blocks+7)/8)
	var d []byte
	sz := len(f.digest(nil, nil))
	for i := range blocks {
		off := r.off + i*BlockSize
		d = f.digest(d[:0], f.peer[off:min(off+BlockSize, r.off+r.n)])
		if string(d) != string(r.digests[i*int64(sz):(i+1)*int64(sz)]) {
			mask[i/8] |= 1 << (i % 8)
		}
	}
	return mask
}

// completeAll completes every pending request, oldest first, with res.
func (f *fakeTransport) completeAll(res Result) int {
	n := 0
	for f.numPending() > 0 {
		f.complete(0, res)
		n++
	}
	return n
}

// completePending completes the requests pending now, oldest first, with
// res, and not those the engine issues meanwhile (completeAll would take
// a request issued after a completion woke the engine, racing the test).
func (f *fakeTransport) completePending(res Result) int {
	f.mu.Lock()
	reqs := slices.Clone(f.pending)
	f.mu.Unlock()
	for _, r := range reqs {
		f.completeReq(r, res)
	}
	return len(reqs)
}

func sha256Digest(dst, b []byte) []byte {
	s := sha256.Sum256(b)
	return append(dst, s[:]...)
}

// harness runs one engine on a fake clock.
type harness struct {
	t     *testing.T
	clock *fakeClock
	tr    *fakeTransport
	bm    *memBitmap
	e     *Engine
}

// fastFixed is a fixed rate high enough that one tick requests everything
// the in-flight cap allows.
var fastFixed = ControllerConfig{Rate: 100 << 30, PlanAhead: 0}

func newHarness(t *testing.T, cfg EngineConfig) *harness {
	h := &harness{t: t, clock: newFakeClock(), tr: newFakeTransport(t)}
	h.bm = newMemBitmap(t, cfg.Size)
	if cfg.Clock == nil {
		cfg.Clock = h.clock
	}
	h.t.Cleanup(func() {
		if h.e != nil {
			go func() {
				for h.tr.numPending() > 0 || !isClosed(h.e.Done()) {
					h.tr.completeAll(Result{Err: fmt.Errorf("test over")})
					time.Sleep(time.Millisecond)
				}
			}()
			h.e.Close()
		}
	})
	return h
}

// startResync starts a resync engine and waits for its first tick.
func (h *harness) startResync(cfg EngineConfig) {
	if cfg.Clock == nil {
		cfg.Clock = h.clock
	}
	h.e = NewResync(cfg, h.bm, h.tr)
	h.e.Start(h.t.Context())
	h.e.sync()
}

// tick advances the fake clock by one tick and waits until the engine has
// handled it.
func (h *harness) tick() {
	now := h.clock.advance(clock.Tick)
	select {
	case h.clock.c <- now:
	case <-h.e.Done():
	}
	h.e.sync()
}

// mark sets the bits of [off, off+n).
func (h *harness) mark(off, n int64) { h.bm.MarkOutOfSync(off, n) }

// waitDone waits (a real-time safety net only) for the engine to finish.
func (h *harness) waitDone() {
	select {
	case <-h.e.Done():
	case <-time.After(10 * time.Second):
		h.t.Fatal("engine did not finish")
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
