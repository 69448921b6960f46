package resync

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var errLink = errors.New("link closed")

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
)

func TestResyncFetchesExactlyTheDirtyRuns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int64
		marks [][2]int64
		want  [][2]int64
	}{
		{"clean", 4 * mib, nil, nil},
		{"one block", 4 * mib, [][2]int64{{8 * kib, 4 * kib}}, [][2]int64{{8 * kib, 4 * kib}}},
		{"adjacent marks coalesce", 4 * mib, [][2]int64{{0, 4 * kib}, {4 * kib, 8 * kib}}, [][2]int64{{0, 12 * kib}}},
		{"an unaligned write marks whole blocks", 4 * mib, [][2]int64{{5000, 10}}, [][2]int64{{4 * kib, 4 * kib}}},
		{"split at MaxRequest", 4 * mib, [][2]int64{{mib, 200 * kib}},
			[][2]int64{{mib, 64 * kib}, {mib + 64*kib, 64 * kib}, {mib + 128*kib, 64 * kib}, {mib + 192*kib, 8 * kib}}},
		{"sparse", 4 * mib, [][2]int64{{0, 4 * kib}, {12 * kib, 4 * kib}, {3 * mib, 100 * kib}},
			[][2]int64{{0, 4 * kib}, {12 * kib, 4 * kib}, {3 * mib, 64 * kib}, {3*mib + 64*kib, 36 * kib}}},
		{"partial last block", 4*mib + 1000, [][2]int64{{4*mib - 4*kib, 8 * kib}}, [][2]int64{{4*mib - 4*kib, 4*kib + 1000}}},
		{"whole device", 256 * kib, [][2]int64{{0, 256 * kib}},
			[][2]int64{{0, 64 * kib}, {64 * kib, 64 * kib}, {128 * kib, 64 * kib}, {192 * kib, 64 * kib}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := EngineConfig{Size: tc.size, MaxRequest: 64 * kib, MaxInFlight: 64 * mib, Controller: fastFixed}
			h := newHarness(t, cfg)
			for _, m := range tc.marks {
				h.mark(m[0], m[1])
			}
			total := h.bm.OutOfSyncBytes()
			h.startResync(cfg)
			assert.Equal(t, tc.want, nilIfEmpty(h.tr.requests()), "all requested in the first tick")
			h.tr.completeAll(Result{})
			h.waitDone()
			require.NoError(t, h.e.Err())
			assert.Empty(t, h.bm.dirty())

			var dirty int64
			for _, r := range tc.want {
				dirty += r[1]
			}
			st := h.e.Stats()
			assert.Equal(t, dirty, st.Requested, "bytes requested == dirty bytes")
			assert.Equal(t, dirty, st.Arrived)
			assert.Equal(t, total, st.Total)
			assert.Zero(t, st.Left)
			assert.Zero(t, st.InFlight)
			assert.Equal(t, 1, st.Passes)
			assert.Equal(t, ModeResync, st.Mode)
		})
	}
}

func nilIfEmpty(v [][2]int64) [][2]int64 {
	if len(v) == 0 {
		return nil
	}
	return v
}

func TestResyncPicksUpBitsSetMidRun(t *testing.T) {
	// 640 KiB/s: 64 KiB per tick, so the cursor stops where the budget does.
	cfg := EngineConfig{Size: mib, MaxRequest: 64 * kib, Controller: ControllerConfig{Rate: 640 * kib}}
	h := newHarness(t, cfg)
	h.mark(256*kib, 128*kib)
	h.startResync(cfg)
	require.Equal(t, [][2]int64{{256 * kib, 64 * kib}}, h.tr.requests())

	h.mark(0, 4*kib)      // behind the cursor: next pass
	h.mark(512*kib, 4096) // ahead of it: this pass
	h.tick()
	h.tick()
	require.Equal(t, [][2]int64{{256 * kib, 64 * kib}, {320 * kib, 64 * kib}, {512 * kib, 4 * kib}}, h.tr.requests())
	assert.Equal(t, 1, h.e.Stats().Passes)

	h.tr.completePending(Result{}) // (not completeAll: the second pass's request may be issued meanwhile)
	h.e.sync()
	assert.Equal(t, [][2]int64{{256 * kib, 64 * kib}, {320 * kib, 64 * kib}, {512 * kib, 4 * kib}, {0, 4 * kib}},
		h.tr.requests(), "a second pass from 0 once the first drained, on the tick's remaining budget")
	assert.Equal(t, 2, h.e.Stats().Passes)
	assert.False(t, isClosed(h.e.Done()))

	h.tr.completeAll(Result{})
	h.waitDone()
	require.NoError(t, h.e.Err())
	assert.Empty(t, h.bm.dirty())
}

func TestResyncFetchFailure(t *testing.T) {
	runs := [][2]int64{{0, 64 * kib}, {128 * kib, 64 * kib}, {256 * kib, 64 * kib}, {512 * kib, 64 * kib}}
	cfg := EngineConfig{Size: mib, MaxRequest: 64 * kib, MaxInFlight: 192 * kib, Controller: fastFixed}

	t.Run("callback error", func(t *testing.T) {
		h := newHarness(t, cfg)
		for _, r := range runs {
			h.mark(r[0], r[1])
		}
		h.startResync(cfg)
		require.Equal(t, runs[:3], h.tr.requests(), "three fit under MaxInFlight")

		// The failure first: a success first would let the engine, woken
		// by it, issue the next run before the failure arrives.
		h.tr.complete(1, Result{Err: errLink}) // [128K, 192K) fails
		h.tr.complete(0, Result{})             // [0, 64K) arrives
		h.e.sync()
		h.tick()
		assert.Len(t, h.tr.requests(), 3, "nothing new after a failure")
		assert.False(t, isClosed(h.e.Done()), "waits for the request still in flight")

		h.tr.complete(0, Result{Err: errLink})
		h.waitDone()
		require.ErrorIs(t, h.e.Err(), errLink)
		assert.Contains(t, h.e.Err().Error(), "resync: fetch [131072, +65536)")
		assert.Equal(t, runs[1:], h.bm.dirty(), "only the run that arrived is clear")
		assert.Equal(t, 64*kib, h.e.Stats().Arrived)
	})

	t.Run("synchronous error", func(t *testing.T) {
		h := newHarness(t, cfg)
		for _, r := range runs {
			h.mark(r[0], r[1])
		}
		h.tr.fetchErr = errLink
		h.startResync(cfg)
		h.waitDone()
		require.ErrorIs(t, h.e.Err(), errLink)
		assert.Equal(t, runs, h.bm.dirty())
		assert.Zero(t, h.e.Stats().InFlight)
	})

	t.Run("local read error in csum mode", func(t *testing.T) {
		errDisk := errors.New("EIO")
		c := cfg
		c.Digest = sha256Digest
		c.ReadLocal = func([]byte, int64) error { return errDisk }
		h := newHarness(t, c)
		h.mark(0, 4*kib)
		h.startResync(c)
		h.waitDone()
		require.ErrorIs(t, h.e.Err(), errDisk)
		assert.Empty(t, h.tr.requests())
		assert.Equal(t, [][2]int64{{0, 4 * kib}}, h.bm.dirty())
	})
}

func TestCloseWaitsForCallbacks(t *testing.T) {
	cfg := EngineConfig{Size: mib, MaxRequest: 64 * kib, Controller: fastFixed}
	h := newHarness(t, cfg)
	h.mark(0, 128*kib)
	h.mark(512*kib, 4*kib)
	h.startResync(cfg)
	require.Equal(t, 3, h.tr.numPending())

	closed := make(chan struct{})
	go func() {
		h.e.Close()
		close(closed)
	}()
	assertOpen := func(msg string) {
		select {
		case <-closed:
			t.Fatal(msg)
		case <-time.After(30 * time.Millisecond):
		}
	}
	assertOpen("Close returned with three requests in flight")
	h.tr.complete(0, Result{})
	assertOpen("Close returned with two requests in flight")
	h.tr.complete(0, Result{Err: errLink})
	assertOpen("Close returned with one request in flight")
	h.tr.complete(0, Result{})
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	assert.True(t, isClosed(h.e.Done()))
	assert.ErrorIs(t, h.e.Err(), ErrClosed, "Close came first")
	assert.Len(t, h.tr.requests(), 3)
	assert.Equal(t, [][2]int64{{64 * kib, 64 * kib}}, h.bm.dirty())
	h.e.Close() // twice is fine
}

func TestCloseBeforeStart(t *testing.T) {
	e := NewResync(EngineConfig{Size: mib}, newMemBitmap(t, mib), newFakeTransport(t))
	e.Close()
	assert.True(t, isClosed(e.Done()))
	assert.ErrorIs(t, e.Err(), ErrClosed)
	e.Start(context.Background()) // does nothing after Close
	e.Close()
}

func TestCloseAfterFinishKeepsNilErr(t *testing.T) {
	cfg := EngineConfig{Size: mib, Controller: fastFixed}
	h := newHarness(t, cfg)
	h.startResync(cfg)
	h.waitDone()
	h.e.Close()
	assert.NoError(t, h.e.Err())
}

func TestContextCancel(t *testing.T) {
	cfg := EngineConfig{Size: mib, Controller: fastFixed, Clock: newFakeClock()}
	bm := newMemBitmap(t, mib)
	bm.MarkOutOfSync(0, 4*kib)
	tr := newFakeTransport(t)
	e := NewResync(cfg, bm, tr)
	ctx, cancel := context.WithCancel(context.Background())
	e.Start(ctx)
	e.sync()
	require.Equal(t, 1, tr.numPending())
	cancel()
	e.sync()
	assert.False(t, isClosed(e.Done()), "waits for the request in flight")
	tr.completeAll(Result{Err: errLink})
	<-e.Done()
	assert.ErrorIs(t, e.Err(), context.Canceled)
	assert.NotErrorIs(t, e.Err(), errLink, "the first reason wins")
	e.Close()
}

func TestPauseResume(t *testing.T) {
	// 640 KiB/s: one 64 KiB request per tick.
	cfg := EngineConfig{Size: mib, MaxRequest: 64 * kib, Controller: ControllerConfig{Rate: 640 * kib}}
	h := newHarness(t, cfg)
	h.mark(0, mib)
	start := h.clock.Now()
	h.startResync(cfg)
	require.Len(t, h.tr.requests(), 1)

	h.e.Pause()
	h.e.Pause()
	h.tr.completeAll(Result{})
	for range 5 {
		h.tick()
	}
	assert.Len(t, h.tr.requests(), 1, "no request while paused")
	st := h.e.Stats()
	assert.True(t, st.PausedNow)
	assert.Equal(t, 500*time.Millisecond, st.Paused)
	assert.Equal(t, time.Duration(0), h.e.Progress(h.clock.Now()).Elapsed, "paused time is not elapsed time")

	h.e.Resume()
	h.e.Resume()
	assert.False(t, h.e.Stats().PausedNow)
	for i := 0; !isClosed(h.e.Done()) && i < 100; i++ {
		h.tick()
		h.tr.completeAll(Result{})
		h.e.sync()
	}
	h.waitDone()
	require.NoError(t, h.e.Err())
	assert.Len(t, h.tr.requests(), 16)
	assert.Equal(t, 500*time.Millisecond, h.e.Stats().Paused)
	// The loop may tick once more while Done closes: elapsed is the
	// clock's time less the pause, whatever the last tick.
	assert.Equal(t, h.clock.Now().Sub(start)-500*time.Millisecond, h.e.Progress(h.clock.Now()).Elapsed)
	assert.GreaterOrEqual(t, h.e.Progress(h.clock.Now()).Elapsed, 1500*time.Millisecond)
}

func TestFixedRateLimit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rate       int64
		maxRequest int64
		size       int64
	}{
		{"640 KiB/s, 64 KiB requests", 640 * kib, 64 * kib, 8 * mib},
		{"DRBD's 250 KiB/s", 250 * kib, 64 * kib, 4 * mib},
		{"not a multiple of a block", 1*mib + 12345, 128 * kib, 16 * mib},
		{"rate below a request per tick", 100 * kib, mib, 2 * mib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := EngineConfig{Size: tc.size, MaxRequest: tc.maxRequest, Controller: ControllerConfig{Rate: tc.rate}}
			h := newHarness(t, cfg)
			h.mark(0, tc.size)
			h.startResync(cfg)
			perTick := []int64{h.e.Stats().Requested}
			for i := 0; !isClosed(h.e.Done()) && i < 10000; i++ {
				// Complete everything at once: only the rate limits.
				h.tr.completeAll(Result{})
				h.e.sync()
				before := h.e.Stats().Requested
				h.tick()
				perTick[len(perTick)-1] += before - sum(perTick)
				perTick = append(perTick, h.e.Stats().Requested-before)
			}
			h.waitDone()
			require.NoError(t, h.e.Err())
			require.Equal(t, tc.size, sum(perTick))
			for i := 0; i+10 <= len(perTick); i++ {
				second := sum(perTick[i : i+10])
				require.LessOrEqual(t, second, tc.rate+tc.maxRequest, "simulated second from tick %d", i)
			}
			seconds := float64(len(perTick)-1) / 10
			assert.InEpsilon(t, float64(tc.rate), float64(tc.size)/seconds, 0.1, "runs at the rate")
			assert.Equal(t, tc.rate, h.e.Stats().Want)
		})
	}
}

func sum(v []int64) int64 {
	var s int64
	for _, x := range v {
		s += x
	}
	return s
}

func TestInFlightCap(t *testing.T) {
	cfg := EngineConfig{Size: mib, MaxRequest: 64 * kib, MaxInFlight: 128 * kib, Controller: fastFixed}
	h := newHarness(t, cfg)
	h.mark(0, mib)
	var maxInFlight atomic.Int64
	h.tr.onRequest = func(int64, int64) { maxInFlight.Store(max(maxInFlight.Load(), h.e.Stats().InFlight)) }
	h.startResync(cfg)
	assert.Len(t, h.tr.requests(), 2)
	h.tr.complete(0, Result{})
	h.e.sync()
	assert.Len(t, h.tr.requests(), 3, "a completion frees room for the rest of the tick's budget")
	for !isClosed(h.e.Done()) {
		h.tr.completeAll(Result{})
		h.e.sync()
	}
	require.NoError(t, h.e.Err())
	assert.LessOrEqual(t, maxInFlight.Load(), 128*kib)
}

func TestChecksumResync(t *testing.T) {
	const size = mib
	local := randomBytes(1, size)
	var reads atomic.Int64
	cfg := EngineConfig{
		Size: size, MaxRequest: 64 * kib, Controller: fastFixed,
		Digest: sha256Digest,
		ReadLocal: func(p []byte, off int64) error {
			reads.Add(1)
			copy(p, local[off:])
			return nil
		},
	}
	h := newHarness(t, cfg)
	h.mark(0, 8*kib)
	h.mark(100*kib, 64*kib)
	h.mark(size-4*kib, 4*kib)
	h.startResync(cfg)

	h.tr.mu.Lock()
	reqs := slices.Clone(h.tr.all)
	h.tr.mu.Unlock()
	require.Len(t, reqs, 3)
	assert.Equal(t, int64(3), reads.Load(), "one local read per request")
	for _, r := range reqs {
		assert.Equal(t, sha256Digest(nil, local[r.off:r.off+r.n]), r.csum, "csum of [%d, +%d)", r.off, r.n)
	}
	h.tr.complete(0, Result{InSync: true, Wire: 32})        // 2 blocks, same
	h.tr.complete(0, Result{InSync: false, Wire: 64 * kib}) // sent
	h.tr.complete(0, Result{InSync: true, Wire: 32})        // 1 block, same
	h.waitDone()
	require.NoError(t, h.e.Err())
	st := h.e.Stats()
	assert.Equal(t, int64(3), st.SameCsum)
	assert.Equal(t, 64*kib+64, st.Wire)
	assert.Empty(t, h.bm.dirty())
}

func randomBytes(seed uint64, n int64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestVerifyMarksCorruptedBlocks(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int64
		start     int64
		corrupt   []int64 // byte offsets flipped on the peer
		wantStart int64
		wantDirty [][2]int64
	}{
		{"identical", mib, 0, nil, 0, nil},
		{"three blocks", mib, 0, []int64{0, 4096*7 + 100, mib - 1}, 0,
			[][2]int64{{0, 4 * kib}, {7 * 4 * kib, 4 * kib}, {mib - 4*kib, 4 * kib}}},
		{"adjacent blocks", mib, 0, []int64{64*kib - 1, 64 * kib}, 0, [][2]int64{{60 * kib, 8 * kib}}},
		{"from an unaligned start", mib, 300*kib + 5, []int64{4096, 300 * kib, 500 * kib}, 300 * kib,
			[][2]int64{{300 * kib, 4 * kib}, {500 * kib, 4 * kib}}},
		{"partial last block", mib + 1000, 0, []int64{mib + 999}, 0, [][2]int64{{mib, 4 * kib}}},
		{"start past the end", mib, 2 * mib, []int64{0}, mib, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local := randomBytes(2, tc.size)
			peer := slices.Clone(local)
			for _, off := range tc.corrupt {
				peer[off] ^= 0x40
			}
			cfg := EngineConfig{
				Size: tc.size, MaxRequest: 64 * kib, Controller: ControllerConfig{Rate: 2 * mib},
				Digest:    sha256Digest,
				ReadLocal: func(p []byte, off int64) error { copy(p, local[off:]); return nil },
			}
			h := newHarness(t, cfg)
			h.tr.peer, h.tr.digest = peer, sha256Digest
			cfg.Clock = h.clock
			h.e = NewVerify(cfg, h.tr, h.bm, tc.start)
			h.e.Start(t.Context())
			h.e.sync()
			for i := 0; !isClosed(h.e.Done()) && i < 1000; i++ {
				h.tr.completeAll(Result{})
				h.tick()
			}
			h.waitDone()
			require.NoError(t, h.e.Err())

			// In order, MaxRequest each, from the start to the end.
			next := tc.wantStart
			for _, r := range h.tr.requests() {
				require.Equal(t, next, r[0])
				require.LessOrEqual(t, r[1], 64*kib)
				next += r[1]
			}
			assert.Equal(t, tc.size, next)

			assert.Equal(t, tc.wantDirty, nilIfEmpty(h.bm.dirty()))
			st := h.e.Stats()
			var blocks int64
			for _, d := range tc.wantDirty {
				blocks += d[1] / BlockSize
			}
			assert.Equal(t, blocks, st.Mismatch)
			assert.Equal(t, tc.size, st.Position)
			assert.Equal(t, tc.size-tc.wantStart, st.Total)
			assert.Zero(t, st.Left)
			assert.Equal(t, ModeVerify, st.Mode)
			p := h.e.Progress(h.clock.Now())
			assert.True(t, p.Verify)
			assert.Equal(t, uint64(tc.size-tc.wantStart), p.Total)
			assert.Zero(t, p.Left)
		})
	}
}

func TestVerifyPosition(t *testing.T) {
	local := randomBytes(3, mib)
	cfg := EngineConfig{
		Size: mib, MaxRequest: 64 * kib, MaxInFlight: 192 * kib, Controller: fastFixed,
		Digest: sha256Digest, ReadLocal: func(p []byte, off int64) error { copy(p, local[off:]); return nil },
	}
	h := newHarness(t, cfg)
	h.tr.peer, h.tr.digest = local, sha256Digest
	cfg.Clock = h.clock
	h.e = NewVerify(cfg, h.tr, h.bm, 0)
	h.e.Start(t.Context())
	h.e.sync()
	assert.Equal(t, int64(0), h.e.Stats().Position)
	h.tr.complete(1, Result{}) // [64K, 128K) first: [0, 64K) still open
	h.e.sync()
	assert.Equal(t, int64(0), h.e.Stats().Position)
	h.tr.complete(0, Result{})
	h.e.sync()
	assert.Equal(t, 128*kib, h.e.Stats().Position, "every byte below is verified")
	assert.Equal(t, uint64(mib-128*kib), h.e.Progress(h.clock.Now()).Left)
}

func TestLockHeldAroundEachRequest(t *testing.T) {
	for _, mode := range []Mode{ModeResync, ModeVerify} {
		t.Run(mode.String(), func(t *testing.T) {
			local := randomBytes(4, mib)
			var mu sync.Mutex
			locked := map[int64]int64{}
			var locks, unlocks int
			isLocked := func(off, n int64) bool {
				mu.Lock()
				defer mu.Unlock()
				return locked[off] == n
			}
			cfg := EngineConfig{
				Size: mib, MaxRequest: 64 * kib, Controller: fastFixed,
				Digest: sha256Digest,
				ReadLocal: func(p []byte, off int64) error {
					assert.True(t, isLocked(off, int64(len(p))), "read [%d, +%d) outside the lock", off, len(p))
					copy(p, local[off:])
					return nil
				},
				Lock: func(off, n int64) func() {
					mu.Lock()
					defer mu.Unlock()
					locks++
					locked[off] = n
					return func() {
						mu.Lock()
						defer mu.Unlock()
						unlocks++
						delete(locked, off)
					}
				},
			}
			h := newHarness(t, cfg)
			h.tr.peer, h.tr.digest = local, sha256Digest
			h.tr.onRequest = func(off, n int64) {
				assert.True(t, isLocked(off, n), "request [%d, +%d) sent outside the lock", off, n)
			}
			h.bm.onSetInSync = func(off, n int64) {
				assert.True(t, isLocked(off, n), "bits of [%d, +%d) cleared outside the lock", off, n)
			}
			h.mark(0, 200*kib)
			h.mark(512*kib, 4*kib)
			cfg.Clock = h.clock
			if mode == ModeVerify {
				h.e = NewVerify(cfg, h.tr, h.bm, 0)
				h.e.Start(t.Context())
				h.e.sync()
			} else {
				h.startResync(cfg)
			}
			n := h.tr.numPending()
			require.Positive(t, n)
			mu.Lock()
			assert.Len(t, locked, n, "each request in flight holds its range")
			mu.Unlock()
			for i := 0; !isClosed(h.e.Done()) && i < 100; i++ {
				h.tr.completeAll(Result{})
				h.tick()
			}
			h.waitDone()
			require.NoError(t, h.e.Err())
			mu.Lock()
			defer mu.Unlock()
			assert.Equal(t, len(h.tr.requests()), locks)
			assert.Equal(t, locks, unlocks)
			assert.Empty(t, locked)
		})
	}
}

func TestThrottleForApplicationIO(t *testing.T) {
	for _, tc := range []struct {
		name     string
		minRate  int64
		throttle bool
	}{
		{"resync above c-min-rate yields", 1, true},
		{"resync at c-min-rate goes on", 100 * mib, false},
		{"c-min-rate 0 disables", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var appIO atomic.Int64
			appIO.Store(5 * mib) // history before the start does not count
			cfg := EngineConfig{
				Size: mib, MaxRequest: 64 * kib,
				Controller: ControllerConfig{Rate: 640 * kib, MinRate: tc.minRate},
				AppIO:      appIO.Load,
			}
			h := newHarness(t, cfg)
			h.mark(0, mib)
			h.startResync(cfg)
			require.Len(t, h.tr.requests(), 1, "no application I/O: not throttled")
			h.tr.completeAll(Result{})

			appIO.Add(mib)
			h.tick()
			st := h.e.Stats()
			assert.Equal(t, tc.throttle, st.Throttled)
			if tc.throttle {
				assert.Len(t, h.tr.requests(), 1, "no request in a throttled tick")
				assert.Equal(t, int64(1), st.ThrottledTicks)
			} else {
				assert.Len(t, h.tr.requests(), 2)
			}
			h.tr.completeAll(Result{})
			h.tick() // no application I/O since
			assert.False(t, h.e.Stats().Throttled)
			assert.Greater(t, len(h.tr.requests()), 1)
		})
	}
}

func TestEngineConfigErrors(t *testing.T) {
	bm := newMemBitmap(t, mib)
	tr := newFakeTransport(t)
	read := func([]byte, int64) error { return nil }
	for _, tc := range []struct {
		name string
		e    *Engine
	}{
		{"verify without digest", NewVerify(EngineConfig{Size: mib, ReadLocal: read}, tr, bm, 0)},
		{"verify without ReadLocal", NewVerify(EngineConfig{Size: mib, Digest: sha256Digest}, tr, bm, 0)},
		{"csums without ReadLocal", NewResync(EngineConfig{Size: mib, Digest: sha256Digest}, bm, tr)},
		{"negative size", NewResync(EngineConfig{Size: -1}, bm, tr)},
		{"no transport", NewResync(EngineConfig{Size: mib}, bm, nil)},
		{"no bitmap", NewResync(EngineConfig{Size: mib}, nil, tr)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.e.Start(t.Context())
			<-tc.e.Done()
			assert.ErrorIs(t, tc.e.Err(), ErrConfig)
			tc.e.Close()
		})
	}
}

// liarBitmap returns a run before the cursor.
type liarBitmap struct{ Bitmap }

func (liarBitmap) NextDirty(off, limit int64) (int64, int64, bool) { return 0, 4096, true }

func TestEngineContractBroken(t *testing.T) {
	cfg := EngineConfig{Size: mib, Controller: fastFixed}
	h := newHarness(t, cfg)
	h.mark(0, 4*kib)
	h.e = NewResync(EngineConfig{Size: mib, Controller: fastFixed, Clock: h.clock}, liarBitmap{h.bm}, h.tr)
	h.e.Start(t.Context())
	h.e.sync()
	h.tr.completeAll(Result{}) // [0, 4K) from the cursor at 0: fine
	h.tick()                   // the cursor is at 4K now: [0, 4K) again is a lie
	h.waitDone()
	assert.ErrorIs(t, h.e.Err(), ErrContract)
}

func TestEngineStatsAndProgress(t *testing.T) {
	cfg := EngineConfig{Size: mib, MaxRequest: 64 * kib, Controller: ControllerConfig{Rate: 640 * kib}}
	h := newHarness(t, cfg)
	h.mark(0, 256*kib)
	h.startResync(cfg)
	h.tr.completeAll(Result{Wire: 100})
	h.tick()
	st := h.e.Stats()
	assert.Equal(t, 256*kib, st.Total)
	assert.Equal(t, 192*kib, st.Left)
	assert.Equal(t, 128*kib, st.Requested)
	assert.Equal(t, 64*kib, st.Arrived)
	assert.Equal(t, 64*kib, st.InFlight)
	assert.Equal(t, int64(100), st.Wire)
	assert.Equal(t, 640*kib, st.Want)
	assert.Equal(t, 64*kib, st.Position)

	p := h.e.Progress(h.clock.Now())
	assert.Equal(t, uint64(256*kib), p.Total)
	assert.Equal(t, uint64(192*kib), p.Left)
	assert.Equal(t, uint64(640), p.WantKiBps)
	assert.Equal(t, 100*time.Millisecond, p.Elapsed)
	assert.False(t, p.Verify)
}

func TestDynamicControllerStartsAtRate(t *testing.T) {
	// The dynamic controller's first tick requests Rate·0.1 s; with a
	// fill target above it, the engine fills up to the fill target.
	cfg := EngineConfig{Size: 64 * mib, MaxRequest: mib, MaxInFlight: 64 * mib,
		Controller: ControllerConfig{Rate: 80 * mib, PlanAhead: 20, FillTarget: 4 * mib, MaxRate: 1 << 30}}
	h := newHarness(t, cfg)
	h.mark(0, 64*mib)
	h.startResync(cfg)
	assert.Equal(t, 8*mib, h.e.Stats().Requested)
	for i := 0; !isClosed(h.e.Done()) && i < 1000; i++ {
		h.tr.completeAll(Result{})
		h.tick()
	}
	h.waitDone()
	require.NoError(t, h.e.Err())
	assert.Empty(t, h.bm.dirty())
}

func TestDefaults(t *testing.T) {
	d := Defaults()
	assert.Positive(t, d.PlanAhead, "the dynamic controller is on")
	assert.Less(t, d.FillTarget, int64(DefaultMaxInFlight), "the controller, not the in-flight cap, decides")
	assert.GreaterOrEqual(t, d.FillTarget, int64(DefaultMaxRequest)*4, "several requests in flight")
	assert.Less(t, d.MinRate, d.Rate)
	assert.Greater(t, d.MaxRate, int64(1<<30), "no cap below 10 GbE")
	// 100 GiB under load at c-min-rate: DRBD's 250 KiB/s takes days, ours an hour.
	const hundredGiB = int64(100 << 30)
	assert.Greater(t, hundredGiB/(250<<10), int64(4*24*3600))
	assert.Less(t, hundredGiB/d.MinRate, int64(3600))
}

func TestModeString(t *testing.T) {
	assert.Equal(t, "resync", ModeResync.String())
	assert.Equal(t, "verify", ModeVerify.String())
	assert.Equal(t, "Mode(7)", Mode(7).String())
}

func TestTransportContract(t *testing.T) {
	local := randomBytes(5, mib)
	verifyCfg := EngineConfig{
		Size: mib, MaxRequest: 64 * kib, MaxInFlight: 64 * kib, Controller: fastFixed,
		Digest: sha256Digest, ReadLocal: func(p []byte, off int64) error { copy(p, local[off:]); return nil },
	}

	t.Run("done twice panics", func(t *testing.T) {
		cfg := EngineConfig{Size: mib, Controller: fastFixed}
		h := newHarness(t, cfg)
		h.mark(0, 4*kib)
		h.startResync(cfg)
		r := h.tr.take(0)
		r.done(Result{})
		assert.PanicsWithValue(t, "resync: request [0, +4096) completed twice", func() { r.done(Result{}) })
	})

	t.Run("verify mask too short", func(t *testing.T) {
		h := newHarness(t, verifyCfg)
		verifyCfg.Clock = h.clock
		h.e = NewVerify(verifyCfg, h.tr, h.bm, 0)
		h.e.Start(t.Context())
		h.e.sync()
		h.tr.take(0).vdone([]byte{0}, nil) // 16 blocks need 2 bytes
		h.waitDone()
		assert.ErrorIs(t, h.e.Err(), ErrContract)
		assert.Zero(t, h.e.Stats().Mismatch)
	})

	t.Run("verify fails", func(t *testing.T) {
		h := newHarness(t, verifyCfg)
		verifyCfg.Clock = h.clock
		h.e = NewVerify(verifyCfg, h.tr, h.bm, 0)
		h.e.Start(t.Context())
		h.e.sync()
		h.tr.complete(0, Result{Err: errLink})
		h.waitDone()
		assert.ErrorIs(t, h.e.Err(), errLink)
		assert.Zero(t, h.e.Stats().Position)
	})

	t.Run("verify sync error", func(t *testing.T) {
		h := newHarness(t, verifyCfg)
		h.tr.fetchErr = errLink
		verifyCfg.Clock = h.clock
		h.e = NewVerify(verifyCfg, h.tr, nil, 0) // no bitmap: count only
		h.e.Start(t.Context())
		h.waitDone()
		assert.ErrorIs(t, h.e.Err(), errLink)
	})

	t.Run("verify local read error", func(t *testing.T) {
		errDisk := errors.New("EIO")
		c := verifyCfg
		c.ReadLocal = func([]byte, int64) error { return errDisk }
		h := newHarness(t, c)
		c.Clock = h.clock
		h.e = NewVerify(c, h.tr, h.bm, 0)
		h.e.Start(t.Context())
		h.waitDone()
		assert.ErrorIs(t, h.e.Err(), errDisk)
		assert.Empty(t, h.tr.requests())
	})
}

func TestVerifyWithoutBitmapCounts(t *testing.T) {
	local := randomBytes(6, 256*kib)
	peer := slices.Clone(local)
	peer[5*BlockSize] ^= 1
	cfg := EngineConfig{
		Size: 256 * kib, MaxRequest: 64 * kib, Controller: fastFixed,
		Digest: sha256Digest, ReadLocal: func(p []byte, off int64) error { copy(p, local[off:]); return nil },
	}
	h := newHarness(t, cfg)
	h.tr.peer, h.tr.digest = peer, sha256Digest
	cfg.Clock = h.clock
	h.e = NewVerify(cfg, h.tr, nil, 0)
	h.e.Start(t.Context())
	h.e.sync()
	h.tr.completeAll(Result{})
	h.waitDone()
	require.NoError(t, h.e.Err())
	assert.Equal(t, int64(1), h.e.Stats().Mismatch)
}

// Between ticks the dynamic engine keeps c-fill-target in flight as
// completions arrive (a fast link is not held to ten requests' worth per
// second), but never requests more than c-max-rate·0.1 s in one tick, and
// not at all while throttled or in fixed-rate mode.
func TestFillTargetKeptBetweenTicks(t *testing.T) {
	cfg := EngineConfig{Size: 256 * mib, MaxRequest: mib, MaxInFlight: 64 * mib,
		Controller: ControllerConfig{Rate: 10 * mib, PlanAhead: 20, FillTarget: 4 * mib, MaxRate: 100 * mib}}
	h := newHarness(t, cfg)
	h.mark(0, 256*mib)
	h.startResync(cfg)
	require.Equal(t, 4*mib, h.e.Stats().Requested, "the first tick fills to the fill target")
	// Completions within the tick: the fill is topped up, to 10 MiB
	// (c-max-rate 100 MiB/s × 0.1 s) in this tick at most.
	for range 20 {
		h.tr.completeAll(Result{})
		h.e.sync()
	}
	require.Equal(t, 10*mib, h.e.Stats().Requested)
	require.LessOrEqual(t, h.e.Stats().InFlight, 4*mib)

	// Fixed rate: no filling between ticks.
	fixed := EngineConfig{Size: 64 * mib, MaxRequest: mib, MaxInFlight: 64 * mib,
		Controller: ControllerConfig{Rate: 10 * mib, PlanAhead: 0, FillTarget: 4 * mib, MaxRate: 100 * mib}}
	h2 := newHarness(t, fixed)
	h2.mark(0, 64*mib)
	h2.startResync(fixed)
	for range 5 {
		h2.tr.completeAll(Result{})
		h2.e.sync()
	}
	require.Equal(t, mib, h2.e.Stats().Requested, "fixed rate: Rate·0.1 s per tick, nothing more")
}
