package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/pkg/resync"
	"github.com/twinblock/twinblock/pkg/status"
	"github.com/twinblock/twinblock/replication"
)

// checkpointInterval is how often a running resync makes its progress
// durable (the data flushed, then the cleared bitmap bits written): an
// interrupted resync repeats at most this much work.
const checkpointInterval = time.Second

// syncRunner runs the resync and online verify the state machine's
// connection state asks for. The Ready loop calls Reconcile after every
// Ready, Stop when the disk goes or the resource stops, Finished when an
// engine reports its end (evEngineDone), and Status for the snapshot.
type syncRunner interface {
	// Reconcile starts, pauses, resumes or stops the machinery to
	// match want.
	Reconcile(want syncWant)
	// Stop ends it: what is left stays in the bitmap; what the target
	// wrote and flushed is committed.
	Stop()
	// Finished takes an engine's end: the event to step (nil: none, or
	// not the running engine), or a disk error (the commit failed).
	Finished(e evEngineDone) (fsm.Event, error)
	// Status fills the snapshot's progress of a running resync or verify.
	Status(s *status.Resource)
}

// syncWant is what the state machine and the resource hold now.
type syncWant struct {
	conn     fsm.ConnState // the connection state, PausedSync* folded into Sync*
	paused   bool
	link     *replication.Link
	md       *meta.Meta
	data     disk.Disk
	upToDate bool // the local disk is UpToDate (after-resync-target)
}

// wantOf is the syncWant for state st.
func wantOf(st fsm.State, link *replication.Link, md *meta.Meta, data disk.Disk) syncWant {
	w := syncWant{conn: st.Conn, link: link, md: md, data: data, upToDate: st.Disk == fsm.UpToDate}
	switch st.Conn {
	case fsm.PausedSyncS:
		w.conn, w.paused = fsm.SyncSource, true
	case fsm.PausedSyncT:
		w.conn, w.paused = fsm.SyncTarget, true
	}
	return w
}

// engineSyncer is the real syncRunner: pkg/resync's engines over the
// peer link, with durable checkpoints.
type engineSyncer struct {
	cfg   *config.Resource
	clock clock.Clock
	log   *slog.Logger
	ctx   func() context.Context // the resource's (set by Start)
	post  func(any)              // to run: evEngineDone
	// diskError reports an I/O error on the disk of an attachment
	// (Resource.diskError).
	diskError func(*meta.Meta, error)
	await     func(func()) // waits while serving fences
	lock      func(off, n int64) func()
	appIO     func() int64 // this node's own disk I/O, for c-min-rate
	handler   func(name string)
	found     *atomic.Uint64 // blocks online verify found out of sync
	curMD     func() *meta.Meta

	run  *syncRun
	want syncWant // the last Reconcile's
}

// syncRun is the resync or verify in progress on this node. The sync
// target and the verify source run an engine (they pull); the sync
// source and verify target only keep the progress marks.
type syncRun struct {
	conn     fsm.ConnState // the state it was started for (SyncSource, SyncTarget, VerifyS, VerifyT)
	link     *replication.Link
	engine   *resync.Engine
	bm       *durableBitmap // the target's view of the bitmap (nil otherwise)
	progress *resync.Progress
	total    int64
	started  time.Time
	paused   bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// evEngineDone: a resync or verify engine stopped.
type evEngineDone struct {
	engine *resync.Engine
	err    error
}

// Reconcile implements syncRunner.
func (y *engineSyncer) Reconcile(w syncWant) {
	y.want = w
	if s := y.run; s != nil && (s.conn != w.conn || s.link != w.link || w.md == nil) {
		y.Stop()
	}
	switch w.conn {
	case fsm.SyncSource, fsm.SyncTarget, fsm.VerifyS, fsm.VerifyT:
	default:
		return
	}
	if w.link == nil || w.md == nil {
		return
	}
	if y.run == nil {
		y.start(w)
	}
	if s := y.run; s != nil && s.paused != w.paused {
		s.paused = w.paused
		now := time.Now()
		if w.paused {
			s.progress.Pause(now)
			if s.engine != nil {
				s.engine.Pause()
			}
		} else {
			s.progress.Resume(now)
			if s.engine != nil {
				s.engine.Resume()
			}
		}
	}
}

func (y *engineSyncer) start(w syncWant) {
	gran := int64(w.md.Layout().Granularity)
	size := agreedSize(w)
	s := &syncRun{conn: w.conn, link: w.link, started: time.Now()}
	ctx, cancel := context.WithCancel(y.ctx())
	s.cancel = cancel
	switch w.conn {
	case fsm.SyncTarget:
		s.bm = newDurableBitmap(w.md, w.data, size)
		s.total = s.bm.OutOfSyncBytes()
		s.engine = resync.NewResync(y.engineConfig(w, false), s.bm, linkTransport{w.link})
		y.log.Info("Began resync as SyncTarget", "will sync KB", s.total>>10)
		y.handler("before-resync-target")
	case fsm.SyncSource:
		s.total = int64(w.md.OutOfSync()) * gran
		y.log.Info("Began resync as SyncSource", "will sync KB", s.total>>10)
	case fsm.VerifyS:
		s.total = size
		s.engine = resync.NewVerify(y.engineConfig(w, true), linkTransport{w.link}, resync.BitmapOf(size, w.md.WithBitmap), 0)
	case fsm.VerifyT:
		// The peer's requests may have arrived before this state did:
		// found counts from the last report on.
		s.total = size
	}
	s.progress = resync.NewProgress(s.started, s.total)
	y.run = s
	if s.engine != nil {
		e := s.engine
		e.Start(ctx)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			select {
			case <-e.Done():
				y.post(evEngineDone{engine: e, err: e.Err()})
			case <-ctx.Done():
			}
		}()
	}
	if s.bm != nil || w.conn == fsm.SyncSource {
		s.wg.Add(1)
		md := y.curMD()
		go func() {
			defer s.wg.Done()
			t := time.NewTicker(checkpointInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := y.checkpoint(s); err != nil {
						y.log.Error("resync checkpoint failed", "err", err)
						y.diskError(md, err)
						return
					}
				}
			}
		}()
	}
}

// checkpoint makes the resync's progress durable: on the target, the
// data written so far is flushed before the bits it clears are written
// (a bit must never say "in sync" about data a crash can lose); on the
// source, the bits the target's acks cleared are written.
func (y *engineSyncer) checkpoint(s *syncRun) error {
	if s.bm != nil {
		return s.bm.commit()
	}
	if m := y.curMD(); m != nil {
		return m.SyncBitmap()
	}
	return nil
}

// Stop implements syncRunner (the state left the sync states, or the
// link or disk changed, or the resource stops).
func (y *engineSyncer) Stop() {
	s := y.run
	if s == nil {
		return
	}
	y.run = nil
	if s.engine != nil {
		s.engine.Close()
	}
	s.cancel()
	y.await(s.wg.Wait)
	md := y.want.md
	if s.bm != nil && md != nil {
		if err := s.bm.commit(); err != nil {
			y.log.Error("resync checkpoint failed", "err", err)
		}
	} else if md != nil {
		if err := md.SyncBitmap(); err != nil {
			y.log.Error("bitmap write failed", "err", err)
		}
	}
	switch s.conn {
	case fsm.VerifyT:
		y.verifyReport()
	case fsm.SyncTarget:
		if y.want.upToDate {
			y.handler("after-resync-target")
		}
	}
}

// Finished implements syncRunner: a target's resync is made durable and
// reported done; a verify reports what it found.
func (y *engineSyncer) Finished(e evEngineDone) (fsm.Event, error) {
	s := y.run
	if s == nil || s.engine != e.engine {
		return nil, nil
	}
	if e.err != nil {
		y.log.Warn("resync stopped", "err", e.err)
		return fsm.ResyncFailed{Err: e.err}, nil
	}
	switch s.conn {
	case fsm.SyncTarget:
		if err := s.bm.commit(); err != nil {
			return nil, err
		}
		st := e.engine.Stats()
		dt := time.Since(s.started).Round(time.Second)
		y.log.Info(fmt.Sprintf("Resync done (total %s; paused %s; %d K/sec)", dt, st.Paused.Round(time.Second), kibPerSec(s.total, time.Since(s.started)-st.Paused)),
			"same-csum-blocks", st.SameCsum, "wire-bytes", st.Wire)
		return fsm.ResyncDone{}, nil
	case fsm.VerifyS:
		y.found.Store(uint64(e.engine.Stats().Mismatch))
		y.verifyReport()
		return fsm.VerifyDone{}, nil
	}
	return nil, nil
}

// verifyReport logs what online verify found and runs the out-of-sync
// handler if it found something (DRBD: "Online verify found N 4k block
// out of sync!"). The blocks are marked; a disconnect/connect resyncs
// them.
func (y *engineSyncer) verifyReport() {
	n := y.found.Swap(0)
	y.log.Info(fmt.Sprintf("Online verify done; found %d 4k block out of sync!", n))
	if md := y.want.md; md != nil {
		if err := md.SyncBitmap(); err != nil {
			y.log.Error("bitmap write failed", "err", err)
		}
	}
	if n > 0 {
		y.handler("out-of-sync")
	}
}

func kibPerSec(bytes int64, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(bytes>>10) / d.Seconds())
}

// agreedSize is the data both nodes hold: the smaller data area, as the
// export (they differ between the two resizes of a grow).
func agreedSize(w syncWant) int64 {
	size := w.md.Layout().DataSize
	if ps := int64(w.link.PeerDataSize()); ps > 0 && ps < size {
		size = ps
	}
	return size
}

// engineConfig is the resync engine's configuration from the resource's
// disk and net sections; knobs the file leaves unset take twinblock's
// defaults (resync.Defaults), not DRBD's.
func (y *engineSyncer) engineConfig(w syncWant, verify bool) resync.EngineConfig {
	d := y.cfg.Disk
	l := w.link
	c := resync.Defaults()
	if d.Has("resync-rate") {
		c.Rate = d.Size("resync-rate")
	}
	if d.Has("c-plan-ahead") {
		c.PlanAhead = int(d.Int("c-plan-ahead"))
	}
	if d.Has("c-fill-target") {
		c.FillTarget = d.Size("c-fill-target")
	}
	if d.Has("c-delay-target") {
		c.DelayTarget = int(d.Int("c-delay-target"))
	}
	if d.Has("c-max-rate") {
		c.MaxRate = d.Size("c-max-rate")
	}
	if d.Has("c-min-rate") {
		c.MinRate = d.Size("c-min-rate")
	}
	cfg := resync.EngineConfig{
		Size:       agreedSize(w),
		MaxRequest: int64(l.MaxPayload()),
		Controller: c,
		Clock:      y.clock,
		ReadLocal:  w.data.ReadAt,
		Lock:       y.lock,
		// c-min-rate's "foreign I/O": this node's own clients (a
		// Primary target) and the peer's replicated writes (the usual
		// case: the Primary is the source and writes through us).
		AppIO: func() int64 { return y.appIO() + int64(l.Stats().RecvBytes) },
	}
	alg := y.cfg.Net.String("csums-alg")
	if verify {
		alg = y.cfg.Net.String("verify-alg")
	}
	if alg != "" {
		if f, _, err := replication.Digest(alg); err == nil {
			cfg.Digest = f
		} else {
			y.log.Warn("digest unavailable; resync without checksums", "alg", alg, "err", err)
		}
	}
	return cfg
}

// Status implements syncRunner.
func (y *engineSyncer) Status(s *status.Resource) {
	sr := y.run
	md := y.want.md
	if sr == nil || md == nil {
		return
	}
	now := time.Now()
	var left, want int64
	switch sr.conn {
	case fsm.SyncTarget:
		left = sr.bm.OutOfSyncBytes()
	case fsm.SyncSource:
		left = int64(md.OutOfSync()) * int64(md.Layout().Granularity)
	case fsm.VerifyS:
		left = sr.total - sr.engine.Stats().Position
	case fsm.VerifyT:
		left = 0 // the verify target does not know the source's position
	}
	if sr.engine != nil {
		es := sr.engine.Stats()
		want, s.RSInFlight = es.Want, es.InFlight
	}
	left = max(left, 0)
	sr.progress.Update(now, left)
	p := sr.progress.Snapshot(now, left, want, sr.conn == fsm.VerifyS || sr.conn == fsm.VerifyT)
	s.Sync = &p
}

// linkTransport is the resync engine's view of the peer link.
type linkTransport struct{ l *replication.Link }

func (t linkTransport) Fetch(off, n int64, csum []byte, done func(resync.Result)) error {
	return t.l.Resync(off, n, csum, func(res replication.ResyncResult) {
		done(resync.Result{InSync: res.InSync, Wire: res.Wire, Err: res.Err})
	})
}

func (t linkTransport) Verify(off, n int64, digests []byte, done func([]byte, error)) error {
	return t.l.Verify(off, n, digests, func(res replication.VerifyResult) {
		done(res.Mismatch, res.Err)
	})
}

// durableBitmap is the sync target's bitmap: a range the engine fetched
// is "in sync" for the engine at once, but its bits are cleared in the
// metadata only at the next commit, after the data was flushed. So the
// bitmap on disk never claims a block whose resync write a crash could
// still lose.
type durableBitmap struct {
	md   *meta.Meta
	data disk.Disk
	size int64

	mu      sync.Mutex
	synced  *bitmap.Bitmap // fetched, not yet committed
	pending []span
}

func newDurableBitmap(md *meta.Meta, data disk.Disk, size int64) *durableBitmap {
	b, err := bitmap.New(size, md.Layout().Granularity)
	if err != nil {
		panic(fmt.Sprintf("node: bitmap of %d bytes: %v", size, err))
	}
	return &durableBitmap{md: md, data: data, size: size, synced: b}
}

func (b *durableBitmap) NextDirty(off, max int64) (int64, int64, bool) {
	var runOff, runLen int64
	var ok bool
	b.mu.Lock()
	defer b.mu.Unlock()
	b.md.WithBitmap(func(bm *bitmap.Bitmap) {
		runOff, runLen, ok = bm.NextRun(off, max, b.size, b.synced)
	})
	return runOff, runLen, ok
}

func (b *durableBitmap) SetInSync(off, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.synced.MarkRange(off, n)
	b.pending = append(b.pending, span{off, off + n})
}

func (b *durableBitmap) MarkOutOfSync(off, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// A fetched range marked again must not be cleared by the next
	// commit: drop the pending clears it overlaps (their blocks are
	// fetched again, which costs a little, never data).
	kept := b.pending[:0]
	for _, s := range b.pending {
		if s.off < off+n && off < s.end {
			if first, last, ok := b.synced.BlocksOf(s.off, s.end-s.off); ok {
				b.synced.Clear(first, last)
			}
			continue
		}
		kept = append(kept, s)
	}
	b.pending = kept
	b.md.MarkOutOfSync(off, n)
}

func (b *durableBitmap) OutOfSyncBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	g := int64(b.md.Layout().Granularity)
	return (int64(b.md.OutOfSync()) - int64(b.synced.Count())) * g
}

// commit flushes the data, then clears the bits of what was fetched
// before the flush and writes the bitmap.
func (b *durableBitmap) commit() error {
	b.mu.Lock()
	pending := b.pending
	b.pending = nil
	b.mu.Unlock()
	if len(pending) == 0 {
		return b.md.SyncBitmap()
	}
	if err := b.data.Flush(); err != nil {
		return fmt.Errorf("node: flush before the bitmap checkpoint: %w", err)
	}
	b.mu.Lock()
	for _, s := range pending {
		b.md.SetInSync(s.off, s.end-s.off)
		if first, last, ok := b.synced.BlocksOf(s.off, s.end-s.off); ok {
			b.synced.Clear(first, last)
		}
	}
	b.mu.Unlock()
	return b.md.SyncBitmap()
}
