package resync

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/status"
)

// Errors. A request's failure is wrapped (errors.Is finds the transport's
// or the disk's error); ErrClosed and ErrConfig are returned as they are or
// wrapped with details.
var (
	// ErrClosed: Close was called before the engine finished.
	ErrClosed = errors.New("resync: closed before finishing")
	// ErrConfig: the EngineConfig cannot work (verify without a digest,
	// checksums without ReadLocal, a negative size, a resync without a
	// bitmap).
	ErrConfig = errors.New("resync: invalid configuration")
	// ErrContract: a Bitmap or Transport broke its interface's contract (a
	// run before the cursor or past the end, a mismatch mask too short).
	ErrContract = errors.New("resync: interface contract broken")
)

// Engine defaults for EngineConfig fields left 0.
const (
	// DefaultMaxRequest is DRBD's largest resync request (DRBD_MAX_BIO_SIZE).
	DefaultMaxRequest = 1 << 20
	// DefaultMaxInFlight bounds the bytes requested and not yet arrived
	// (DRBD: max-buffers/2). Four times Defaults().FillTarget, so the
	// controller, not this cap, decides the rate; the cap bounds memory.
	DefaultMaxInFlight = 32 << 20
)

// Mode is what an Engine does.
type Mode int

// Modes.
const (
	ModeResync Mode = iota // sync target: fetch the out-of-sync runs (SyncTarget)
	ModeVerify             // online verify: compare digests of every block (VerifyS)
)

func (m Mode) String() string {
	switch m {
	case ModeResync:
		return "resync"
	case ModeVerify:
		return "verify"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	Size        int64 // device bytes
	MaxRequest  int64 // largest request (the link's max payload); 0 = DefaultMaxRequest; rounded down to BlockSize
	MaxInFlight int64 // bytes in flight cap (DRBD: max-buffers/2); 0 = DefaultMaxInFlight; at least MaxRequest
	Controller  ControllerConfig
	// Digest, if non-nil, makes the engine checksum-based (csums-alg) for
	// Fetch, or is the verify algorithm for Verify mode: it appends the
	// digest of b to dst. ReadLocal reads the local disk for it.
	Digest    func(dst, b []byte) []byte
	ReadLocal func(p []byte, off int64) error
	// Lock, if non-nil, is taken around each request (from before reading
	// and sending until after its bits are updated): a Primary sync target
	// passes its application-write range lock, so that a write that fails
	// to replicate and marks its blocks cannot be undone by a resync
	// completion clearing them.
	Lock func(off, n int64) (unlock func())
	// AppIO returns the monotonically increasing bytes of application I/O
	// on this node's disk (for c-min-rate); nil = none, no throttle.
	AppIO func() int64
	// Clock is the tick source; nil = clock.Real.
	Clock clock.Clock
}

// EngineStats is a snapshot of an engine's counters.
type EngineStats struct {
	Mode      Mode
	Total     int64 // bytes to do at the start: out of sync (resync), Size − start (verify)
	Left      int64 // resync: bytes out of sync now (the bitmap is live); verify: bytes not yet verified
	Requested int64 // bytes requested (Fetch or Verify)
	Arrived   int64 // bytes of requests that completed without error
	InFlight  int64 // bytes requested and not completed
	Wire      int64 // sum of Result.Wire (resync)
	SameCsum  int64 // 4 KiB blocks whose checksum matched, not transferred (rs-same-csum)
	Mismatch  int64 // verify: 4 KiB blocks found different and marked out of sync
	Passes    int   // resync: passes over the bitmap started so far
	// Paused is the time spent paused so far (DRBD's "Resync done (total …;
	// paused …; … K/sec)"); PausedNow reports pause-sync in effect.
	Paused    time.Duration
	PausedNow bool
	Throttled bool // the current tick is held back for application I/O (c-min-rate)
	// ThrottledTicks counts the ticks held back for application I/O.
	ThrottledTicks int64
	Want           int64 // the controller's target rate, bytes/s (c_sync_rate, "want:")
	// Position: every byte below it is done in the current pass (a failed
	// request holds it back). For verify it is DRBD's ov_position, where a
	// later verify can start.
	Position int64
}

// Engine is the sync-target side scheduler (DRBD's make_resync_request) or
// the online-verify scheduler (VerifyS). See the package doc for its rules.
type Engine struct {
	cfg   EngineConfig
	mode  Mode
	bm    Bitmap
	tr    Transport
	clock clock.Clock

	wake   chan struct{}      // capacity 1: a request completed
	syncCh chan chan struct{} // tests: service, then close the reply
	done   chan struct{}

	// Owned by the engine goroutine.
	lastAppIO int64
	buf       []byte

	mu             sync.Mutex
	started        bool
	closed         bool
	cancel         context.CancelCauseFunc
	err            error // why it stops early; no new request once set
	finished       bool
	paused         bool
	throttled      bool
	ctrl           *Controller
	progress       *Progress
	credit         int64           // bytes this tick may still request; negative: debt from rounding up to a block
	tickIssued     int64           // bytes requested since the last tick (bounded by c-max-rate in fill mode)
	cursor         int64           // next offset to look at in this pass
	inflight       map[int64]int64 // offset → length of the requests in flight
	inflightBytes  int64
	failedAt       int64 // lowest offset of a failed request (Position stays below it); MaxInt64 if none
	arrivedPending int64 // arrived since the last tick (sect_in)
	verified       int64 // verify: bytes compared
	stats          EngineStats
}

// NewResync returns an engine that brings the local disk in sync (sync
// target): it walks bm from 0 and fetches every out-of-sync run, each pass
// until no bit is set and nothing is in flight.
func NewResync(cfg EngineConfig, bm Bitmap, tr Transport) *Engine {
	e := newEngine(cfg, ModeResync, bm, tr)
	if e.err == nil && bm == nil {
		e.err = fmt.Errorf("%w: resync without a bitmap", ErrConfig)
	}
	if e.err == nil && cfg.Digest != nil && cfg.ReadLocal == nil {
		e.err = fmt.Errorf("%w: checksum-based resync needs ReadLocal", ErrConfig)
	}
	var total int64
	if bm != nil {
		total = bm.OutOfSyncBytes()
	}
	e.stats.Total = total
	e.stats.Passes = 1
	e.progress = NewProgress(e.clock.Now(), total)
	return e
}

// NewVerify returns an online-verify engine: it compares every block from
// start (rounded down to BlockSize) to Size with the peer, in requests of
// MaxRequest in order, and marks the blocks that differ in bm (which may be
// nil: count only). It does not resync them (DRBD: disconnect and connect).
func NewVerify(cfg EngineConfig, tr Transport, bm Bitmap, start int64) *Engine {
	e := newEngine(cfg, ModeVerify, bm, tr)
	if e.err == nil && (cfg.Digest == nil || cfg.ReadLocal == nil) {
		e.err = fmt.Errorf("%w: verify needs Digest and ReadLocal", ErrConfig)
	}
	start = min(max(start, 0)/BlockSize*BlockSize, max(e.cfg.Size, 0))
	e.cursor = start
	e.stats.Total = max(e.cfg.Size-start, 0)
	e.stats.Passes = 1
	e.progress = NewProgress(e.clock.Now(), e.stats.Total)
	return e
}

func newEngine(cfg EngineConfig, mode Mode, bm Bitmap, tr Transport) *Engine {
	if cfg.MaxRequest <= 0 {
		cfg.MaxRequest = DefaultMaxRequest
	}
	cfg.MaxRequest = max(cfg.MaxRequest/BlockSize*BlockSize, BlockSize)
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	cfg.MaxInFlight = max(cfg.MaxInFlight, cfg.MaxRequest)
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	e := &Engine{
		cfg:      cfg,
		mode:     mode,
		bm:       bm,
		tr:       tr,
		clock:    cfg.Clock,
		wake:     make(chan struct{}, 1),
		syncCh:   make(chan chan struct{}),
		done:     make(chan struct{}),
		ctrl:     NewController(cfg.Controller),
		inflight: make(map[int64]int64),
		failedAt: math.MaxInt64,
	}
	e.stats.Mode = mode
	switch {
	case cfg.Size < 0:
		e.err = fmt.Errorf("%w: negative size %d", ErrConfig, cfg.Size)
	case tr == nil:
		e.err = fmt.Errorf("%w: no transport", ErrConfig)
	}
	return e
}

// Start runs the engine on its own goroutine until it finishes, fails, ctx
// is done or Close is called. Starting twice, or after Close, does nothing.
func (e *Engine) Start(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started || e.closed {
		return
	}
	e.started = true
	ctx, e.cancel = context.WithCancelCause(ctx)
	go e.run(ctx)
}

// Pause stops new requests (pause-sync); those in flight complete. The
// paused time counts in no speed.
func (e *Engine) Pause() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.paused {
		return
	}
	e.paused = true
	e.credit = min(e.credit, 0)
	e.progress.Pause(e.clock.Now())
}

// Resume lets the next tick request again (resume-sync). The controller
// starts over from its start plan (Controller.Reset), and what arrived
// during the pause is not counted as this tick's arrivals, or the first
// tick would request all that drained during the pause at once.
func (e *Engine) Resume() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.paused {
		return
	}
	e.paused = false
	e.progress.Resume(e.clock.Now())
	e.ctrl.Reset()
	e.arrivedPending = 0
}

// Done is closed when the engine's goroutine has stopped: it finished,
// failed or was closed, and every request's callback has returned.
func (e *Engine) Done() <-chan struct{} { return e.done }

// Err is why the engine stopped early, nil when it finished (or is still
// running): a request's error (wrapped), ErrClosed, the context's cause
// (wrapped), or ErrConfig/ErrContract. Meaningful once Done is closed.
func (e *Engine) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// Close stops the engine and waits for its goroutine, which waits for
// every outstanding request's callback. Close on an engine that was never
// started just marks it closed. Safe to call more than once.
func (e *Engine) Close() {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		if e.started {
			e.cancel(ErrClosed)
		} else {
			if e.err == nil {
				e.err = ErrClosed
			}
			close(e.done)
		}
	}
	e.mu.Unlock()
	<-e.done
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() EngineStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Left = e.leftLocked()
	s.InFlight = e.inflightBytes
	s.Paused = e.progress.PausedFor(e.clock.Now())
	s.PausedNow = e.paused
	s.Throttled = e.throttled
	s.Want = e.ctrl.Rate()
	s.Position = min(e.cursor, e.failedAt)
	for off := range e.inflight {
		s.Position = min(s.Position, off)
	}
	return s
}

// Progress returns the progress lines' data at now (see Progress.Snapshot),
// with the controller's rate as "want:".
func (e *Engine) Progress(now time.Time) status.SyncProgress {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.progress.Snapshot(now, e.leftLocked(), e.ctrl.Rate(), e.mode == ModeVerify)
}

func (e *Engine) leftLocked() int64 {
	if e.mode == ModeVerify {
		return e.stats.Total - e.verified
	}
	if e.bm == nil {
		return 0
	}
	return e.bm.OutOfSyncBytes()
}

// run is the engine's goroutine.
func (e *Engine) run(ctx context.Context) {
	defer close(e.done)
	if e.cfg.AppIO != nil {
		e.lastAppIO = e.cfg.AppIO()
	}
	tickC, stop := e.clock.NewTicker(clock.Tick)
	defer stop()
	ctxDone := ctx.Done()
	e.onTick() // DRBD arms the resync timer for "now"
	for !e.exited() {
		select {
		case <-ctxDone:
			ctxDone = nil
			cause := context.Cause(ctx)
			if !errors.Is(cause, ErrClosed) {
				cause = fmt.Errorf("resync: %w", cause)
			}
			e.mu.Lock()
			e.failLocked(cause)
			e.mu.Unlock()
		case <-tickC:
			e.onTick()
		case <-e.wake:
			e.service()
		case reply := <-e.syncCh:
			e.service()
			close(reply)
		}
	}
}

// exited reports whether the goroutine may stop: finished, or stopping with
// nothing in flight.
func (e *Engine) exited() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.finished || (e.err != nil && len(e.inflight) == 0)
}

// failLocked records the first reason to stop; a finished engine keeps nil.
func (e *Engine) failLocked(err error) {
	if e.err == nil && !e.finished {
		e.err = err
	}
}

// onTick runs the controller and the throttle, grants this tick's budget
// and issues what it allows.
func (e *Engine) onTick() {
	now := e.clock.Now()
	var appIO int64
	if e.cfg.AppIO != nil {
		cur := e.cfg.AppIO()
		appIO, e.lastAppIO = cur-e.lastAppIO, cur
	}
	e.mu.Lock()
	if e.err != nil || e.finished || e.paused {
		e.mu.Unlock()
		return
	}
	arrived := e.arrivedPending
	e.arrivedPending = 0
	budget := e.ctrl.Tick(arrived, e.inflightBytes)
	left := e.leftLocked()
	e.progress.Update(now, left)
	e.throttled = e.cfg.AppIO != nil && e.ctrl.Throttle(appIO, e.progress.ShortTermRate(now, left))
	// Unused budget does not carry over (a tick with nothing to request must
	// not save up a burst); the debt of rounding a request up does.
	e.credit = min(e.credit, 0)
	e.tickIssued = 0
	if e.throttled {
		e.stats.ThrottledTicks++
	} else {
		e.credit += budget
	}
	e.mu.Unlock()
	e.service()
}

// service issues what the credit and the in-flight cap allow, and at the
// end of a pass either finishes or starts the next one. It runs on ticks
// and after completions (a completion frees in-flight room for the rest of
// this tick's budget).
func (e *Engine) service() {
	for {
		e.issue()
		e.mu.Lock()
		again := e.endOfPassLocked()
		e.mu.Unlock()
		if !again {
			return
		}
	}
}

// endOfPassLocked handles a pass that reached the device's end with nothing
// in flight: verify is finished; a resync finishes when the bitmap is clean
// and otherwise starts over from 0 (reporting true). Waiting for the
// in-flight requests to drain before a new pass is what keeps requests of
// two passes from overlapping.
func (e *Engine) endOfPassLocked() bool {
	if e.err != nil || e.finished || e.cursor < e.cfg.Size || len(e.inflight) > 0 {
		return false
	}
	if e.mode == ModeResync {
		if _, _, ok := e.bm.NextDirty(0, BlockSize); ok {
			e.cursor = 0
			e.stats.Passes++
			return true
		}
	}
	e.finished = true
	return false
}

// issue sends requests while nextRequestLocked grants them.
func (e *Engine) issue() {
	for {
		e.mu.Lock()
		off, n, ok := e.nextRequestLocked()
		e.mu.Unlock()
		if !ok {
			return
		}
		e.send(off, n)
	}
}

// nextRequestLocked picks the next request, registers it in flight and
// charges it to the credit. A request is at most MaxRequest, at most the
// credit rounded up to a block, and fits under MaxInFlight.
func (e *Engine) nextRequestLocked() (off, n int64, ok bool) {
	if e.err != nil || e.finished || e.paused || e.throttled || e.cursor >= e.cfg.Size {
		return 0, 0, false
	}
	var limit int64
	switch fill := e.fillRoomLocked(); {
	case e.credit > 0:
		limit = min(e.cfg.MaxRequest, (e.credit+BlockSize-1)/BlockSize*BlockSize)
	case fill > 0:
		limit = min(e.cfg.MaxRequest, (fill+BlockSize-1)/BlockSize*BlockSize)
	default:
		return 0, 0, false
	}
	avail := (e.cfg.MaxInFlight - e.inflightBytes) / BlockSize * BlockSize
	if avail <= 0 {
		return 0, 0, false
	}
	limit = min(limit, avail)
	switch e.mode {
	case ModeResync:
		off, n, ok = e.bm.NextDirty(e.cursor, limit)
		if !ok {
			e.cursor = e.cfg.Size
			return 0, 0, false
		}
		if off < e.cursor || n <= 0 || n > limit || off+n > e.cfg.Size {
			e.failLocked(fmt.Errorf("%w: NextDirty(%d, %d) on a %d-byte device returned [%d, +%d)",
				ErrContract, e.cursor, limit, e.cfg.Size, off, n))
			return 0, 0, false
		}
	case ModeVerify:
		off, n = e.cursor, min(limit, e.cfg.Size-e.cursor)
	}
	e.cursor = off + n
	if e.credit > 0 {
		e.credit -= n
	}
	e.tickIssued += n
	e.inflight[off] = n
	e.inflightBytes += n
	e.stats.Requested += n
	return off, n, true
}

// fillRoomLocked is how much more the engine may request now, between
// ticks, to keep c-fill-target bytes in flight (the dynamic controller
// only; 0 otherwise). DRBD samples the fill once per tick and grows its
// per-tick request by at most fill-target/plan-ahead per tick, which on a
// link that answers in a millisecond caps the resync at ten requests'
// worth per second and ramps up over many seconds. twinblock keeps the
// fill target topped up as completions arrive, within c-max-rate per
// tick; the controller's per-tick amount remains the floor, and the
// c-min-rate throttle still stops everything.
func (e *Engine) fillRoomLocked() int64 {
	cc := e.ctrl.Config()
	if e.mode != ModeResync || cc.PlanAhead <= 0 || cc.FillTarget <= 0 {
		return 0
	}
	perTick := cc.MaxRate / int64(time.Second/clock.Tick)
	return max(0, min(cc.FillTarget-e.inflightBytes, perTick-e.tickIssued))
}

// request is one request in flight.
type request struct {
	e      *Engine
	off, n int64
	unlock func()
	called atomic.Bool
}

// send takes the lock, computes the digests and hands the request to the
// transport. It runs on the engine goroutine without e.mu.
func (e *Engine) send(off, n int64) {
	r := &request{e: e, off: off, n: n}
	if e.cfg.Lock != nil {
		r.unlock = e.cfg.Lock(off, n)
	}
	var err error
	switch e.mode {
	case ModeResync:
		var csum []byte
		if e.cfg.Digest != nil {
			b, rerr := e.readLocal(off, n)
			if rerr != nil {
				r.finish(rerr, nil)
				return
			}
			csum = e.cfg.Digest(nil, b)
		}
		if err = e.tr.Fetch(off, n, csum, r.fetched); err != nil {
			err = fmt.Errorf("resync: fetch [%d, +%d): %w", off, n, err)
		}
	case ModeVerify:
		b, rerr := e.readLocal(off, n)
		if rerr != nil {
			r.finish(rerr, nil)
			return
		}
		var digests []byte
		for i := int64(0); i < n; i += BlockSize {
			digests = e.cfg.Digest(digests, b[i:min(i+BlockSize, n)])
		}
		if err = e.tr.Verify(off, n, digests, r.verified); err != nil {
			err = fmt.Errorf("resync: verify [%d, +%d): %w", off, n, err)
		}
	}
	if err != nil {
		r.once()
		r.finish(err, nil)
	}
}

// readLocal reads [off, off+n) of the local disk into the engine's buffer.
func (e *Engine) readLocal(off, n int64) ([]byte, error) {
	if int64(len(e.buf)) < n {
		e.buf = make([]byte, e.cfg.MaxRequest)
	}
	b := e.buf[:n]
	if err := e.cfg.ReadLocal(b, off); err != nil {
		return nil, fmt.Errorf("resync: read local [%d, +%d): %w", off, n, err)
	}
	return b, nil
}

// once panics on the second completion of a request: the transport broke
// its contract, and counting the request twice would corrupt the in-flight
// accounting.
func (r *request) once() {
	if r.called.Swap(true) {
		panic(fmt.Sprintf("resync: request [%d, +%d) completed twice", r.off, r.n))
	}
}

// fetched is the Fetch callback.
func (r *request) fetched(res Result) {
	r.once()
	e := r.e
	var err error
	if res.Err != nil {
		err = fmt.Errorf("resync: fetch [%d, +%d): %w", r.off, r.n, res.Err)
	}
	r.finish(err, func(ok bool) {
		e.stats.Wire += res.Wire
		if !ok {
			return
		}
		e.bm.SetInSync(r.off, r.n)
		e.arrivedPending += r.n
		e.stats.Arrived += r.n
		if res.InSync {
			e.stats.SameCsum += (r.n + BlockSize - 1) / BlockSize
		}
	})
}

// verified is the Verify callback.
func (r *request) verified(mismatch []byte, err error) {
	r.once()
	e := r.e
	blocks := (r.n + BlockSize - 1) / BlockSize
	switch {
	case err != nil:
		err = fmt.Errorf("resync: verify [%d, +%d): %w", r.off, r.n, err)
	case int64(len(mismatch))*8 < blocks:
		err = fmt.Errorf("%w: verify [%d, +%d) answered %d mask bytes for %d blocks",
			ErrContract, r.off, r.n, len(mismatch), blocks)
	}
	r.finish(err, func(ok bool) {
		if !ok {
			return
		}
		for i := range blocks {
			if mismatch[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			e.stats.Mismatch++
			if e.bm != nil {
				off := r.off + i*BlockSize
				e.bm.MarkOutOfSync(off, min(BlockSize, r.off+r.n-off))
			}
		}
		e.arrivedPending += r.n
		e.stats.Arrived += r.n
		e.verified += r.n
	})
}

// finish retires the request: under e.mu it leaves the in-flight set,
// records err if any, and runs apply (ok: err is nil); then the range lock
// is released and the engine woken. apply runs before the unlock, so the
// bits change while the range is still locked.
func (r *request) finish(err error, apply func(ok bool)) {
	e := r.e
	e.mu.Lock()
	delete(e.inflight, r.off)
	e.inflightBytes -= r.n
	if err != nil {
		e.failLocked(err)
		e.failedAt = min(e.failedAt, r.off)
	}
	if apply != nil {
		apply(err == nil)
	}
	e.mu.Unlock()
	if r.unlock != nil {
		r.unlock()
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// sync makes the engine goroutine service once and waits for it (tests:
// after a completion, the follow-up requests and the end-of-pass decision
// are done when sync returns). It returns at once if the goroutine stopped.
func (e *Engine) sync() {
	reply := make(chan struct{})
	select {
	case e.syncCh <- reply:
		<-reply
	case <-e.done:
	}
}
