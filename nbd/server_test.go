package nbd

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
)

const testSize = 1 << 20

func TestCommands(t *testing.T) {
	for _, structured := range []bool{false, true} {
		name := "simple"
		if structured {
			name = "structured"
		}
		t.Run(name, func(t *testing.T) {
			e, m := memExport("e", testSize, disk.MemOptions{})
			ts := newTestServer(t, Options{}, e)
			r, done := ts.dial()
			r.goExport("e", structured)

			// WRITE, then READ it back.
			data := pattern(8192, 3)
			r.request(CmdWrite, 0, 1, 4096, 8192, data)
			rep := r.readReply(0)
			require.Equal(t, uint32(0), rep.errno)
			require.Equal(t, uint64(1), rep.cookie)
			assert.Equal(t, data, m.Bytes()[4096:4096+8192])

			r.request(CmdRead, 0, 2, 4096, 8192, nil)
			rep = r.readReply(8192)
			require.Equal(t, uint32(0), rep.errno)
			assert.Equal(t, data, rep.data)
			if structured {
				assert.Equal(t, replyTypeOffsetData, rep.typ)
				assert.Equal(t, replyFlagDone, rep.flags)
				assert.Equal(t, uint64(4096), rep.offset)
			}

			// FUA reaches the device as a durable write.
			r.request(CmdWrite, CmdFlagFUA, 3, 0, 512, pattern(512, 9))
			require.Equal(t, uint32(0), r.readReply(0).errno)
			assert.Equal(t, int64(1), m.Stats().FUAWrites)

			// FLUSH reaches the device.
			r.request(CmdFlush, 0, 4, 0, 0, nil)
			require.Equal(t, uint32(0), r.readReply(0).errno)
			assert.Equal(t, int64(1), m.Stats().Flushes)

			// TRIM and WRITE_ZEROES (with and without NO_HOLE) leave zeroes.
			r.request(CmdTrim, 0, 5, 4096, 4096, nil)
			require.Equal(t, uint32(0), r.readReply(0).errno)
			r.request(CmdWriteZeroes, CmdFlagNoHole|CmdFlagFUA, 6, 8192, 2048, nil)
			require.Equal(t, uint32(0), r.readReply(0).errno)
			r.request(CmdWriteZeroes, 0, 7, 10240, 2048, nil)
			require.Equal(t, uint32(0), r.readReply(0).errno)
			assert.Equal(t, make([]byte, 8192), m.Bytes()[4096:12288])
			assert.Equal(t, data[8192:], m.Bytes()[12288 : 4096+8192+0][:0]) // nothing past the write
			st := m.Stats()
			assert.Equal(t, int64(1), st.Trims)
			assert.Equal(t, int64(2), st.Zeroes)

			// A zero-length READ is answered without data.
			r.request(CmdRead, 0, 8, 0, 0, nil)
			rep = r.readReply(0)
			assert.Equal(t, uint32(0), rep.errno)
			if structured {
				assert.Equal(t, replyTypeNone, rep.typ)
			}

			// DISC: the server flushes what was written and closes.
			flushes := m.Stats().Flushes
			r.request(CmdDisc, 0, 9, 0, 0, nil)
			require.NoError(t, <-done)
			assert.Equal(t, flushes+1, m.Stats().Flushes)
		})
	}
}

func TestRequestErrors(t *testing.T) {
	type tc struct {
		name    string
		export  string
		typ     uint16
		flags   uint16
		off     uint64
		length  uint32
		payload bool // send Length bytes of payload (WRITE)
		want    uint32
		msg     string
	}
	tests := []tc{
		{name: "read beyond the end", typ: CmdRead, off: testSize - 512, length: 1024, want: EINVAL, msg: "beyond the export size"},
		{name: "read with offset overflow", typ: CmdRead, off: ^uint64(0) - 10, length: 512, want: EINVAL},
		{name: "write beyond the end", typ: CmdWrite, off: testSize, length: 512, payload: true, want: ENOSPC},
		{name: "trim beyond the end", typ: CmdTrim, off: testSize - 512, length: 4096, want: EINVAL},
		{name: "write zeroes beyond the end", typ: CmdWriteZeroes, off: 0, length: testSize + 512, want: ENOSPC},
		{name: "read over the 32 MiB limit", typ: CmdRead, length: 32<<20 + 1, want: EINVAL, msg: "maximum payload"},
		{name: "read over the limit with DF", typ: CmdRead, flags: CmdFlagDF, length: 32<<20 + 1, want: EOVERFLOW},
		{name: "write over the 32 MiB limit", typ: CmdWrite, length: 32<<20 + 4096, payload: true, want: EINVAL},
		{name: "write to a read-only export", export: "ro", typ: CmdWrite, length: 4096, payload: true, want: EPERM, msg: "read-only"},
		{name: "trim on a read-only export", export: "ro", typ: CmdTrim, length: 4096, want: EPERM},
		{name: "write zeroes on a read-only export", export: "ro", typ: CmdWriteZeroes, length: 4096, want: EPERM},
		{name: "misaligned read", export: "aligned", typ: CmdRead, off: 512, length: 4096, want: EINVAL, msg: "not aligned"},
		{name: "misaligned write", export: "aligned", typ: CmdWrite, off: 0, length: 1000, payload: true, want: EINVAL},
		{name: "misaligned trim", export: "aligned", typ: CmdTrim, off: 4096, length: 100, want: EINVAL},
		{name: "unknown command", typ: 42, want: EINVAL, msg: "not supported"},
		{name: "CACHE is not advertised", typ: CmdCache, length: 4096, want: EINVAL},
		{name: "BLOCK_STATUS without a metadata context", typ: CmdBlockStatus, length: 4096, want: EINVAL},
		{name: "NO_HOLE on a write", typ: CmdWrite, flags: CmdFlagNoHole, length: 512, payload: true, want: EINVAL, msg: "flags"},
		{name: "undefined flag", typ: CmdRead, flags: 1 << 9, length: 512, want: EINVAL},
		{name: "read fails on the device", export: "faulty", typ: CmdRead, length: 4096, want: EIO, msg: "injected"},
		{name: "write fails on the device", export: "faulty", typ: CmdWrite, length: 4096, payload: true, want: EIO},
		{name: "flush fails on the device", export: "faulty", typ: CmdFlush, want: EIO},
		{name: "trim fails on the device", export: "faulty", typ: CmdTrim, length: 4096, want: EIO},
		{name: "write zeroes fails on the device", export: "faulty", typ: CmdWriteZeroes, length: 4096, want: EIO},
	}
	e, _ := memExport("e", testSize, disk.MemOptions{})
	ro, _ := memExport("ro", testSize, disk.MemOptions{})
	ro.ReadOnly = true
	al, _ := memExport("aligned", testSize, disk.MemOptions{MinBlockSize: 4096})
	fd := disk.NewFaulty(disk.NewMem(testSize, disk.MemOptions{}), disk.FailAll(disk.OpRead, disk.OpWrite, disk.OpFlush, disk.OpTrim, disk.OpWriteZeroes))
	faulty := &Export{Name: "faulty", Device: fd}
	ts := newTestServer(t, Options{}, e, ro, al, faulty)

	for _, structured := range []bool{false, true} {
		for _, c := range tests {
			t.Run(c.name, func(t *testing.T) {
				if c.flags&CmdFlagDF != 0 && !structured {
					t.Skip("DF needs structured replies")
				}
				exp := c.export
				if exp == "" {
					exp = "e"
				}
				r, done := ts.dial()
				r.t = t
				r.goExport(exp, structured)
				var payload []byte
				if c.payload {
					payload = make([]byte, c.length)
				}
				go r.request(c.typ, c.flags, 77, c.off, c.length, payload)
				rep := r.readReply(0)
				assert.Equal(t, uint64(77), rep.cookie)
				assert.Equal(t, c.want, rep.errno)
				if structured {
					assert.Equal(t, replyTypeError, rep.typ)
					assert.Contains(t, rep.msg, c.msg)
				}
				// The connection survives every error: a READ still works.
				r.request(CmdRead, 0, 78, 0, 4096, nil)
				rep = r.readReply(4096)
				assert.Equal(t, uint64(78), rep.cookie)
				if exp != "faulty" {
					assert.Equal(t, uint32(0), rep.errno)
				}
				r.request(CmdDisc, 0, 79, 0, 0, nil)
				<-done
			})
		}
	}
}

func TestBadRequestMagicCloses(t *testing.T) {
	e, _ := memExport("e", testSize, disk.MemOptions{})
	ts := newTestServer(t, Options{}, e)
	r, done := ts.dial()
	r.goExport("e", false)
	r.write(bytes.Repeat([]byte{0xee}, 28))
	r.expectClosed()
	assert.ErrorContains(t, <-done, "bad request magic")
}

// gate is an Injector that holds chosen operations until released.
type gate struct {
	once    sync.Once
	hold    func(disk.Op) bool
	release chan struct{}
	entered chan disk.Op
	active  atomic.Int32
	peak    atomic.Int32
}

// newGate returns a closed gate. Tests `defer g.open()` so that a failed
// test does not leave the server's cleanup waiting on the device (defers
// run before t.Cleanup functions).
func newGate(hold func(disk.Op) bool) *gate {
	return &gate{hold: hold, release: make(chan struct{}), entered: make(chan disk.Op, 1024)}
}

func (g *gate) inject(op disk.Op) error {
	n := g.active.Add(1)
	defer g.active.Add(-1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	g.entered <- op
	if g.hold(op) {
		<-g.release
	}
	return nil
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func TestRepliesOutOfOrder(t *testing.T) {
	g := newGate(func(op disk.Op) bool { return op.Kind == disk.OpRead && op.Off == 0 })
	defer g.open()
	fd := disk.NewFaulty(disk.NewMem(testSize, disk.MemOptions{}), g.inject)
	ts := newTestServer(t, Options{}, &Export{Name: "e", Device: fd})
	r, _ := ts.dial()
	r.goExport("e", false)

	r.request(CmdRead, 0, 1, 0, 4096, nil) // held by the gate
	<-g.entered
	r.request(CmdRead, 0, 2, 8192, 4096, nil)
	rep := r.readReply(4096)
	assert.Equal(t, uint64(2), rep.cookie, "the later read must not wait for the held one")
	g.open()
	rep = r.readReply(4096)
	assert.Equal(t, uint64(1), rep.cookie)
}

func TestOverlappingWritesKeepArrivalOrder(t *testing.T) {
	var first atomic.Bool
	first.Store(true)
	g := newGate(func(op disk.Op) bool { return op.Kind == disk.OpWrite && first.Swap(false) })
	defer g.open()
	mem := disk.NewMem(testSize, disk.MemOptions{})
	ts := newTestServer(t, Options{}, &Export{Name: "e", Device: disk.NewFaulty(mem, g.inject)})
	r, _ := ts.dial()
	r.goExport("e", false)

	r.request(CmdWrite, 0, 1, 0, 8192, bytes.Repeat([]byte{1}, 8192)) // held
	<-g.entered
	r.request(CmdWrite, 0, 2, 4096, 8192, bytes.Repeat([]byte{2}, 8192))  // overlaps: must wait
	r.request(CmdTrim, 0, 3, 6144, 1024, nil)                             // overlaps write 2: waits too
	r.request(CmdRead, 0, 4, 4096, 512, nil)                              // overlaps write 1 and 2: waits
	r.request(CmdWrite, 0, 5, 65536, 4096, bytes.Repeat([]byte{5}, 4096)) // disjoint: runs now

	rep := r.readReply(0)
	assert.Equal(t, uint64(5), rep.cookie, "a disjoint write is not held up")
	assert.Equal(t, int64(65536), (<-g.entered).Off)
	select {
	case op := <-g.entered:
		t.Fatalf("an overlapping request reached the disk before the earlier write finished: %+v", op)
	case <-time.After(50 * time.Millisecond):
	}
	g.open()
	got := map[uint64]reply{}
	for i := 0; i < 4; i++ {
		rep := r.readReplyFor(func(c uint64) int {
			if c == 4 { // only the read carries data
				return 512
			}
			return 0
		})
		got[rep.cookie] = rep
	}
	require.Len(t, got, 4)
	want := append(append(bytes.Repeat([]byte{1}, 4096), bytes.Repeat([]byte{2}, 2048)...), make([]byte, 1024)...)
	want = append(want, bytes.Repeat([]byte{2}, 5120)...)
	assert.Equal(t, want, mem.Bytes()[:12288])
	assert.Equal(t, bytes.Repeat([]byte{2}, 512), got[4].data, "the read sees the writes that arrived before it")
}

func TestReplyWaitsForDurability(t *testing.T) {
	for _, tc := range []struct {
		name string
		hold func(disk.Op) bool
		send func(r *raw)
	}{
		{"FLUSH", func(op disk.Op) bool { return op.Kind == disk.OpFlush },
			func(r *raw) { r.request(CmdFlush, 0, 1, 0, 0, nil) }},
		{"FUA write", func(op disk.Op) bool { return op.Kind == disk.OpWrite && op.FUA },
			func(r *raw) { r.request(CmdWrite, CmdFlagFUA, 1, 0, 4096, make([]byte, 4096)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate(tc.hold)
			defer g.open()
			ts := newTestServer(t, Options{}, &Export{Name: "e", Device: disk.NewFaulty(disk.NewMem(testSize, disk.MemOptions{}), g.inject)})
			r, _ := ts.dial()
			r.goExport("e", false)
			tc.send(r)
			<-g.entered
			_ = r.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			_, err := r.br.Peek(1)
			require.Error(t, err, "a reply left before the device made the data durable")
			g.open()
			assert.Equal(t, uint32(0), r.readReply(0).errno)
		})
	}
}

func TestMultiConnFlushCoversOtherConnections(t *testing.T) {
	// The device's Flush covers every completed write; the server must not
	// scope FLUSH to one connection. Watch the order at the device.
	var mu sync.Mutex
	var ops []disk.Op
	rec := func(op disk.Op) error {
		mu.Lock()
		ops = append(ops, op)
		mu.Unlock()
		return nil
	}
	ts := newTestServer(t, Options{}, &Export{Name: "e", Device: disk.NewFaulty(disk.NewMem(testSize, disk.MemOptions{}), rec)})
	a, _ := ts.dial()
	_, flags := a.goExport("e", false)
	require.NotZero(t, flags&FlagCanMultiConn)
	b, _ := ts.dial()
	b.goExport("e", false)

	a.request(CmdWrite, 0, 1, 0, 4096, make([]byte, 4096))
	require.Equal(t, uint32(0), a.readReply(0).errno)
	b.request(CmdFlush, 0, 1, 0, 0, nil)
	require.Equal(t, uint32(0), b.readReply(0).errno)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, ops, 2)
	assert.Equal(t, disk.OpWrite, ops[0].Kind)
	assert.Equal(t, disk.OpFlush, ops[1].Kind, "the flush reached the device after the other connection's completed write")
}

func TestBackpressureBoundsInflight(t *testing.T) {
	const maxInflight = 4
	g := newGate(func(op disk.Op) bool { return op.Kind == disk.OpWrite })
	defer g.open()
	ts := newTestServer(t, Options{MaxInflight: maxInflight},
		&Export{Name: "e", Device: disk.NewFaulty(disk.NewMem(testSize, disk.MemOptions{}), g.inject)})
	r, _ := ts.dial()
	r.goExport("e", false)

	const n = 64
	sent := make(chan int, n)
	go func() {
		for i := 0; i < n; i++ {
			// Disjoint ranges, so ordering never serializes them.
			r.request(CmdWrite, 0, uint64(i), uint64(i)*4096, 4096, pattern(4096, byte(i)))
			sent <- i
		}
		close(sent)
	}()
	// The gate holds every write, so nothing completes and no budget is
	// freed: the server must admit exactly maxInflight writes, then its
	// reader must wait for budget, and from then on nothing can move
	// until the gate opens.
	for i := 0; i < maxInflight; i++ {
		select {
		case <-g.entered:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d writes reached the device", i, maxInflight)
		}
	}
	require.Eventually(t, func() bool { return readerWaitsForBudget(ts.srv) }, 5*time.Second, time.Millisecond,
		"the reader never waited for budget")
	assert.Equal(t, int32(maxInflight), g.active.Load())
	assert.Zero(t, len(g.entered), "a write beyond the budget reached the device")
	// net.Pipe has no buffer and the reader charges the budget before it
	// reads a WRITE payload: the client finished sending maxInflight
	// requests, and the header of one more at most (its payload waits).
	assert.GreaterOrEqual(t, len(sent), maxInflight)
	assert.LessOrEqual(t, len(sent), maxInflight+1, "the server kept reading while full")
	g.open()
	seen := map[uint64]bool{}
	for i := 0; i < n; i++ {
		rep := r.readReply(0)
		require.Equal(t, uint32(0), rep.errno)
		seen[rep.cookie] = true
	}
	assert.Len(t, seen, n)
	assert.LessOrEqual(t, int(g.peak.Load()), maxInflight)
}

// readerWaitsForBudget reports whether the reader of srv's only
// connection is blocked waiting for budget.
func readerWaitsForBudget(srv *Server) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.conns) != 1 {
		return false
	}
	for c := range srv.conns {
		c.budget.mu.Lock()
		defer c.budget.mu.Unlock()
		return c.budget.waiting
	}
	return false
}

func TestShutdownFinishesInflight(t *testing.T) {
	g := newGate(func(op disk.Op) bool { return op.Kind == disk.OpWrite })
	defer g.open()
	mem := disk.NewMem(testSize, disk.MemOptions{})
	srv, err := NewServer(Options{Catalog: NewStaticCatalog(&Export{Name: "e", Device: disk.NewFaulty(mem, g.inject)})})
	require.NoError(t, err)
	ts := &testServer{t: t, srv: srv}
	r, done := ts.dial()
	r.goExport("e", false)
	r.request(CmdWrite, 0, 1, 0, 4096, bytes.Repeat([]byte{7}, 4096))
	<-g.entered

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	// Open the gate only once the shutdown has begun: Shutdown marks the
	// server closed and stops the readers in one critical section.
	require.Eventually(t, srv.isClosed, 5*time.Second, time.Millisecond)
	g.open()
	rep := r.readReply(0)
	assert.Equal(t, uint32(0), rep.errno, "the in-flight write is answered")
	r.expectClosed()
	require.NoError(t, <-shut)
	require.NoError(t, <-done)
	assert.Equal(t, bytes.Repeat([]byte{7}, 4096), mem.Bytes()[:4096])
	assert.GreaterOrEqual(t, mem.Stats().Flushes, int64(1), "written data is flushed at shutdown")
}

func TestManyConcurrentRequestsRandom(t *testing.T) {
	// A flood of mixed requests from one connection, checked against a
	// model: after all replies, the disk equals the model, and every read
	// returned what the model held when the read arrived (requests on a
	// range execute in arrival order).
	mem := disk.NewMem(256<<10, disk.MemOptions{})
	ts := newTestServer(t, Options{MaxInflight: 16}, &Export{Name: "e", Device: mem})
	r, _ := ts.dial()
	r.goExport("e", true)
	model := make([]byte, 256<<10)
	var wantMu sync.Mutex
	want := map[uint64][]byte{}
	const n = 2000
	seed := uint32(1)
	rnd := func(k int) int { seed = seed*1664525 + 1013904223; return int(seed>>8) % k }
	go func() {
		for i := 0; i < n; i++ {
			off := uint64(rnd(64) * 4096)
			length := uint32((1 + rnd(4)) * 4096)
			if off+uint64(length) > uint64(len(model)) {
				length = uint32(uint64(len(model)) - off)
			}
			cookie := uint64(i + 1)
			switch rnd(4) {
			case 0, 1:
				p := pattern(int(length), byte(i))
				copy(model[off:], p)
				r.request(CmdWrite, 0, cookie, off, length, p)
			case 2:
				clear(model[off : off+uint64(length)])
				r.request(CmdWriteZeroes, 0, cookie, off, length, nil)
			case 3:
				// Reads are checked against the model at arrival.
				snapshot := append([]byte(nil), model[off:off+uint64(length)]...)
				wantMu.Lock()
				want[cookie] = snapshot
				wantMu.Unlock()
				r.request(CmdRead, 0, cookie, off, length, nil)
			}
		}
	}()
	for i := 0; i < n; i++ {
		rep := r.readReply(0)
		require.Equal(t, uint32(0), rep.errno)
		if rep.typ == replyTypeOffsetData {
			wantMu.Lock()
			w := want[rep.cookie]
			wantMu.Unlock()
			assert.Equal(t, w, rep.data, "read %d", rep.cookie)
		}
	}
	assert.Equal(t, model, mem.Bytes())
}

// A connection's requests run on workers that wait for the next request
// once done (conn.start), so a request does not start on a new goroutine
// whose stack the device call grows again. A stream at queue depth 1 uses
// one worker, depth k at most k, and the workers end with the connection.
// (FUA writes never run on the reader, so each of these goes to a worker.)
func TestWorkersAreReusedAndEnd(t *testing.T) {
	var holding atomic.Bool
	g := newGate(func(op disk.Op) bool { return holding.Load() && op.Kind == disk.OpWrite })
	defer g.open()
	mem := disk.NewMem(testSize, disk.MemOptions{})
	ts := newTestServer(t, Options{}, &Export{Name: "e", Device: disk.NewFaulty(mem, g.inject)})
	r, done := ts.dial()
	r.goExport("e", false)
	cookie := uint64(0)
	write := func(off uint64) {
		cookie++
		r.request(CmdWrite, CmdFlagFUA, cookie, off, 4096, pattern(4096, byte(cookie)))
	}
	replies := func(n int) {
		for range n {
			rep := r.readReply(0)
			require.Zero(t, rep.errno, "cookie %d", rep.cookie)
		}
	}

	for i := range uint64(50) {
		write(i * 4096 % testSize)
		replies(1)
	}
	// One worker, or a few: the reply leaves before its worker parks, so
	// the next request can arrive while none is idle (a loaded machine
	// can lose that race more than once; a goroutine per request would
	// make 50).
	assert.LessOrEqual(t, ts.srv.spawned.Load(), int64(4), "queue depth 1: the workers serve request after request")

	holding.Store(true) // eight writes on the disk at once: eight workers
	for i := range uint64(8) {
		write(i * 8192)
	}
	require.Eventually(t, func() bool { return g.active.Load() == 8 }, 5*time.Second, time.Millisecond)
	g.open()
	replies(8)
	assert.GreaterOrEqual(t, ts.srv.spawned.Load(), int64(8))
	for round := range uint64(3) { // depth 8 again: mostly the same ones
		for i := range uint64(8) {
			write((round*8 + i) * 4096)
		}
		replies(8)
	}
	assert.LessOrEqual(t, ts.srv.spawned.Load(), int64(32), "the workers are reused (82 requests went to workers)")
	assert.Equal(t, pattern(4096, byte(cookie)), mem.Bytes()[23*4096:24*4096], "the last write landed")

	r.request(CmdDisc, 0, cookie+1, 0, 0, nil)
	require.NoError(t, <-done)
	require.Eventually(t, func() bool { return ts.srv.workers.Load() == 0 }, 5*time.Second, time.Millisecond,
		"the connection's workers end with it")
}
