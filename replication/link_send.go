package replication

import (
	"fmt"
	"net"
	"runtime"

	"github.com/twinblock/twinblock/internal/alignbuf"
)

// outMsg is one frame waiting in the send queue. It holds copies of what
// the frame needs (never a *Request), so the sender cannot touch a
// request that completed meanwhile.
type outMsg struct {
	t       Type
	id      uint64
	off     uint64
	n       uint32 // Data (as written), Trim, WriteZeroes, ReadRequest, ResyncRequest, ResyncAck, VerifyRequest length; ReadReply's requested length
	flags   DataFlags
	errno   uint32
	alg     DigestAlg     // ResyncRequest, VerifyRequest
	status  SyncStatus    // ResyncReply, VerifyReply
	codec   Codec         // ResyncReply
	last    bool          // Bitmap
	payload []byte        // Data (the caller's, or compressed in buf), ReadReply, ResyncReply, VerifyRequest, VerifyReply (buf's), Bitmap, ResyncRequest's checksum
	buf     *alignbuf.Buf // back to the pool once written
	state   State
	reply   bool // an answer to the peer (counted in Link.replies)
}

// sendScratch is the sender's reusable encoding state: one message of
// each type (so encoding allocates nothing), the frame bytes, and the
// iovec of the current batch.
type sendScratch struct {
	data        Data
	trim        Trim
	writeZeroes WriteZeroes
	barrier     Barrier
	barrierAck  BarrierAck
	recvAck     RecvAck
	writeAck    WriteAck
	negAck      NegAck
	readRequest ReadRequest
	readReply   ReadReply
	bitmap      Bitmap
	syncUUID    SyncUUID
	rsRequest   ResyncRequest
	rsReply     ResyncReply
	rsAck       ResyncAck
	vRequest    VerifyRequest
	vReply      VerifyReply
	state       State
	ping        Ping
	pingAck     PingAck
	goodbye     Goodbye

	frames []byte
	cuts   []bulkCut
	iov    net.Buffers
	wbufs  net.Buffers // iov as consumed by WriteTo; a field so it does not escape
}

// bulkCut: the bulk payload goes on the wire after frames[:pos].
type bulkCut struct {
	pos  int
	bulk []byte
}

// enqueue queues m unless the link is ending.
func (l *Link) enqueue(m outMsg) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return l.cause
	}
	l.enqueueLocked(m)
	return nil
}

// enqueueLocked appends m to the send queue and wakes the sender. l.mu is
// held and the link is not closing.
func (l *Link) enqueueLocked(m outMsg) {
	l.outq = append(l.outq, m)
	if len(l.outq) == 1 {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// enqueueReply queues a frame that answers the peer (an ack, a PingAck, a
// ReadReply). Those are driven by the peer, so their number is bounded:
// a peer that makes this node queue more than maxQueuedAcks frames does
// not read its socket, and the link ends. It reports whether m was
// queued (not if the link is ending: the caller keeps m's buffer).
func (l *Link) enqueueReply(m outMsg) bool {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return false
	}
	if !l.enqueueReplyLocked(m) {
		l.mu.Unlock()
		l.tooManyReplies()
		return false
	}
	l.mu.Unlock()
	return true
}

// enqueueReplyLocked is enqueueReply with l.mu held and the link not
// closing; on false (too many answers queued) the caller calls
// tooManyReplies once it released l.mu.
func (l *Link) enqueueReplyLocked(m outMsg) bool {
	if l.replies >= maxQueuedAcks {
		return false
	}
	m.reply = true
	l.replies++
	l.enqueueLocked(m)
	return true
}

func (l *Link) tooManyReplies() {
	l.shutdown(fmt.Errorf("%w: peer %s does not read its socket (%d answers queued)", ErrLinkClosed, l.cfg.Peer, maxQueuedAcks), "", false)
}

// send is the sender goroutine: it takes the whole queue at once and
// writes it with one writev, then completes what the writing completes.
// When the link ends it writes the Goodbye, if one is due, and stops.
func (l *Link) send() {
	defer close(l.sendDone)
	for {
		select {
		case <-l.kick:
		case <-l.stopCh:
		}
		// Yield once before taking the queue: the goroutines that woke
		// us usually have more frames coming (the next writes of a
		// deep queue, the acks of writes completing on other workers),
		// and they join this writev instead of costing one each. It
		// halves the cost of a write at queue depth 32 and costs
		// nothing measurable at depth 1, where nobody else is runnable.
		runtime.Gosched()
		l.mu.Lock()
		if l.closing {
			reason, bye := l.bye, l.sendBye
			l.mu.Unlock()
			if bye {
				l.snd.goodbye.Reason = reason
				err := l.writeBatch([]outMsg{{t: TypeGoodbye}})
				l.mu.Lock()
				l.byeSent = err == nil
				l.mu.Unlock()
			}
			return
		}
		batch := l.outq
		l.outq, l.spare = l.spare[:0], nil
		l.mu.Unlock()
		if len(batch) == 0 {
			l.spare = batch // a kick whose frames an earlier round took
			continue
		}
		if err := l.writeBatch(batch); err != nil {
			l.shutdown(fmt.Errorf("%w: writing to peer %s: %w", ErrLinkClosed, l.cfg.Peer, err), "", false)
			return
		}
		l.afterWrite(batch)
		clear(batch) // drop the references to payloads
		l.spare = batch[:0]
	}
}

// writeBatch encodes the batch into one buffer of headers and fixed
// fields, interleaved with the bulk payloads as separate iovecs, and
// writes it with one writev (net.Buffers), without copying a payload.
func (l *Link) writeBatch(batch []outMsg) error {
	s := &l.snd
	frames, cuts := s.frames[:0], s.cuts[:0]
	for i := range batch {
		var bulk []byte
		var err error
		frames, bulk, err = AppendSplit(frames, l.message(&batch[i]))
		if err != nil {
			return fmt.Errorf("encoding %v: %w", batch[i].t, err) // a bug: Submit checked it
		}
		if len(bulk) > 0 {
			cuts = append(cuts, bulkCut{pos: len(frames), bulk: bulk})
		}
	}
	iov, prev := s.iov[:0], 0
	for _, c := range cuts {
		iov = append(iov, frames[prev:c.pos], c.bulk)
		prev = c.pos
	}
	if prev < len(frames) {
		iov = append(iov, frames[prev:])
	}
	s.wbufs = iov
	_, err := s.wbufs.WriteTo(l.nc)
	clear(cuts)
	clear(iov)
	s.frames, s.cuts, s.iov, s.wbufs = frames, cuts[:0], iov[:0], nil
	return err
}

// message fills the sender's reusable message of m's type.
func (l *Link) message(m *outMsg) Message {
	s := &l.snd
	switch m.t {
	case TypeData:
		s.data = Data{ID: m.id, Epoch: l.epoch.Load(), Offset: m.off, Flags: m.flags, Payload: m.payload}
		if m.flags&DataAllZero != 0 {
			s.data.ZeroLength = m.n
		}
		return &s.data
	case TypeTrim:
		s.trim = Trim{ID: m.id, Epoch: l.epoch.Load(), Offset: m.off, Length: m.n, Flags: m.flags}
		return &s.trim
	case TypeWriteZeroes:
		s.writeZeroes = WriteZeroes{ID: m.id, Epoch: l.epoch.Load(), Offset: m.off, Length: m.n, Flags: m.flags}
		return &s.writeZeroes
	case TypeBarrier:
		s.barrier = Barrier{ID: m.id, Epoch: l.epoch.Load()}
		return &s.barrier
	case TypeBarrierAck:
		s.barrierAck.ID = m.id
		return &s.barrierAck
	case TypeRecvAck:
		s.recvAck.ID = m.id
		return &s.recvAck
	case TypeWriteAck:
		s.writeAck.ID = m.id
		return &s.writeAck
	case TypeNegAck:
		s.negAck = NegAck{ID: m.id, Errno: m.errno}
		return &s.negAck
	case TypeReadRequest:
		s.readRequest = ReadRequest{ID: m.id, Offset: m.off, Length: m.n}
		return &s.readRequest
	case TypeReadReply:
		s.readReply = ReadReply{ID: m.id, Errno: m.errno, Payload: m.payload}
		return &s.readReply
	case TypeBitmap:
		s.bitmap = Bitmap{Offset: m.off, Last: m.last, RLE: m.payload}
		return &s.bitmap
	case TypeSyncUUID:
		s.syncUUID.UUID = m.id
		return &s.syncUUID
	case TypeResyncRequest:
		s.rsRequest = ResyncRequest{ID: m.id, Offset: m.off, Length: m.n, Alg: m.alg, Csum: m.payload}
		return &s.rsRequest
	case TypeResyncReply:
		s.rsReply = ResyncReply{ID: m.id, Status: m.status, Codec: m.codec, Errno: m.errno, Payload: m.payload}
		return &s.rsReply
	case TypeResyncAck:
		s.rsAck = ResyncAck{ID: m.id, Offset: m.off, Length: m.n, Errno: m.errno}
		return &s.rsAck
	case TypeVerifyRequest:
		s.vRequest = VerifyRequest{ID: m.id, Offset: m.off, Length: m.n, Alg: m.alg, Digests: m.payload}
		return &s.vRequest
	case TypeVerifyReply:
		s.vReply = VerifyReply{ID: m.id, Status: m.status, Errno: m.errno, Mismatch: m.payload}
		return &s.vReply
	case TypeState:
		s.state = m.state
		return &s.state
	case TypePing:
		return &s.ping
	case TypePingAck:
		return &s.pingAck
	case TypeGoodbye:
		return &s.goodbye // Reason set by the caller
	}
	panic(fmt.Sprintf("replication: no message for %v in the send queue", m.t))
}

// afterWrite completes what a written batch completes: under protocol A
// the writes, under A and B the flushes; it counts the bytes sent and
// returns payload buffers to the pool.
func (l *Link) afterWrite(batch []outMsg) {
	proto := l.cfg.Protocol
	l.mu.Lock()
	for i := range batch {
		m := &batch[i]
		if m.reply {
			l.replies--
		}
		switch m.t {
		case TypeData, TypeTrim, TypeWriteZeroes:
			if m.t == TypeData {
				l.sentBytes += uint64(m.n)
			}
			if proto == 'A' {
				if e := l.tlog.entryLocked(m.id); e != nil && e.req != nil {
					l.tlog.completeLocked(e, nil)
				}
			}
		case TypeBarrier:
			if proto != 'C' {
				if e := l.tlog.entryLocked(m.id); e != nil && e.req != nil {
					l.tlog.completeLocked(e, nil)
				}
			}
		case TypeReadReply:
			l.servedReads--
			l.servedBytes -= int64(m.n)
		case TypeResyncReply:
			l.resyncSent += uint64(len(m.payload))
		}
	}
	l.mu.Unlock()
	for i := range batch {
		if b := batch[i].buf; b != nil {
			l.ap.pool.Put(b)
		}
	}
}
