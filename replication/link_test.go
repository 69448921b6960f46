package replication

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
)

// readAll reads the peer's whole disk through l. A read waits for the
// writes before it that it overlaps, so afterwards every write submitted
// before has been applied on the peer, whatever the protocol.
func readAll(t *testing.T, l *Link) []byte {
	t.Helper()
	b := make([]byte, testDiskSize)
	require.NoError(t, l.ReadAt(b, 0))
	return b
}

func TestLinkWritePath(t *testing.T) {
	for _, tc := range []struct {
		proto byte
		tcp   bool
	}{{'A', true}, {'B', true}, {'C', true}, {'A', false}, {'C', false}} {
		t.Run(fmt.Sprintf("%c/tcp=%v", tc.proto, tc.tcp), func(t *testing.T) {
			checkGoroutines(t)
			db := disk.NewMem(testDiskSize, disk.MemOptions{})
			cfgA, cfgB := testConfig("a", "b", tc.proto, nil), testConfig("b", "a", tc.proto, db)
			cfgA.MaxEpochSize = 50 // and some Barriers of the link's own
			la, lb := linkPair(t, tc.tcp, cfgA, cfgB)

			model := make([]byte, testDiskSize)
			rng := rand.New(rand.NewPCG(1, uint64(tc.proto)))
			reqs := make([]Request, 32)
			var sent uint64
			for range 20 {
				for i := range reqs {
					r := &reqs[i]
					off, n := int64(rng.IntN(testDiskSize/512-64)*512), int64(1+rng.IntN(32))*512
					switch rng.IntN(10) {
					case 0:
						r.Op, r.Offset, r.Length, r.Data, r.Flags = OpTrim, off, n, nil, 0
						clear(model[off : off+n])
					case 1:
						r.Op, r.Offset, r.Length, r.Data, r.Flags = OpWriteZeroes, off, n, nil, DataNoHole
						clear(model[off : off+n])
					case 2:
						r.Op, r.Data, r.Flags = OpFlush, nil, 0
					default:
						data := patternBytes(byte(rng.Uint32()), int(n))
						r.Op, r.Offset, r.Data, r.Flags = OpWrite, off, data, 0
						if rng.IntN(4) == 0 {
							r.Flags = DataFUA
						}
						copy(model[off:], data)
						sent += uint64(n)
					}
					require.NoError(t, la.Submit(r))
				}
				for i := range reqs {
					require.NoError(t, waitErr(t, &reqs[i]))
				}
			}
			sameBytes(t, model, readAll(t, la), "read through the peer")
			sameBytes(t, model, db.Bytes(), "the peer's disk")
			assert.Equal(t, sent, la.Stats().SentBytes)
			assert.Equal(t, sent, lb.Stats().RecvBytes)
			n, oldest := la.Pending()
			assert.Zero(t, n)
			assert.Zero(t, oldest)
			assert.Zero(t, lb.Stats().Unacked)
		})
	}
}

// recorder is a disk injector that records every operation but reads.
type recorder struct {
	mu  sync.Mutex
	ops []disk.Op
}

func (r *recorder) inject(op disk.Op) error {
	if op.Kind != disk.OpRead {
		r.mu.Lock()
		r.ops = append(r.ops, op)
		r.mu.Unlock()
	}
	return nil
}

func (r *recorder) take() []disk.Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := r.ops
	r.ops = nil
	return ops
}

func TestLinkFlagsReachTheDisk(t *testing.T) {
	checkGoroutines(t)
	rec := &recorder{}
	db := disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), rec.inject)
	la, _ := linkPair(t, true, testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', db))
	for _, tc := range []struct {
		req  Request
		want []disk.Op
	}{
		{Request{Op: OpWrite, Offset: 0, Data: make([]byte, 4096), Flags: DataFUA},
			[]disk.Op{{Kind: disk.OpWrite, Off: 0, Len: 4096, FUA: true}}},
		{Request{Op: OpWrite, Offset: 4096, Data: make([]byte, 512)},
			[]disk.Op{{Kind: disk.OpWrite, Off: 4096, Len: 512}}},
		{Request{Op: OpWrite, Offset: 8192, Data: make([]byte, 512), Flags: DataFlushBefore | DataFUA},
			[]disk.Op{{Kind: disk.OpFlush}, {Kind: disk.OpWrite, Off: 8192, Len: 512, FUA: true}}},
		{Request{Op: OpWriteZeroes, Offset: 16384, Length: 8192, Flags: DataNoHole | DataFUA},
			[]disk.Op{{Kind: disk.OpWriteZeroes, Off: 16384, Len: 8192, NoHole: true, FUA: true}}},
		{Request{Op: OpWriteZeroes, Offset: 16384, Length: 4096},
			[]disk.Op{{Kind: disk.OpWriteZeroes, Off: 16384, Len: 4096}}},
		{Request{Op: OpTrim, Offset: 32768, Length: 4096, Flags: DataFUA},
			[]disk.Op{{Kind: disk.OpTrim, Off: 32768, Len: 4096, FUA: true}}},
		{Request{Op: OpFlush}, []disk.Op{{Kind: disk.OpFlush}}},
		{Request{Op: OpFlush}, nil}, // nothing written since the last one: no flush
	} {
		r := tc.req
		require.NoError(t, la.Submit(&r))
		require.NoError(t, waitErr(t, &r))
		assert.Equal(t, tc.want, rec.take(), "%v %v", r.Op, r.Flags)
	}
}

func TestLinkBarrierMakesEarlierWritesDurable(t *testing.T) {
	checkGoroutines(t)
	crash := disk.NewCrash(testDiskSize)
	la, _ := linkPair(t, true, testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', crash))
	rng := rand.New(rand.NewPCG(7, 7))
	want := make([]byte, 64<<10)
	for i := range 16 {
		r := &Request{Op: OpWrite, Offset: int64(i) * 4096, Data: patternBytes(byte(i+1), 4096)}
		copy(want[i*4096:], r.Data)
		require.NoError(t, la.Submit(r))
		require.NoError(t, waitErr(t, r))
	}
	got := make([]byte, len(want))
	require.NoError(t, crash.CrashClone(rng, 0).ReadAt(got, 0))
	assert.False(t, bytes.Equal(want, got), "acknowledged writes are not durable before the Barrier")

	flush := &Request{Op: OpFlush}
	require.NoError(t, la.Submit(flush))
	require.NoError(t, waitErr(t, flush))
	require.NoError(t, crash.CrashClone(rng, 0).ReadAt(got, 0))
	sameBytes(t, want, got, "after the BarrierAck a crash keeps every earlier write")
}

// TestLinkBarrierCoversAnEarlierConnection: writes acknowledged on one
// connection, which ends without a Barrier, are made durable by the
// first Barrier of the next connection to the same disk, though that
// connection wrote nothing (torture seed 1658929834300997804: a Diskless
// Primary's FLUSH after a reconnect left the peer's cache unflushed).
func TestLinkBarrierCoversAnEarlierConnection(t *testing.T) {
	checkGoroutines(t)
	crash := disk.NewCrash(testDiskSize)
	rng := rand.New(rand.NewPCG(8, 8))
	want := patternBytes(0x5a, 64<<10)
	la, lb := linkPair(t, true, testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', crash))
	w := &Request{Op: OpWrite, Offset: 0, Data: want}
	require.NoError(t, la.Submit(w))
	require.NoError(t, waitErr(t, w))
	closeLink(t, la)
	closeLink(t, lb)

	la2, _ := linkPair(t, true, testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', crash))
	for i := range 2 {
		flush := &Request{Op: OpFlush}
		require.NoError(t, la2.Submit(flush))
		require.NoError(t, waitErr(t, flush))
		if i == 0 {
			assert.Equal(t, int64(1), crash.Stats().Flushes, "the first Barrier flushes")
		}
	}
	assert.Equal(t, int64(1), crash.Stats().Flushes, "an empty epoch after it does not")
	got := make([]byte, len(want))
	require.NoError(t, crash.CrashClone(rng, 0).ReadAt(got, 0))
	sameBytes(t, want, got, "after the new connection's BarrierAck a crash keeps the earlier connection's writes")
}

// TestLinkBarrierWaitsForEarlierWrites: with an earlier write held on
// the peer's disk, the Barrier has arrived (a second epoch is open) but
// cannot be answered; a later write does not wait for it.
func TestLinkBarrierWaitsForEarlierWrites(t *testing.T) {
	checkGoroutines(t)
	held := make(chan struct{})
	entered := make(chan struct{}, 1)
	inj := func(op disk.Op) error {
		if op.Kind == disk.OpWrite && op.Off == 0 {
			entered <- struct{}{}
			<-held
		}
		return nil
	}
	mem := disk.NewMem(testDiskSize, disk.MemOptions{})
	la, lb := linkPair(t, true, testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', disk.NewFaulty(mem, inj)))
	w1 := &Request{Op: OpWrite, Offset: 0, Data: make([]byte, 4096)}
	flush := &Request{Op: OpFlush}
	w2 := &Request{Op: OpWrite, Offset: 8192, Data: make([]byte, 4096)}
	for _, r := range []*Request{w1, flush, w2} {
		require.NoError(t, la.Submit(r))
	}
	recv(t, entered, "w1 at the disk")
	require.NoError(t, waitErr(t, w2), "a write after the Barrier does not wait for it")
	eventually(t, "the Barrier closed the epoch", func() bool { return lb.Stats().Epochs == 2 })
	flushed := make(chan error, 1)
	go func() { flushed <- flush.Wait() }()
	assert.Zero(t, mem.Stats().Flushes, "no flush while an earlier write runs")
	assert.Empty(t, flushed)
	n, oldest := la.Pending()
	assert.Equal(t, 2, n)
	assert.Equal(t, w1.ID(), oldest)
	close(held)
	require.NoError(t, waitErr(t, w1))
	require.NoError(t, recv(t, flushed, "the flush"))
	assert.Equal(t, int64(1), mem.Stats().Flushes)
}

func TestLinkOverlappingWritesApplyInOrder(t *testing.T) {
	for _, proto := range []byte{'A', 'C'} {
		t.Run(string(proto), func(t *testing.T) {
			checkGoroutines(t)
			var concurrent, holding atomic.Bool
			held := make(chan struct{})
			entered := make(chan struct{}, 1)
			inj := func(op disk.Op) error {
				if op.Kind != disk.OpWrite {
					return nil
				}
				if op.Off == 0 && op.Len == 8192 { // w1
					holding.Store(true)
					entered <- struct{}{}
					<-held
					holding.Store(false)
				} else if holding.Load() && op.Off < 8192 {
					concurrent.Store(true) // overlaps the held write
				}
				return nil
			}
			mem := disk.NewMem(testDiskSize, disk.MemOptions{})
			la, lb := linkPair(t, true, testConfig("a", "b", proto, nil), testConfig("b", "a", proto, disk.NewFaulty(mem, inj)))
			t.Cleanup(func() { close(held) })

			// Under C a caller would wait for w1 before sending w2; the
			// link does not rely on that.
			w1 := &Request{Op: OpWrite, Offset: 0, Data: patternBytes(1, 8192)}
			w2 := &Request{Op: OpWrite, Offset: 4096, Data: patternBytes(2, 4096)}
			w3 := &Request{Op: OpWrite, Offset: 0, Data: patternBytes(3, 4096)}
			w4 := &Request{Op: OpWrite, Offset: 65536, Data: patternBytes(4, 4096)} // overlaps nothing
			for _, r := range []*Request{w1, w2, w3, w4} {
				require.NoError(t, la.Submit(r))
			}
			recv(t, entered, "the first write at the disk")
			require.NoError(t, waitErr(t, w4), "a write that overlaps nothing does not wait")
			eventually(t, "w2 and w3 arrived and wait", func() bool { return lb.Stats().Unacked == 3 })
			assert.False(t, concurrent.Load())
			held <- struct{}{}
			for _, r := range []*Request{w1, w2, w3} {
				require.NoError(t, waitErr(t, r))
			}
			want := make([]byte, 8192)
			copy(want, w3.Data)
			copy(want[4096:], w2.Data)
			got := readAll(t, la)
			sameBytes(t, want, got[:8192], "w1, then w2, then w3")
			sameBytes(t, w4.Data, got[65536:65536+4096], "w4")
			assert.False(t, concurrent.Load(), "no overlapping write ran while the first was held")
		})
	}
}

func TestLinkCloseCompletesPending(t *testing.T) {
	checkGoroutines(t)
	g := newGate(disk.OpWrite)
	cfgA := testConfig("a", "b", 'C', nil)
	cfgB := testConfig("b", "a", 'C', disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), g.inject))
	evA, evB := watch(&cfgA), watch(&cfgB)
	la, _ := linkPair(t, true, cfgA, cfgB)
	t.Cleanup(g.release)

	reqs := make([]Request, 16)
	for i := range reqs {
		reqs[i] = Request{Op: OpWrite, Offset: int64(i) * 4096, Data: patternBytes(byte(i), 4096)}
		require.NoError(t, la.Submit(&reqs[i]))
	}
	recv(t, g.entered, "a write at the peer's disk")
	n, oldest := la.Pending()
	assert.Equal(t, 16, n)
	assert.Equal(t, reqs[0].ID(), oldest)

	require.NoError(t, la.Close("operator disconnect"))
	for i := range reqs {
		err := waitErr(t, &reqs[i])
		require.ErrorIs(t, err, ErrLinkClosed)
		assert.EqualError(t, err, "replication: link closed: closed by this node: operator disconnect")
	}
	cause := evA.waitClosed(t)
	assert.EqualError(t, cause, "replication: link closed: closed by this node: operator disconnect")
	assert.Equal(t, cause, la.Err())
	n, _ = la.Pending()
	assert.Zero(t, n)
	assert.Empty(t, evA.oos(), "nothing completed, nothing to report")

	r := &Request{Op: OpWrite, Data: make([]byte, 512)}
	require.ErrorIs(t, la.Submit(r), ErrLinkClosed)
	require.ErrorIs(t, r.Wait(), ErrLinkClosed)
	require.ErrorIs(t, la.ReadAt(make([]byte, 512), 0), ErrLinkClosed)
	require.ErrorIs(t, la.Ping(), ErrLinkClosed)
	require.NoError(t, la.Close("again"))
	<-la.Done()
	assert.Equal(t, int32(1), evA.closes.Load())

	// The peer got the Goodbye; it ends once its disk lets go.
	g.release()
	peerCause := evB.waitClosed(t)
	assert.EqualError(t, peerCause, "replication: link closed: peer a said goodbye: operator disconnect")
}

func TestLinkSubmitConcurrentWithClose(t *testing.T) {
	checkGoroutines(t)
	for _, proto := range []byte{'A', 'B', 'C'} {
		t.Run(string(proto), func(t *testing.T) {
			cfgA := testConfig("a", "b", proto, nil)
			ev := watch(&cfgA)
			la, _ := linkPair(t, true, cfgA, testConfig("b", "a", proto, disk.NewMem(testDiskSize, disk.MemOptions{})))
			var wg sync.WaitGroup
			var ok, failed atomic.Int64
			for g := range 8 {
				wg.Go(func() {
					r := &Request{Op: OpWrite, Offset: int64(g) * 4096, Data: make([]byte, 4096)}
					flush := &Request{Op: OpFlush}
					for i := 0; ; i++ {
						req := r
						if i%5 == 4 {
							req = flush
						}
						if err := la.Submit(req); err != nil {
							assert.ErrorIs(t, err, ErrLinkClosed)
							assert.Equal(t, err, req.Wait())
							failed.Add(1)
							return
						}
						if err := req.Wait(); err != nil {
							assert.ErrorIs(t, err, ErrLinkClosed)
							failed.Add(1)
							return
						}
						ok.Add(1)
					}
				})
			}
			eventually(t, "writes flow", func() bool { return ok.Load() > 200 })
			require.NoError(t, la.Close("stop"))
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			recv(t, done, "every submitter to finish")
			assert.Equal(t, int64(8), failed.Load())
			assert.Equal(t, int32(1), ev.closes.Load())
		})
	}
}

func TestLinkNegAck(t *testing.T) {
	for _, proto := range []byte{'A', 'B', 'C'} {
		t.Run(string(proto), func(t *testing.T) {
			checkGoroutines(t)
			db := disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), disk.FailAll(disk.OpWrite, disk.OpTrim))
			cfgA, cfgB := testConfig("a", "b", proto, nil), testConfig("b", "a", proto, db)
			evA, evB := watch(&cfgA), watch(&cfgB)
			la, _ := linkPair(t, true, cfgA, cfgB)

			for _, r := range []*Request{
				{Op: OpWrite, Offset: 8192, Data: make([]byte, 4096)},
				{Op: OpTrim, Offset: 65536, Length: 8192},
			} {
				require.NoError(t, la.Submit(r))
				err := waitErr(t, r)
				derr := recv(t, evB.diskErrors, "OnDiskError on the peer")
				assert.ErrorIs(t, derr, disk.ErrInjected)
				switch {
				case proto == 'C':
					require.ErrorIs(t, err, ErrPeerIO)
					var errno syscall.Errno
					require.ErrorAs(t, err, &errno)
					assert.Equal(t, syscall.EIO, errno)
					assert.Contains(t, err.Error(), fmt.Sprintf("peer b: %v of ", r.Op))
				case err == nil: // A and B: complete before the NegAck came
					eventually(t, "OnOutOfSync", func() bool { return len(evA.oos()) > 0 })
					n := r.Length + int64(len(r.Data))
					assert.Equal(t, [][2]int64{{r.Offset, n}}, evA.oos())
					evA.mu.Lock()
					evA.outOfSync = nil
					evA.mu.Unlock()
				default: // under A the NegAck may overtake the sender's bookkeeping
					require.ErrorIs(t, err, ErrPeerIO)
				}
			}
			// The link goes on.
			require.NoError(t, la.ReadAt(make([]byte, 4096), 0))
			flush := &Request{Op: OpFlush}
			require.NoError(t, la.Submit(flush))
			require.NoError(t, waitErr(t, flush))
			assert.Empty(t, evA.closed)
		})
	}
}

func TestLinkReadAt(t *testing.T) {
	checkGoroutines(t)
	mem := disk.NewMem(testDiskSize, disk.MemOptions{})
	content := patternBytes(9, testDiskSize)
	require.NoError(t, mem.WriteAt(content, 0, false))
	var failReads atomic.Bool
	db := disk.NewFaulty(mem, func(op disk.Op) error {
		if op.Kind == disk.OpRead && failReads.Load() {
			return disk.ErrInjected
		}
		return nil
	})
	cfgB := testConfig("b", "a", 'C', db)
	evB := watch(&cfgB)
	la, _ := linkPair(t, false, testConfig("a", "b", 'C', nil), cfgB)

	got := make([]byte, 65536)
	require.NoError(t, la.ReadAt(got, 4096))
	sameBytes(t, content[4096:4096+65536], got, "read")
	require.NoError(t, la.ReadAt(nil, 0))

	err := la.ReadAt(make([]byte, 4096), testDiskSize-100)
	require.ErrorIs(t, err, ErrPeerIO)
	require.ErrorIs(t, err, syscall.EINVAL)
	assert.Empty(t, evB.diskErrors, "a read past the end is the reader's mistake")

	require.ErrorIs(t, la.ReadAt(make([]byte, la.MaxPayload()+1), 0), ErrBadRequest)
	require.ErrorIs(t, la.ReadAt(make([]byte, 1), -1), ErrBadRequest)

	failReads.Store(true)
	err = la.ReadAt(make([]byte, 4096), 0)
	require.ErrorIs(t, err, ErrPeerIO)
	require.ErrorIs(t, err, syscall.EIO)
	assert.ErrorIs(t, recv(t, evB.diskErrors, "OnDiskError"), disk.ErrInjected)
	failReads.Store(false)

	// Many at once: more than the 64 a link keeps outstanding.
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			off := int64(i%200) * 4096
			b := make([]byte, 4096)
			if assert.NoError(t, la.ReadAt(b, off)) {
				sameBytes(t, content[off:off+4096], b, "concurrent read")
			}
		})
	}
	wg.Wait()
}

func TestLinkDisklessPeer(t *testing.T) {
	checkGoroutines(t)
	cfgB := testConfig("b", "a", 'C', nil)
	evB := watch(&cfgB)
	la, lb := linkPair(t, true, testConfig("a", "b", 'C', disk.NewMem(testDiskSize, disk.MemOptions{})), cfgB)
	assert.Zero(t, la.PeerDataSize())

	w := &Request{Op: OpWrite, Data: make([]byte, 4096)}
	require.NoError(t, la.Submit(w))
	err := waitErr(t, w)
	require.ErrorIs(t, err, ErrPeerIO)
	require.ErrorIs(t, err, syscall.EIO)
	require.ErrorIs(t, la.ReadAt(make([]byte, 512), 0), syscall.EIO)
	flush := &Request{Op: OpFlush}
	require.NoError(t, la.Submit(flush))
	require.NoError(t, waitErr(t, flush), "nothing to make durable")
	assert.Empty(t, evB.diskErrors, "no disk, no disk error")

	// The other way round the diskless node writes to a disk.
	w = &Request{Op: OpWrite, Data: make([]byte, 4096)}
	require.NoError(t, lb.Submit(w))
	require.NoError(t, waitErr(t, w))
}

func TestLinkFlushFailureEndsTheLink(t *testing.T) {
	checkGoroutines(t)
	db := disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), disk.FailAll(disk.OpFlush))
	cfgA, cfgB := testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', db)
	evA, evB := watch(&cfgA), watch(&cfgB)
	la, _ := linkPair(t, true, cfgA, cfgB)
	w := &Request{Op: OpWrite, Data: make([]byte, 4096)}
	require.NoError(t, la.Submit(w))
	require.NoError(t, waitErr(t, w))
	flush := &Request{Op: OpFlush}
	require.NoError(t, la.Submit(flush))
	require.ErrorIs(t, waitErr(t, flush), ErrLinkClosed)
	assert.ErrorIs(t, recv(t, evB.diskErrors, "OnDiskError"), disk.ErrInjected)
	causeB := evB.waitClosed(t)
	assert.ErrorIs(t, causeB, disk.ErrInjected)
	assert.Contains(t, causeB.Error(), "flushing for peer a's Barrier")
	causeA := evA.waitClosed(t)
	assert.EqualError(t, causeA, "replication: link closed: peer b said goodbye: disk flush failed on node b")
	assert.Equal(t, [][2]int64{{0, 4096}}, evA.oos(), "the acknowledged write was never made durable")
}

func TestLinkPeerKilled(t *testing.T) {
	for _, proto := range []byte{'A', 'C'} {
		t.Run(string(proto), func(t *testing.T) {
			checkGoroutines(t)
			g := newGate(disk.OpWrite)
			cfgA := testConfig("a", "b", proto, nil)
			cfgB := testConfig("b", "a", proto, disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), g.inject))
			evA := watch(&cfgA)
			ca, cb := connPair(t, true)
			la, lb, errA, errB := handshakePair(t, ca, cb, cfgA, cfgB)
			require.NoError(t, errA)
			require.NoError(t, errB)
			t.Cleanup(func() {
				g.release()
				closeLink(t, la)
				closeLink(t, lb)
			})

			reqs := make([]Request, 5)
			for i := range reqs {
				reqs[i] = Request{Op: OpWrite, Offset: int64(i) * 8192, Data: make([]byte, 4096)}
				require.NoError(t, la.Submit(&reqs[i]))
			}
			if proto == 'A' {
				for i := range reqs {
					require.NoError(t, waitErr(t, &reqs[i]), "under A a write completes once sent")
				}
			}
			recv(t, g.entered, "a write at the peer's disk")
			cb.Close() // the peer's end dies under it

			cause := evA.waitClosed(t)
			require.ErrorIs(t, cause, ErrLinkClosed)
			if proto == 'C' {
				for i := range reqs {
					assert.ErrorIs(t, waitErr(t, &reqs[i]), ErrLinkClosed)
				}
				assert.Empty(t, evA.oos())
			} else {
				want := make([][2]int64, len(reqs))
				for i := range reqs {
					want[i] = [2]int64{int64(i) * 8192, 4096}
				}
				assert.Equal(t, want, evA.oos(), "completed writes the peer may have lost")
			}
			<-la.Done()
			assert.Equal(t, int32(1), evA.closes.Load())
		})
	}
}

func TestLinkGoodbyePingState(t *testing.T) {
	checkGoroutines(t)
	cfgA, cfgB := testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', nil)
	evA, evB := watch(&cfgA), watch(&cfgB)
	la, lb := linkPair(t, true, cfgA, cfgB)

	before := la.Received()
	require.NoError(t, la.Ping())
	eventually(t, "the PingAck arrives", func() bool { return la.Received() > before })

	s := State{Role: 1, Disk: 8, GI: [4]uint64{1, 2, 3, 4}, MDFlags: 0x81, OutOfSync: 5, Flags: StateCrashedPrimary}
	require.NoError(t, la.SendState(s))
	assert.Equal(t, s, recv(t, evB.states, "the State"))
	require.ErrorIs(t, la.SendState(State{Flags: 1 << 30}), ErrProtocol)

	require.NoError(t, lb.Close("maintenance"))
	assert.EqualError(t, evA.waitClosed(t), "replication: link closed: peer b said goodbye: maintenance")
	<-la.Done()
}

func TestLinkPendingAndBackpressure(t *testing.T) {
	checkGoroutines(t)
	g := newGate(disk.OpWrite)
	cfgB := testConfig("b", "a", 'C', disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), g.inject))
	la, lb := linkPair(t, true, testConfig("a", "b", 'C', nil), cfgB)
	t.Cleanup(g.release)

	reqs := make([]Request, 100)
	for i := range reqs {
		reqs[i] = Request{Op: OpWrite, Offset: int64(i) * 4096, Data: make([]byte, 4096)}
		require.NoError(t, la.Submit(&reqs[i]))
	}
	n, oldest := la.Pending()
	assert.Equal(t, 100, n)
	assert.Equal(t, reqs[0].ID(), oldest)
	assert.Equal(t, 100, la.Stats().Pending)
	eventually(t, "the peer holds as many writes as it may", func() bool { return lb.Stats().Unacked == maxApplyOps })
	assert.Equal(t, maxApplyOps, lb.Stats().Unacked, "and not one more: it stopped reading")
	g.release()
	for i := range reqs {
		require.NoError(t, waitErr(t, &reqs[i]))
	}
	n, oldest = la.Pending()
	assert.Zero(t, n)
	assert.Zero(t, oldest)
	eventually(t, "the peer is idle", func() bool { return lb.Stats() == LinkStats{RecvBytes: 100 * 4096, Epochs: 1} })
}

func TestLinkMaxEpochSize(t *testing.T) {
	checkGoroutines(t)
	mem := disk.NewMem(testDiskSize, disk.MemOptions{})
	cfgA := testConfig("a", "b", 'C', nil)
	cfgA.MaxEpochSize = 4
	la, _ := linkPair(t, true, cfgA, testConfig("b", "a", 'C', mem))
	for i := range 10 {
		r := &Request{Op: OpWrite, Offset: int64(i) * 4096, Data: make([]byte, 4096)}
		require.NoError(t, la.Submit(r))
		require.NoError(t, waitErr(t, r))
	}
	flush := &Request{Op: OpFlush}
	require.NoError(t, la.Submit(flush))
	require.NoError(t, waitErr(t, flush))
	assert.Equal(t, int64(3), mem.Stats().Flushes, "two Barriers of the link's own, then the caller's")
	la.mu.Lock()
	assert.Zero(t, la.tlog.entries.len(), "the transfer log is empty once everything is acknowledged")
	la.mu.Unlock()
}

func TestLinkBadRequests(t *testing.T) {
	checkGoroutines(t)
	cfgA, cfgB := testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
	cfgB.Features = FeatureRLE // no Trim, no WriteZeroes
	la, _ := linkPair(t, false, cfgA, cfgB)
	for _, tc := range []struct {
		name string
		req  Request
		want string
	}{
		{"empty write", Request{Op: OpWrite}, "write: 0 bytes, want 1..1048576"},
		{"big write", Request{Op: OpWrite, Data: make([]byte, DefaultMaxPayload+1)}, "1048577 bytes"},
		{"negative offset", Request{Op: OpWrite, Offset: -1, Data: make([]byte, 1)}, "offset -1"},
		{"no-hole write", Request{Op: OpWrite, Data: make([]byte, 1), Flags: DataNoHole}, "flags no-hole not allowed"},
		{"flush with flags", Request{Op: OpFlush, Flags: DataFUA}, "flush: flags fua"},
		{"zero op", Request{}, "Op(0): unknown operation"},
		{"trim not negotiated", Request{Op: OpTrim, Length: 512}, "trim: not executed by both nodes"},
		{"zeroes not negotiated", Request{Op: OpWriteZeroes, Length: 512}, "write-zeroes: not executed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req
			err := la.Submit(&r)
			require.ErrorIs(t, err, ErrBadRequest)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, err, r.Wait(), "Wait returns Submit's error")
			// The request is reusable.
			r.Op, r.Offset, r.Data, r.Flags, r.Length = OpWrite, 0, make([]byte, 512), 0, 0
			require.NoError(t, la.Submit(&r))
			require.NoError(t, waitErr(t, &r))
		})
	}
	r := &Request{Op: OpTrim, Length: 512}
	require.ErrorIs(t, la.Submit(r), errors.ErrUnsupported)

	// A request still in flight cannot be submitted again.
	g := newGate(disk.OpWrite)
	cfgB = testConfig("b", "a", 'C', disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), g.inject))
	la, _ = linkPair(t, false, testConfig("a", "b", 'C', nil), cfgB)
	t.Cleanup(g.release)
	r = &Request{Op: OpWrite, Data: make([]byte, 512)}
	require.NoError(t, la.Submit(r))
	require.ErrorIs(t, la.Submit(r), ErrBadRequest)
	r.Reset() // too early: it stays in flight
	r.Op, r.Data = OpWrite, make([]byte, 512)
	require.ErrorIs(t, la.Submit(r), ErrBadRequest)
	g.release()
	require.NoError(t, waitErr(t, r))
	require.ErrorIs(t, (&Request{}).Wait(), ErrBadRequest)
}

func TestLinkProtocolViolations(t *testing.T) {
	for _, tc := range []struct {
		name string
		send []Message
		want string
	}{
		{"write ID steps back", []Message{&Data{ID: 5, Payload: make([]byte, 512)}, &Trim{ID: 5, Length: 512}},
			"Trim: ID 5 after 5: the write path's IDs must increase"},
		{"ack of nothing", []Message{&WriteAck{ID: 7}}, "WriteAck: ID 7, which is no write in flight"},
		{"ack of another protocol", []Message{&RecvAck{ID: 1}}, "RecvAck: ID 1 under protocol C"},
		{"barrier ack of nothing", []Message{&BarrierAck{ID: 1}}, "BarrierAck: ID 1, no Barrier in flight"},
		{"read reply of nothing", []Message{&ReadReply{ID: 3, Errno: 5}}, "ReadReply: ID 3 answers no read in flight"},
		{"hello again", []Message{&Hello{ProtoMin: ProtoVersionMin, ProtoMax: ProtoVersionMax, Resource: "r0", From: "b", To: "a", Protocol: 'C', MaxPayload: 4096}},
			"Hello: unexpected after the handshake"},
		{"bitmap chunk out of place", []Message{&Bitmap{Offset: 5, RLE: []byte{1}}}, "Bitmap: chunk at byte 5, expected 0"},
		{"bitmap chunk skips bytes", []Message{&Bitmap{RLE: []byte{1, 2}}, &Bitmap{Offset: 3, RLE: []byte{1}}},
			"Bitmap: chunk at byte 3, expected 2"},
		{"bitmap empty chunk", []Message{&Bitmap{}}, "Bitmap: empty chunk at byte 0 that is not the last"},
		{"bitmap too big", []Message{&Bitmap{RLE: make([]byte, 40000)}, &Bitmap{Offset: 40000, RLE: make([]byte, 40000)}},
			"Bitmap: bitmap of more than 65793 bytes"},
		{"resync reply of nothing", []Message{&ResyncReply{ID: 3, Status: StatusError, Errno: 5}},
			"ResyncReply: ID 3 answers no resync request in flight"},
		{"resync ack of nothing", []Message{&ResyncAck{ID: 4, Length: 4096}}, "ResyncAck: ID 4 acks no resync request served"},
		{"verify reply of nothing", []Message{&VerifyReply{ID: 5, Status: StatusOK, Mismatch: []byte{1}}},
			"VerifyReply: ID 5 answers no verify request in flight"},
		{"resync request over max payload", []Message{&ResyncRequest{ID: 1, Length: DefaultMaxPayload + 1}},
			"ResyncRequest: 1048577 bytes, over the agreed max payload 1048576"},
		{"resync request ID in flight", []Message{&ResyncRequest{ID: 7, Length: 4096}, &ResyncRequest{ID: 7, Length: 4096}},
			"ResyncRequest: ID 7 is already in flight"},
		{"too many resync requests", resyncRequests(maxSyncRequests+1, 4096),
			"ResyncRequest: more than 32 resync and verify requests or 16777216 bytes outstanding"},
		{"too many resync bytes", resyncRequests(minSyncBudget/DefaultMaxPayload+1, DefaultMaxPayload),
			"ResyncRequest: more than 32 resync and verify requests or 16777216 bytes outstanding"},
		{"compressed write over max payload", []Message{&Data{ID: 1, Flags: DataCompressS2, Payload: s2Block(DefaultMaxPayload + 1)}},
			"Data: 1048577 bytes, over the agreed max payload 1048576"},
		{"compressed write that does not decode", []Message{&Data{ID: 1, Flags: DataCompressS2, Payload: []byte{0x10, 0xff, 0xff}}},
			"Data: ID 1: compressed payload does not decode: s2"},
		{"zstd write without its size", []Message{&Data{ID: 1, Flags: DataCompressZstd, Payload: []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 1, 0, 0}}},
			"Data: ID 1: compressed payload does not decode: zstd: the frame does not state its size"},
		{"write over max payload", []Message{&Data{ID: 1, Payload: make([]byte, DefaultMaxPayload+1)}},
			"Data: 1048577 bytes, over the agreed max payload 1048576"},
		{"read over max payload", []Message{&ReadRequest{ID: 1, Length: DefaultMaxPayload + 1}},
			"ReadRequest: 1048577 bytes, over the agreed max payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			cfg := testConfig("a", "b", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
			ev := watch(&cfg)
			p, links, _ := newRawPeer(t, cfg, nil, false)
			l := recv(t, links, "the link")
			for _, m := range tc.send {
				p.send(m)
			}
			reason := p.goodbye()
			assert.Contains(t, reason, tc.want, "the Goodbye says why")
			p.nc.Close()
			cause := ev.waitClosed(t)
			require.ErrorIs(t, cause, ErrLinkClosed)
			require.ErrorIs(t, cause, ErrProtocol)
			assert.Contains(t, cause.Error(), tc.want)
			closeLink(t, l)
		})
	}
}

// resyncRequests makes n resync requests of length bytes at 0.
func resyncRequests(n int, length uint32) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = &ResyncRequest{ID: uint64(i + 1), Length: length}
	}
	return msgs
}

// TestLinkPeerMayNotOverdrawReads: the read limits are part of the
// protocol; a peer that asks for more than it may while it does not read
// the replies (so they pile up here) is cut off.
func TestLinkPeerMayNotOverdrawReads(t *testing.T) {
	checkGoroutines(t)
	cfg := testConfig("a", "b", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
	ev := watch(&cfg)
	p, links, _ := newRawPeer(t, cfg, nil, false)
	l := recv(t, links, "the link")
	t.Cleanup(func() { closeLink(t, l) })
	// More than the limit beyond what the socket buffers absorb; one
	// write, before the link cuts the connection.
	var frames []byte
	for i := range 2*maxPeerReads + 1 {
		var err error
		frames, err = Append(frames, &ReadRequest{ID: uint64(i), Offset: 0, Length: testDiskSize})
		require.NoError(t, err)
	}
	_, err := p.nc.Write(frames)
	require.NoError(t, err)
	cause := ev.waitClosed(t)
	require.ErrorIs(t, cause, ErrProtocol)
	assert.Contains(t, cause.Error(), "ReadRequest: more than 64 reads or 16777216 bytes outstanding")
}

func TestRing(t *testing.T) {
	var r ring[int]
	next, first := 0, 0
	rng := rand.New(rand.NewPCG(3, 3))
	for range 10000 {
		if rng.IntN(3) > 0 || r.len() == 0 {
			r.push(next)
			next++
		} else {
			require.Equal(t, first, *r.front())
			require.Equal(t, first, r.pop())
			first++
		}
		require.Equal(t, next-first, r.len())
		if r.len() > 0 {
			require.Equal(t, next-1, *r.at(r.len() - 1))
		}
	}
	r.reset()
	assert.Zero(t, r.len())
}

// TestLinkWriteDoesNotAllocate keeps the write path (Submit, send,
// receive, apply on the peer, WriteAck, Wait) free of heap allocations
// in steady state, on both nodes. It counts in a build without -race
// (`make unit` runs the DoesNotAllocate tests that way).
func TestLinkWriteDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	checkGoroutines(t)
	la, _ := linkPair(t, true, testConfig("a", "b", 'C', nil),
		testConfig("b", "a", 'C', disk.NewMem(testDiskSize, disk.MemOptions{})))
	r := &Request{}
	buf := make([]byte, 4096)
	flush := &Request{Op: OpFlush}
	i := 0
	write := func() {
		i++
		r.Reset() // as a pool of Requests does between uses
		r.Op, r.Data = OpWrite, buf
		r.Offset = int64(i%128) * 4096
		r.Flags = DataFUA * DataFlags(i%2)
		if err := la.Submit(r); err != nil {
			t.Fatal(err)
		}
		if err := r.Wait(); err != nil {
			t.Fatal(err)
		}
		if i%64 == 0 {
			if err := la.Submit(flush); err != nil {
				t.Fatal(err)
			}
			if err := flush.Wait(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 3 * DefaultMaxEpochSize { // warm up: queues, rings and pools grow, workers start
		write()
	}
	assert.Zero(t, testing.AllocsPerRun(2000, write))
}

// TestLinkRandomPeer feeds a link random messages from a raw peer: as
// they come (most are violations: the link must end cleanly, with
// ErrProtocol, never panic or hang), and tamed into a legal stream
// (increasing IDs, ranges on the disk, no answers to questions never
// asked), which the link must take without ending.
func TestLinkRandomPeer(t *testing.T) {
	for seed := range uint64(16) {
		for _, tame := range []bool{false, true} {
			t.Run(fmt.Sprintf("seed=%d/tame=%v", seed, tame), func(t *testing.T) {
				checkGoroutines(t)
				cfg := testConfig("a", "b", "ABC"[seed%3], disk.NewMem(testDiskSize, disk.MemOptions{}))
				ev := watch(&cfg)
				p, links, _ := newRawPeer(t, cfg, nil, false)
				l := recv(t, links, "the link")
				t.Cleanup(func() { closeLink(t, l) })
				pongs := make(chan struct{}, 1)
				drained := make(chan struct{})
				go func() { // read everything the link answers
					defer close(drained)
					d := NewDecoder(p.nc, 0)
					for {
						m, err := d.Next()
						if err != nil {
							return
						}
						if _, ok := m.(*PingAck); ok {
							select {
							case pongs <- struct{}{}:
							default:
							}
						}
					}
				}()
				p.dec = nil // the goroutine reads now
				rng := rand.New(rand.NewPCG(seed, 99))
				id := uint64(0)
				var frames []byte
				for _, m := range randomMessages(seed, 300) {
					if tame {
						if m = tameMessage(m, &id, rng); m == nil {
							continue
						}
					}
					var err error
					frames, err = Append(frames[:0], m)
					require.NoError(t, err)
					if _, err := p.nc.Write(frames); err != nil {
						break // the link ended it
					}
				}
				if !tame {
					p.nc.Close()
					cause := ev.waitClosed(t)
					require.ErrorIs(t, cause, ErrLinkClosed)
					<-drained
					return
				}
				p.send(&Ping{})
				recv(t, pongs, "the PingAck")
				require.NoError(t, l.Err(), "a legal stream does not end the link")
				p.nc.Close()
				<-drained
			})
		}
	}
}

// tameMessage turns a random message into one a peer may send, or nil.
func tameMessage(m Message, id *uint64, rng *rand.Rand) Message {
	next := func() uint64 { *id += 1 + rng.Uint64N(3); return *id }
	span := func(off uint64, n uint32) (uint64, uint32) {
		n = 1 + n%(64<<10)
		return off % (testDiskSize - uint64(n) + 1), n
	}
	switch m := m.(type) {
	case *Data:
		m.ID = next()
		if len(m.Payload) > testDiskSize {
			m.Payload = m.Payload[:testDiskSize]
		}
		m.Offset = m.Offset % (testDiskSize - uint64(len(m.Payload)) + 1)
		return m
	case *Trim:
		m.ID = next()
		m.Offset, m.Length = span(m.Offset, m.Length)
		return m
	case *WriteZeroes:
		m.ID = next()
		m.Offset, m.Length = span(m.Offset, m.Length)
		return m
	case *Barrier:
		m.ID = next()
		return m
	case *ReadRequest:
		m.Offset, m.Length = span(m.Offset, m.Length)
		return m
	case *State, *Ping, *PingAck, *SyncUUID:
		return m
	}
	return nil // answers to nothing, setup messages, Bitmap, resync requests (they want acks), Goodbye
}
