package replication

import (
	"fmt"
	"slices"
	"sync"

	"github.com/twinblock/twinblock/internal/alignbuf"
	"github.com/twinblock/twinblock/pkg/disk"
)

// The applier runs the peer's writes and reads on the local disk (the
// receive side of the write path). The receiver hands it operations in
// arrival order; it runs them concurrently on up to maxApplyOps workers,
// with these rules:
//
//   - An operation that overlaps an earlier one still in progress, where
//     either writes, starts only after it finished: overlapping writes
//     land in arrival order, a read sees the writes that came before it.
//     Others run at once.
//   - Writes are grouped in epochs, closed by the peer's Barriers (DRBD's
//     epochs). The BarrierAck of an epoch leaves only once every write of
//     it and of every earlier epoch completed and Disk.Flush succeeded
//     after that, so BarrierAcks leave in ID order. Writes after a
//     Barrier do not wait for it.
//   - The acks of a write are queued before the write counts as done in
//     its epoch, so a WriteAck or NegAck always precedes the BarrierAck
//     that covers it on the wire.
//   - A Flush that fails for a Barrier ends the link (the peer can no
//     longer learn which of its acknowledged writes are durable here)
//     after OnDiskError; a failing write or read is answered with its
//     errno and reported to OnDiskError, and the link goes on.
//   - Resync: the answers to this node's own ResyncRequests are writes
//     of the ordering above (placed where they arrived among the peer's
//     writes) but of no epoch, and are acked with a ResyncAck; the
//     peer's ResyncRequests and VerifyRequests are reads, run under
//     LockRange (resync.go). Compressed payloads are decoded here, by the
//     worker, not by the receiver.
//
// Bounds: maxApplyOps operations (the receiver waits for a free one
// before it reads further: backpressure through TCP), and MaxBuffers of
// write payload, charged when the decoder asks for a payload buffer.
// Neither wait depends on the peer, only on the local disk.
type applier struct {
	l         *Link
	disk      disk.Disk // nil: diskless (the receiver answers before the applier)
	pool      alignbuf.Pool
	work      chan *applyOp // to the workers; never full (capacity maxApplyOps)
	flushKick chan struct{} // cap 1: the first epoch may be ready

	mu       sync.Mutex // guards the fields below
	cond     sync.Cond  // the receiver waits here for an op or for bytes
	closing  bool
	ops      [maxApplyOps]applyOp
	free     []*applyOp
	active   []*applyOp // started or waiting, in arrival order
	nworkers int
	inWork   int // ops handed to the workers and not finished
	bytes    int64
	budget   int64
	epochs   ring[epoch] // open epochs, oldest first; the last is the current one
	epochNum uint64      // number of epochs[0]
	unacked  int         // writes received and not yet completed
	acks     []uint64    // the flusher's scratch
}

// applyOp is one operation of the peer: a write (Data, Trim,
// WriteZeroes; and ResyncReply, the answer to this node's own resync
// request, which is written like a Data arriving at that point but
// belongs to no epoch) or a read (ReadRequest; ResyncRequest and
// VerifyRequest, which read under LockRange). The applier owns
// maxApplyOps of them.
type applyOp struct {
	kind    Type
	id      uint64
	off, n  int64
	flags   DataFlags
	buf     *alignbuf.Buf // Data, ResyncReply: the payload (decoded); ReadRequest: where to read
	zbuf    *alignbuf.Buf // compressed Data, ResyncReply: the payload as received; VerifyRequest: the digests
	zlen    int           // bytes of zbuf used
	codec   Codec         // zbuf's compression
	charged int64         // bytes charged to the budget
	epoch   uint64        // epochal writes: the epoch they count in
	deps    int           // earlier overlapping ops not finished
	waiters []*applyOp    // later ops that wait for this one

	status SyncStatus          // ResyncReply
	wire   int64               // ResyncReply: payload bytes received
	call   *syncCall           // ResyncReply: the request it answers
	alg    DigestAlg           // ResyncRequest (DigestNone: no checksum), VerifyRequest
	csum   [MaxDigestSize]byte // ResyncRequest: the requester's checksum
}

// write reports whether op writes: it is ordered after every earlier
// overlapping op, and later overlapping ops wait for it.
func (op *applyOp) write() bool {
	switch op.kind {
	case TypeReadRequest, TypeResyncRequest, TypeVerifyRequest:
		return false
	}
	return true
}

// epochal reports whether op is a write of the write path, which counts
// in its epoch and is acknowledged.
func (op *applyOp) epochal() bool {
	return op.kind == TypeData || op.kind == TypeTrim || op.kind == TypeWriteZeroes
}

func overlap(a, b *applyOp) bool { return a.off < b.off+b.n && b.off < a.off+a.n }

// epoch is a group of writes closed by a Barrier.
type epoch struct {
	barrier uint64 // the closing Barrier's ID
	closed  bool
	writes  int  // writes of the epoch not yet completed
	wrote   bool // it had writes: its Barrier needs a flush
}

// maxOpenEpochs bounds the Barriers waiting for their ack: a peer that
// sends more (while a write is stuck) is flooding.
const maxOpenEpochs = 1 << 16

func (a *applier) init(l *Link, budget int64) {
	a.l, a.disk, a.budget = l, l.cfg.Disk, budget
	a.pool.SetLimit(min(budget, 8<<20)) // a burst of big writes does not pin its memory
	a.cond.L = &a.mu
	a.work = make(chan *applyOp, maxApplyOps)
	a.flushKick = make(chan struct{}, 1)
	a.free = make([]*applyOp, 0, maxApplyOps)
	for i := range a.ops {
		a.free = append(a.free, &a.ops[i])
	}
	a.active = make([]*applyOp, 0, maxApplyOps)
	// The first epoch counts as written: writes this node acknowledged
	// on an earlier connection may still be in the disk's cache, and the
	// peer's first Barrier covers them too (a Diskless Primary's FLUSH
	// after a reconnect was answered without a flush, and a power loss
	// took writes acknowledged before it: torture seed
	// 1658929834300997804).
	a.epochs.push(epoch{wrote: true})
}

// stop makes every wait return and every new operation be dropped.
func (a *applier) stop() {
	a.mu.Lock()
	a.closing = true
	a.cond.Broadcast()
	a.mu.Unlock()
}

func (a *applier) stats() (unacked, epochs int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unacked, a.epochs.len()
}

// acquire returns a free operation, waiting for one; nil once the link
// is ending.
func (a *applier) acquire() *applyOp {
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.free) == 0 && !a.closing {
		a.cond.Wait()
	}
	if a.closing {
		return nil
	}
	op := a.free[len(a.free)-1]
	a.free = a.free[:len(a.free)-1]
	return op
}

// charge takes n bytes of the payload budget, waiting while it is spent
// (one payload is always admitted); false once the link is ending.
func (a *applier) charge(n int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.bytes > 0 && a.bytes+n > a.budget && !a.closing {
		a.cond.Wait()
	}
	if a.closing {
		return false
	}
	a.bytes += n
	return true
}

// inflateBuffer turns the charge of a compressed payload (buf, charged)
// into that of the n bytes it decodes to, waiting like charge (for local
// disk progress only), and returns the compressed buffer (now
// uncharged: it lives only until a worker decoded it), a buffer of n
// bytes and the new charge. false once the link is ending (everything
// is released).
func (a *applier) inflateBuffer(buf *alignbuf.Buf, charged, n int64) (zbuf, out *alignbuf.Buf, outCharged int64, ok bool) {
	a.mu.Lock()
	for a.bytes-charged > 0 && a.bytes-charged+n > a.budget && !a.closing {
		a.cond.Wait()
	}
	if a.closing {
		a.mu.Unlock()
		a.release(buf, charged)
		return nil, nil, 0, false
	}
	a.bytes += n - charged
	a.mu.Unlock()
	return buf, a.pool.Get(int(n)), n, true
}

// release gives back a buffer and its charge (both may be zero).
// payloadOp returns an op that carries the payload buf (charged bytes of
// the budget), decoded into a buffer of n bytes when codec compressed it
// (the op keeps both: the worker decompresses); nil if the link is
// ending, with every buffer released.
func (a *applier) payloadOp(buf *alignbuf.Buf, charged, n int64, codec Codec) *applyOp {
	var zbuf *alignbuf.Buf
	if codec != CodecNone {
		var ok bool
		if zbuf, buf, charged, ok = a.inflateBuffer(buf, charged, n); !ok {
			return nil
		}
	}
	op := a.acquire()
	if op == nil {
		a.release(buf, charged)
		a.release(zbuf, 0)
		return nil
	}
	op.buf, op.charged, op.zbuf, op.codec = buf, charged, zbuf, codec
	return op
}

func (a *applier) release(b *alignbuf.Buf, charged int64) {
	if b != nil {
		a.pool.Put(b)
	}
	if charged != 0 {
		a.mu.Lock()
		a.bytes -= charged
		a.cond.Signal()
		a.mu.Unlock()
	}
}

// submit registers op (filled by the receiver) and starts it unless it
// must wait for an earlier overlapping one.
func (a *applier) submit(op *applyOp) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		a.recycleLocked(op)
		return
	}
	for _, p := range a.active {
		if (p.write() || op.write()) && overlap(p, op) {
			op.deps++
			p.waiters = append(p.waiters, op)
		}
	}
	a.active = append(a.active, op)
	if op.epochal() {
		last := a.epochs.len() - 1
		op.epoch = a.epochNum + uint64(last)
		e := a.epochs.at(last)
		e.writes++
		e.wrote = true
		a.unacked++
	}
	if op.deps == 0 {
		a.dispatchLocked(op)
	}
}

// dispatchLocked hands op to a worker, starting one if every worker is
// busy (at most maxApplyOps: there are no more ops).
func (a *applier) dispatchLocked(op *applyOp) {
	a.inWork++
	if a.nworkers < a.inWork {
		a.nworkers++
		a.l.wg.Add(1)
		go a.worker()
	}
	a.work <- op
}

// barrier closes the current epoch with the peer's Barrier id.
func (a *applier) barrier(id uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.epochs.len() >= maxOpenEpochs {
		return violation(TypeBarrier, "more than %d Barriers waiting for their ack", maxOpenEpochs)
	}
	e := a.epochs.at(a.epochs.len() - 1)
	e.barrier, e.closed = id, true
	if e.writes == 0 && a.epochs.len() == 1 {
		a.kickFlusher()
	}
	a.epochs.push(epoch{})
	return nil
}

func (a *applier) kickFlusher() {
	select {
	case a.flushKick <- struct{}{}:
	default:
	}
}

func (a *applier) worker() {
	defer a.l.wg.Done()
	for {
		select {
		case op := <-a.work:
			a.run(op)
		case <-a.l.stopCh:
			return
		}
	}
}

// run executes op on the disk, queues its answer and finishes it.
func (a *applier) run(op *applyOp) {
	switch op.kind {
	case TypeResyncRequest:
		a.serveResync(op)
		a.finish(op)
		return
	case TypeVerifyRequest:
		a.serveVerify(op)
		a.finish(op)
		return
	case TypeResyncReply:
		a.writeResync(op)
		a.finish(op)
		return
	}
	l, d := a.l, a.disk
	if op.zbuf != nil {
		if err := decompress(op.codec, op.buf.B[:op.n], op.zbuf.B[:op.zlen]); err != nil {
			l.fail(violation(op.kind, "ID %d: %v", op.id, err))
			a.finish(op)
			return
		}
	}
	fua := op.flags&DataFUA != 0
	var err error
	if op.flags&DataFlushBefore != 0 {
		err = d.Flush()
	}
	if err == nil {
		switch op.kind {
		case TypeData:
			if op.flags&DataAllZero != 0 {
				err = d.WriteZeroes(op.off, op.n, true, fua)
				break
			}
			err = d.WriteAt(op.buf.B[:op.n], op.off, fua)
		case TypeTrim:
			err = d.Trim(op.off, op.n, fua)
		case TypeWriteZeroes:
			err = d.WriteZeroes(op.off, op.n, op.flags&DataNoHole != 0, fua)
		case TypeReadRequest:
			err = d.ReadAt(op.buf.B[:op.n], op.off)
		}
	}
	errno, peerFault := uint32(0), false
	if err != nil {
		errno, peerFault = errnoOf(err, !op.write())
	}
	switch {
	case op.kind == TypeReadRequest:
		m := outMsg{t: TypeReadReply, id: op.id, errno: errno, n: uint32(op.n)}
		if errno == 0 {
			m.payload, m.buf = op.buf.B[:op.n], op.buf
		}
		if !l.enqueueReply(m) || errno != 0 {
			a.pool.Put(op.buf)
		}
		op.buf = nil // the sender's now
	case errno != 0:
		l.enqueueReply(outMsg{t: TypeNegAck, id: op.id, errno: errno})
	case l.cfg.Protocol == 'C':
		l.enqueueReply(outMsg{t: TypeWriteAck, id: op.id})
	}
	if err != nil && !peerFault {
		a.diskError(op, err)
	}
	a.finish(op)
}

func (a *applier) diskError(op *applyOp, err error) {
	a.l.log.Error("replication: disk error on a peer request", "resource", a.l.cfg.Resource, "peer", a.l.cfg.Peer,
		"op", op.kind, "offset", op.off, "length", op.n, "err", err)
	if cb := a.l.cfg.OnDiskError; cb != nil {
		cb(fmt.Errorf("replication: %v from peer %s at %d (%d bytes): %w", op.kind, a.l.cfg.Peer, op.off, op.n, err))
	}
}

// finish retires op: it starts the operations that waited for it, counts
// the write done in its epoch (waking the flusher when the oldest epoch
// may be ready), and frees op.
func (a *applier) finish(op *applyOp) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inWork--
	if i := slices.Index(a.active, op); i >= 0 {
		a.active = slices.Delete(a.active, i, i+1)
	}
	for _, w := range op.waiters {
		w.deps--
		if w.deps == 0 && !a.closing {
			a.dispatchLocked(w)
		}
	}
	if op.epochal() {
		a.unacked--
		e := a.epochs.at(int(op.epoch - a.epochNum))
		e.writes--
		if e.writes == 0 && e.closed && op.epoch == a.epochNum {
			a.kickFlusher()
		}
	}
	a.recycleLocked(op)
}

// recycleLocked returns op's buffer and charge and puts op on the free
// list.
func (a *applier) recycleLocked(op *applyOp) {
	if op.buf != nil {
		a.pool.Put(op.buf)
	}
	if op.zbuf != nil {
		a.pool.Put(op.zbuf)
	}
	a.bytes -= op.charged
	clear(op.waiters)
	*op = applyOp{waiters: op.waiters[:0]}
	a.free = append(a.free, op)
	a.cond.Signal()
}

// flusher answers the peer's Barriers: whenever the oldest epochs are
// closed and their writes done, one Flush covers them all, then their
// BarrierAcks are queued in order.
func (a *applier) flusher() {
	l := a.l
	defer l.wg.Done()
	for {
		select {
		case <-a.flushKick:
		case <-l.stopCh:
			return
		}
		for {
			a.mu.Lock()
			k, wrote := 0, false
			for k < a.epochs.len() {
				e := a.epochs.at(k)
				if !e.closed || e.writes > 0 {
					break
				}
				wrote = wrote || e.wrote
				k++
			}
			last := uint64(0)
			if k > 0 {
				last = a.epochs.at(k - 1).barrier
			}
			a.mu.Unlock()
			if k == 0 {
				break
			}
			if wrote && a.disk != nil {
				if err := a.disk.Flush(); err != nil {
					err = fmt.Errorf("replication: flushing for peer %s's Barrier %d: %w", l.cfg.Peer, last, err)
					a.l.log.Error("replication: disk flush failed", "resource", l.cfg.Resource, "err", err)
					if cb := l.cfg.OnDiskError; cb != nil {
						cb(err)
					}
					l.shutdown(fmt.Errorf("%w: %w", ErrLinkClosed, err), "disk flush failed on node "+l.cfg.Self, true)
					return
				}
			}
			a.mu.Lock()
			acks := a.acks[:0]
			for range k {
				acks = append(acks, a.epochs.pop().barrier)
			}
			a.epochNum += uint64(k)
			a.acks = acks
			a.mu.Unlock()
			for _, id := range acks {
				l.enqueueReply(outMsg{t: TypeBarrierAck, id: id})
			}
		}
	}
}

// The largest pool class holds the largest payload.
var _ [1<<alignbuf.MaxShift - MaxPayloadSize]struct{}
