package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one client connection. Its goroutines:
//
//   - the reader (the goroutine running serve) decodes requests in arrival
//     order, checks them, charges them to budget (blocking when the
//     connection has too much in flight: backpressure reaches the client
//     through TCP), reads WRITE payloads, and dispatches;
//   - a dispatched request runs on the reader itself or on a worker
//     goroutine (bounded by Options.MaxInflight), which runs the device
//     operation, starts the requests that waited for it, and queues its
//     reply. A worker then waits for the next request (see start).
//
// A READ or WRITE without FUA runs on the reader when the device recently
// served that kind of request within Options.InlineThreshold beyond its
// transfer time at 1 GB/s: a goroutine hand-off costs more than a
// page-cache copy. A slow device (a disk seek, fsync, a network round trip)
// is back to a goroutine per request within a few requests, so the reader
// never waits long behind one. See latency.
//
// Replies are written by flat combining: the goroutine that queues a reply
// while nobody is writing becomes the writer and drains the queue with
// vectored writes, so one reply costs no goroutine hand-off and many
// replies share a syscall. While the reader holds further complete
// requests in its buffer the writer is corked: replies queue up and leave
// together when the reader is about to wait for the socket or for budget.
// A lone request (queue depth 1) is never corked, so it waits for nothing.
type conn struct {
	srv  *Server
	nc   net.Conn
	sess *session
	dev  Device
	br   *bufio.Reader

	stopping  atomic.Bool
	executing atomic.Int32 // requests running on the device now
	lat       [2]latency   // recent device latency of READ [0] and WRITE [1]
	wrote     atomic.Bool  // a command that mutates ran: flush at the end
	inflight  sync.WaitGroup
	budget    budget

	// Reader-owned: the moving average of READ/WRITE payload sizes and the
	// CPU demand it implies (see Options.DemandChanged).
	lenAvg int64
	demand int

	omu    sync.Mutex
	active []*request // dispatched requests with a range, in no order

	wk workers

	wmu     sync.Mutex
	queue   []*request // replies waiting for the writer
	spare   []*request
	writing bool
	corked  bool // the reader has more requests in hand: hold replies
	// corkTimer uncorks after maxCorkDelay, so a reader stuck in a device
	// call it judged fast cannot hold finished replies for longer.
	corkTimer *time.Timer
	iov       net.Buffers // owned by the current writer
	wbufs     net.Buffers // iov as consumed by WriteTo; a field so it does not escape per call
	werr      error       // owned by the current writer
}

// stopReading makes the reader stop after the request it is reading; the
// requests already read still complete and get their replies.
func (c *conn) stopReading() {
	c.stopping.Store(true)
	_ = c.nc.SetReadDeadline(time.Now())
}

// abort closes the connection at once; the reader notices within
// pollSlice even when it is blocked in poll(2).
func (c *conn) abort() {
	c.stopping.Store(true)
	c.nc.Close()
}

func (c *conn) serve() error {
	defer c.nc.Close()
	br, bw := newBufio(c.nc)
	_ = c.nc.SetDeadline(time.Now().Add(c.srv.opts.HandshakeTimeout))
	sess, err := c.srv.handshake(br, bw)
	if err != nil {
		return err
	}
	_ = c.nc.SetDeadline(time.Time{})
	if c.stopping.Load() {
		return ErrServerClosed
	}
	c.sess, c.dev, c.br = sess, sess.export.Device, br
	if pr := newPollReader(c.nc, &c.stopping, c.budget.empty, &c.srv.pollers); pr != nil && br.Buffered() == 0 {
		// The handshake left nothing buffered: switch to the pollReader.
		c.br = bufio.NewReaderSize(pr, 64<<10)
	}
	c.budget.init(c.srv.opts.MaxInflight, c.srv.opts.MaxInflightBytes)
	name := sess.export.Name
	c.demand = 1
	c.srv.addSession(name, 1, 1)
	defer func() { c.srv.addSession(name, -1, -c.demand) }()

	err = c.readLoop()
	c.inflight.Wait()
	c.wk.close()
	if err == nil && c.werr != nil { // every writer is done: werr is ours now
		err = fmt.Errorf("nbd: writing replies: %w", c.werr)
	}
	if c.wrote.Load() {
		if ferr := c.dev.Flush(); ferr != nil {
			c.srv.log.Error("nbd: flush at disconnect", "export", name, "err", ferr)
			if err == nil {
				err = fmt.Errorf("nbd: flush at disconnect: %w", ferr)
			}
		}
	}
	c.lingerClose()
	return err
}

// lingerGrace bounds how long a closing connection waits for the client
// to read its last replies.
const lingerGrace = 2 * time.Second

// lingerClose ends the connection without destroying replies already
// written: closing a socket with unread input makes the kernel send a
// reset and drop what is still queued for sending. So it half-closes,
// discards what the client still sends (requests that arrived after the
// reader stopped, never executed) until the client closes or lingerGrace
// passes, and only then closes.
func (c *conn) lingerClose() {
	hc, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || c.werr != nil || hc.CloseWrite() != nil {
		return // serve's deferred Close does the rest
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(lingerGrace))
	_, _ = io.Copy(io.Discard, c.nc)
}

func (c *conn) readLoop() error {
	defer c.setCork(false)
	var hb [requestHeaderSize]byte
	for {
		if c.stopping.Load() {
			return nil // shutdown: stop between requests, even with input buffered
		}
		c.setCork(c.nextRequestBuffered())
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			if c.stopping.Load() {
				return nil
			}
			return fmt.Errorf("nbd: reading request: %w", err)
		}
		h, err := DecodeRequestHeader(hb[:])
		if err != nil {
			return err
		}
		if h.Type == CmdDisc {
			return nil
		}
		r := c.srv.reqs.Get().(*request)
		r.RequestHeader = h

		if errno, msg := c.check(h); errno != 0 {
			if h.Type == CmdWrite {
				if _, err := io.CopyN(io.Discard, c.br, int64(h.Length)); err != nil {
					c.recycle(r)
					return fmt.Errorf("nbd: discarding refused write payload: %w", err)
				}
			}
			r.errno, r.msg = errno, msg
			c.acquire(0)
			c.inflight.Add(1)
			c.reply(r)
			c.inflight.Done()
			continue
		}

		if h.Type == CmdRead || h.Type == CmdWrite {
			r.cost = int64(h.Length)
			c.trackLength(r.cost)
		}
		c.acquire(r.cost)
		if r.cost > 0 {
			r.buf = c.srv.pool.Get(int(h.Length))
			r.data = r.buf.B[:h.Length]
		}
		if h.Type == CmdWrite && h.Length > 0 {
			if err := c.readPayload(r.data); err != nil {
				c.budget.release(r.cost)
				c.recycle(r)
				return fmt.Errorf("nbd: reading %d-byte write payload: %w", h.Length, err)
			}
		}
		c.dispatch(r)
	}
}

// readPayload reads a WRITE payload. A shutdown that interrupts it (the
// header is read, so the request has begun) gets lingerGrace to let the
// rest arrive: the reader stops between requests, not inside one.
func (c *conn) readPayload(p []byte) error {
	n, err := io.ReadFull(c.br, p)
	if err != nil && c.stopping.Load() && isTimeout(err) {
		_ = c.nc.SetReadDeadline(time.Now().Add(lingerGrace))
		_, err = io.ReadFull(c.br, p[n:])
	}
	return err
}

// isTimeout is out of line so that its errors.As target does not make the
// caller allocate on the success path.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// streamingLength is the average payload above which a connection counts
// as streaming and wants two CPUs.
const streamingLength = 128 << 10

// trackLength updates the payload average (weight 1/8) and reports a
// change of demand to the server.
func (c *conn) trackLength(n int64) {
	c.lenAvg += (n - c.lenAvg) / 8
	want := 1
	if c.lenAvg >= streamingLength {
		want = 2
	}
	if want != c.demand {
		c.srv.addDemand(want - c.demand)
		c.demand = want
	}
}

// nextRequestBuffered reports whether the next request, header and any
// payload, is already in the read buffer, so reading it cannot block.
func (c *conn) nextRequestBuffered() bool {
	n := c.br.Buffered()
	if n < requestHeaderSize {
		return false
	}
	hb, _ := c.br.Peek(requestHeaderSize)
	need := requestHeaderSize
	if binary.BigEndian.Uint16(hb[6:]) == CmdWrite {
		need += int(binary.BigEndian.Uint32(hb[24:]))
	}
	return n >= need
}

// acquire charges cost to the budget, uncorking first if it would wait:
// the replies that free the budget must be able to leave.
func (c *conn) acquire(cost int64) {
	if !c.budget.tryAcquire(cost) {
		c.setCork(false)
		c.budget.acquire(cost)
	}
}

// maxCorkDelay bounds how long a finished reply can be held by the cork.
const maxCorkDelay = time.Millisecond

// setCork holds replies (on) or releases them (off), writing what queued
// up if nobody else is writing.
func (c *conn) setCork(on bool) {
	c.wmu.Lock()
	if c.corked == on {
		c.wmu.Unlock()
		return
	}
	c.corked = on
	if on {
		if c.corkTimer == nil {
			c.corkTimer = time.AfterFunc(maxCorkDelay, func() { c.setCork(false) })
		} else {
			c.corkTimer.Reset(maxCorkDelay)
		}
		c.wmu.Unlock()
		return
	}
	if c.corkTimer != nil {
		c.corkTimer.Stop()
	}
	if c.writing || len(c.queue) == 0 {
		c.wmu.Unlock()
		return
	}
	c.drainLocked()
}

// check validates a request against the session. A non-zero errno is sent
// back as the reply; the connection stays usable.
func (c *conn) check(h RequestHeader) (uint32, string) {
	s := c.sess
	allowed := CmdFlagFUA // clients set FUA on any command; harmless
	switch h.Type {
	case CmdRead:
		if s.structured {
			allowed |= CmdFlagDF
		}
	case CmdWriteZeroes:
		allowed |= CmdFlagNoHole
	case CmdWrite, CmdFlush, CmdTrim:
	default:
		return EINVAL, fmt.Sprintf("command type %d is not supported", h.Type)
	}
	name := CommandName(h.Type)
	if f := h.Flags &^ allowed; f != 0 {
		return EINVAL, fmt.Sprintf("%s: command flags %#x are not valid here", name, f)
	}
	if h.Type == CmdFlush {
		return 0, ""
	}
	mutates := h.Type == CmdWrite || h.Type == CmdTrim || h.Type == CmdWriteZeroes
	if mutates && s.flags&FlagReadOnly != 0 {
		return EPERM, fmt.Sprintf("%s: export %q is read-only", name, s.export.Name)
	}
	if (h.Type == CmdRead || h.Type == CmdWrite) && h.Length > s.maxPayload {
		if h.Flags&CmdFlagDF != 0 {
			return EOVERFLOW, fmt.Sprintf("%s: length %d exceeds the maximum payload %d", name, h.Length, s.maxPayload)
		}
		return EINVAL, fmt.Sprintf("%s: length %d exceeds the maximum payload %d", name, h.Length, s.maxPayload)
	}
	if end := h.Offset + uint64(h.Length); end < h.Offset || end > uint64(s.size) {
		errno := uint32(EINVAL)
		if h.Type == CmdWrite || h.Type == CmdWriteZeroes {
			errno = ENOSPC // proto.md: writes beyond the end get ENOSPC
		}
		return errno, fmt.Sprintf("%s: offset %d length %d is beyond the export size %d", name, h.Offset, h.Length, s.size)
	}
	if m := uint64(s.minBlock); m > 1 && (h.Offset%m != 0 || uint64(h.Length)%m != 0) {
		return EINVAL, fmt.Sprintf("%s: offset %d length %d is not aligned to the minimum block size %d", name, h.Offset, h.Length, m)
	}
	return 0, ""
}

// dispatch starts r, or parks it behind the earlier in-flight requests it
// conflicts with (see request.conflicts); complete starts it later.
func (c *conn) dispatch(r *request) {
	c.inflight.Add(1)
	if r.Type != CmdFlush && r.Length > 0 {
		c.omu.Lock()
		for _, o := range c.active {
			if r.conflicts(o) {
				r.deps++
				o.waiters = append(o.waiters, r)
			}
		}
		r.ordered = true
		r.activeIdx = len(c.active)
		c.active = append(c.active, r)
		waiting := r.deps > 0
		c.omu.Unlock()
		if waiting {
			return
		}
	}
	if c.inline(r) {
		c.run(r)
		return
	}
	c.start(r)
}

// workers holds the idle worker goroutines of a connection: each ran a
// request and waits on its channel for the next. A goroutine started per
// request begins on a minimal stack, which the device call then grows by
// copying (about 4% of a replicating Primary's CPU at 4k QD32); a worker
// keeps its grown stack. Invariant: a worker is either running a request
// or parked in idle, until close, after which none parks and each parked
// one gets nil and ends. No more than Options.MaxInflight park, since no
// more run at once.
type workers struct {
	mu     sync.Mutex
	idle   []chan *request // the most recently parked last: its stack is warm
	closed bool
}

// start runs r on an idle worker, or on a new one when none is idle.
func (c *conn) start(r *request) {
	c.wk.mu.Lock()
	if n := len(c.wk.idle); n > 0 {
		next := c.wk.idle[n-1]
		c.wk.idle[n-1] = nil
		c.wk.idle = c.wk.idle[:n-1]
		c.wk.mu.Unlock()
		next <- r // buffered, and its worker is parked: never blocks
		return
	}
	c.wk.mu.Unlock()
	c.srv.workers.Add(1)
	c.srv.spawned.Add(1)
	go c.worker(r)
}

func (c *conn) worker(r *request) {
	defer c.srv.workers.Add(-1)
	next := make(chan *request, 1)
	for r != nil {
		c.run(r)
		if !c.wk.park(next, c.srv.opts.MaxInflight) {
			return
		}
		r = <-next
	}
}

// park adds a worker's channel to the idle ones; false means the worker
// ends instead.
func (w *workers) park(next chan *request, max int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(w.idle) >= max {
		return false
	}
	w.idle = append(w.idle, next)
	return true
}

// close ends the idle workers and makes the busy ones end after their
// request. The connection calls it once no request is in flight.
func (w *workers) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	for i, next := range w.idle {
		next <- nil
		w.idle[i] = nil
	}
	w.idle = nil
}

// inline decides whether the reader runs r itself (see the conn doc).
func (c *conn) inline(r *request) bool {
	if r.Flags&CmdFlagFUA != 0 {
		return false
	}
	if r.Type != CmdRead && r.Type != CmdWrite {
		return false
	}
	return c.lat[latIndex(r.Type)].fast(c.srv.opts.InlineThreshold)
}

func latIndex(cmd uint16) int {
	if cmd == CmdWrite {
		return 1
	}
	return 0
}

func (c *conn) run(r *request) {
	c.executing.Add(1)
	if (r.Type == CmdRead || r.Type == CmdWrite) && r.Flags&CmdFlagFUA == 0 {
		start := time.Now()
		c.execute(r)
		c.lat[latIndex(r.Type)].observe(time.Since(start), int64(r.Length))
	} else {
		c.execute(r)
	}
	c.executing.Add(-1)
	if r.ordered {
		c.complete(r)
	}
	c.reply(r)
	c.inflight.Done()
}

// complete removes r from the active set and starts the requests for
// which r was the last conflict.
func (c *conn) complete(r *request) {
	c.omu.Lock()
	last := len(c.active) - 1
	moved := c.active[last]
	c.active[r.activeIdx] = moved
	moved.activeIdx = r.activeIdx
	c.active[last] = nil
	c.active = c.active[:last]
	ready := r.waiters[:0]
	for _, w := range r.waiters {
		if w.deps--; w.deps == 0 {
			ready = append(ready, w)
		}
	}
	c.omu.Unlock()
	for i, w := range ready {
		c.start(w)
		ready[i] = nil
	}
	r.waiters = r.waiters[:0]
}

func (c *conn) execute(r *request) {
	var err error
	off, n := int64(r.Offset), int64(r.Length)
	fua := r.Flags&CmdFlagFUA != 0
	if r.mutates() && !c.wrote.Load() {
		c.wrote.Store(true)
	}
	switch r.Type {
	case CmdRead:
		if n > 0 {
			err = c.dev.ReadAt(r.data, off)
		}
	case CmdWrite:
		if n > 0 {
			err = c.dev.WriteAt(r.data, off, fua)
		} else if fua {
			err = c.dev.Flush()
		}
	case CmdFlush:
		err = c.dev.Flush()
	case CmdTrim:
		if n > 0 {
			err = c.dev.Trim(off, n, fua)
		}
	case CmdWriteZeroes:
		if n > 0 {
			err = c.dev.WriteZeroes(off, n, r.Flags&CmdFlagNoHole != 0, fua)
		}
	}
	if err != nil {
		r.errno = errnoOf(err)
		r.msg = fmt.Sprintf("%s offset %d length %d: %v", CommandName(r.Type), off, n, err)
		c.srv.log.Warn("nbd: request failed", "export", c.sess.export.Name, "err", r.msg)
	}
}

// reply queues r's reply; see the conn doc for the flat-combining writer.
func (c *conn) reply(r *request) {
	c.wmu.Lock()
	c.queue = append(c.queue, r)
	if c.writing || c.corked {
		c.wmu.Unlock()
		return
	}
	c.drainLocked()
}

// drainLocked makes the caller the writer until the queue is empty. It is
// called with wmu held and returns with it released.
func (c *conn) drainLocked() {
	c.writing = true
	for len(c.queue) > 0 && !c.corked {
		if c.executing.Load() > 0 {
			// Others are about to finish: let them queue their replies
			// so they share this write.
			c.wmu.Unlock()
			runtime.Gosched()
			c.wmu.Lock()
		}
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.wmu.Unlock()

		c.writeBatch(batch)
		for i, b := range batch {
			c.budget.release(b.cost)
			c.recycle(b)
			batch[i] = nil
		}

		c.wmu.Lock()
		c.spare = batch[:0]
	}
	c.writing = false
	c.wmu.Unlock()
}

func (c *conn) writeBatch(batch []*request) {
	if c.werr != nil {
		return
	}
	iov := c.iov[:0]
	for _, r := range batch {
		iov = r.appendReply(iov, c.sess.structured)
	}
	c.iov = iov
	c.wbufs = iov
	if _, err := c.wbufs.WriteTo(c.nc); err != nil {
		c.werr = err
		if !errors.Is(err, net.ErrClosed) {
			c.srv.log.Info("nbd: writing replies", "err", err)
		}
		c.abort() // the reader sees it and ends the connection
	}
	clear(iov)
}

func (c *conn) recycle(r *request) {
	if r.buf != nil {
		c.srv.pool.Put(r.buf)
	}
	r.reset()
	c.srv.reqs.Put(r)
}

// latency is a moving average (weight 1/8 per sample) of a device's
// latency beyond the time its payload takes at 1 GB/s (1 ns per byte), in
// nanoseconds: a 1 MiB copy in 300µs is fast, a 5 ms seek is not. Zero means no sample yet, which counts as slow, so a
// connection starts with a goroutine per request.
type latency struct{ ewma atomic.Int64 }

func (l *latency) fast(threshold time.Duration) bool {
	v := l.ewma.Load()
	return v != 0 && v < int64(threshold)
}

func (l *latency) observe(d time.Duration, n int64) {
	excess := max(int64(d)-n, 1)
	old := l.ewma.Load()
	if old == 0 {
		l.ewma.Store(excess)
		return
	}
	l.ewma.Store(old + (excess-old)/8) // racy by design: an estimate
}

// budget bounds what one connection holds in flight: a count of requests
// and a sum of payload bytes. Only the reader acquires.
type budget struct {
	mu       sync.Mutex
	cond     sync.Cond
	n, maxN  int
	bytes    int64
	maxBytes int64
	waiting  bool
}

func (b *budget) init(maxN int, maxBytes int64) {
	b.cond.L = &b.mu
	b.maxN, b.maxBytes = maxN, maxBytes
}

// acquire blocks until cost fits. A request larger than the whole byte
// budget is admitted alone.
// empty reports whether nothing is in flight.
func (b *budget) empty() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n == 0
}

func (b *budget) tryAcquire(cost int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n >= b.maxN || (b.n > 0 && b.bytes+cost > b.maxBytes) {
		return false
	}
	b.n++
	b.bytes += cost
	return true
}

func (b *budget) acquire(cost int64) {
	b.mu.Lock()
	for b.n >= b.maxN || (b.n > 0 && b.bytes+cost > b.maxBytes) {
		b.waiting = true
		b.cond.Wait()
	}
	b.n++
	b.bytes += cost
	b.mu.Unlock()
}

func (b *budget) release(cost int64) {
	b.mu.Lock()
	b.n--
	b.bytes -= cost
	wake := b.waiting
	b.waiting = false
	b.mu.Unlock()
	if wake {
		b.cond.Signal()
	}
}
