package nbd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
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
//   - one goroutine per dispatched request runs the device operation,
//     releases the requests that waited for it, and queues its reply.
//     Their number is bounded by Options.MaxInflight.
//
// Replies are written by flat combining: the goroutine that queues a reply
// while nobody is writing becomes the writer and drains the queue with
// vectored writes, so one reply costs no goroutine hand-off and many
// replies share a syscall.
type conn struct {
	srv  *Server
	nc   net.Conn
	sess *session
	dev  Device
	br   *bufio.Reader

	stopping atomic.Bool
	wrote    atomic.Bool // a command that mutates ran: flush at the end
	inflight sync.WaitGroup
	budget   budget

	omu    sync.Mutex
	active []*request // dispatched requests with a range, in no order

	wmu     sync.Mutex
	queue   []*request // replies waiting for the writer
	spare   []*request
	writing bool
	iov     net.Buffers // owned by the current writer
	werr    error       // owned by the current writer
}

// stopReading makes the reader stop after the request it is reading; the
// requests already read still complete and get their replies.
func (c *conn) stopReading() {
	c.stopping.Store(true)
	_ = c.nc.SetReadDeadline(time.Now())
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
	c.budget.init(c.srv.opts.MaxInflight, c.srv.opts.MaxInflightBytes)
	name := sess.export.Name
	c.srv.addSession(name, 1)
	defer c.srv.addSession(name, -1)

	err = c.readLoop()
	c.inflight.Wait()
	if c.wrote.Load() {
		if ferr := c.dev.Flush(); ferr != nil {
			c.srv.log.Error("nbd: flush at disconnect", "export", name, "err", ferr)
			if err == nil {
				err = fmt.Errorf("nbd: flush at disconnect: %w", ferr)
			}
		}
	}
	return err
}

func (c *conn) readLoop() error {
	var hb [requestHeaderSize]byte
	for {
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
			c.budget.acquire(0)
			c.inflight.Add(1)
			c.reply(r)
			c.inflight.Done()
			continue
		}

		if h.Type == CmdRead || h.Type == CmdWrite {
			r.cost = int64(h.Length)
		}
		c.budget.acquire(r.cost)
		if r.cost > 0 {
			r.buf = c.srv.pool.get(int(h.Length))
			r.data = r.buf.b[:h.Length]
		}
		if h.Type == CmdWrite && h.Length > 0 {
			if _, err := io.ReadFull(c.br, r.data); err != nil {
				c.budget.release(r.cost)
				c.recycle(r)
				return fmt.Errorf("nbd: reading %d-byte write payload: %w", h.Length, err)
			}
		}
		c.dispatch(r)
	}
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
	go c.run(r)
}

func (c *conn) run(r *request) {
	c.execute(r)
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
		go c.run(w)
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
	if c.writing {
		c.wmu.Unlock()
		return
	}
	c.writing = true
	for len(c.queue) > 0 {
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
	bufs := iov
	if _, err := bufs.WriteTo(c.nc); err != nil {
		c.werr = err
		if !errors.Is(err, net.ErrClosed) {
			c.srv.log.Info("nbd: writing replies", "err", err)
		}
		c.nc.Close() // the reader sees it and ends the connection
	}
	clear(iov)
}

func (c *conn) recycle(r *request) {
	if r.buf != nil {
		c.srv.pool.put(r.buf)
	}
	r.reset()
	c.srv.reqs.Put(r)
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
