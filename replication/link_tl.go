// The transfer log: the write path (Submit: Data, Trim, WriteZeroes,
// Barrier), its Requests and their completion by the peer's acks. An entry
// stays in the log until a BarrierAck covers it; what is left when the
// link ends is reported through OnOutOfSync (endRequests, sweep). Lock
// ownership: Link.mu guards transferLog; the receiver's acks complete
// entries under it.

package replication

import (
	"errors"
	"fmt"
	"math"
	"syscall"

	"github.com/twinblock/twinblock/pkg/disk"
)

// transferLog is the write path's part of a Link: the sequence of Data,
// Trim, WriteZeroes and Barrier IDs, the transfer log of requests not yet
// covered by a BarrierAck, and the Barriers in flight. Link.mu guards it.
type transferLog struct {
	l           *Link
	nextID      uint64        // the write path's sequence (Data, Trim, WriteZeroes, Barrier)
	entries     ring[tlEntry] // the transfer log: entries base, base+1, ...
	base        uint64        // ID of entries' first entry
	barriers    ring[uint64]  // Barriers sent and not yet acked, in order
	pending     int           // Requests not yet complete
	epochWrites int           // writes since the last Barrier
}

// tlEntry is one message of the write path, from Submit until a
// BarrierAck covers it.
type tlEntry struct {
	id     uint64
	op     Op
	off, n int64
	req    *Request // nil once completed (or for a Barrier of the link's own)
	nack   bool     // completed with an error or reported out of sync
}

// Op is the kind of a replicated request.
type Op uint8

// Request is one replicated operation. The caller owns it and may reuse it
// (Submit again) once Wait returned; a Request allocates its completion
// channel on first use only, so reusing it costs nothing.
type Request struct {
	Op     Op
	Offset int64
	// Data is OpWrite's payload, 1..Link.MaxPayload bytes. It must stay
	// valid and unmodified until Wait returns: the link writes it to the
	// socket without copying.
	Data []byte
	// Length is OpTrim's and OpWriteZeroes' size, 1..2^31 bytes (the
	// caller splits bigger ones).
	Length int64
	// Flags: DataFUA (durable on the peer before it is acknowledged),
	// DataFlushBefore, and DataNoHole for OpWriteZeroes. OpFlush takes
	// none.
	Flags DataFlags

	id   uint64
	busy bool // submitted and not yet waited for; touched by the caller's calls only
	done chan error
}

// Submit assigns the next ID of the write path to r, queues it for the
// sender and returns at once; Wait reports the outcome. OpFlush is sent
// as a Barrier. It fails (and Wait then returns the same error) with an
// error wrapping ErrBadRequest for an invalid request, or ErrLinkClosed
// once the link is ending. Submitting a Request that is still in flight
// fails with ErrBadRequest and leaves it alone (its Wait reports the
// earlier submission).
func (l *Link) Submit(r *Request) error {
	if r.done == nil {
		r.done = make(chan error, 1)
	}
	if r.busy {
		return fmt.Errorf("%w: Submit of a request still in flight (ID %d)", ErrBadRequest, r.id)
	}
	select {
	case <-r.done: // the error of a failed Submit nobody waited for
	default:
	}
	m, n, err := l.tlog.requestMsg(r)
	if err != nil {
		r.done <- err
		return err
	}
	if l.dataCodec != CodecNone && m.t == TypeData {
		l.tlog.packData(&m)
	}
	l.mu.Lock()
	if l.closing {
		err := l.cause
		l.mu.Unlock()
		if m.buf != nil {
			l.ap.pool.Put(m.buf)
		}
		r.done <- err
		return err
	}
	l.tlog.nextID++
	m.id, r.id, r.busy = l.tlog.nextID, l.tlog.nextID, true
	l.tlog.entries.push(tlEntry{id: m.id, op: r.Op, off: r.Offset, n: n, req: r})
	l.tlog.pending++
	l.enqueueLocked(m)
	if r.Op == OpFlush {
		l.tlog.barriers.push(m.id)
		l.tlog.epochWrites = 0
	} else {
		l.tlog.epochWrites++
	}
	if l.tlog.epochWrites >= l.cfg.MaxEpochSize { // close the epoch ourselves
		l.tlog.nextID++
		l.tlog.entries.push(tlEntry{id: l.tlog.nextID, op: OpFlush})
		l.tlog.barriers.push(l.tlog.nextID)
		l.enqueueLocked(outMsg{t: TypeBarrier, id: l.tlog.nextID})
		l.tlog.epochWrites = 0
	}
	l.mu.Unlock()
	return nil
}

// requestMsg checks r and returns its message (without ID) and the
// length of the range it covers.
func (tlg *transferLog) requestMsg(r *Request) (outMsg, int64, error) {
	l := tlg.l
	bad := func(format string, args ...any) (outMsg, int64, error) {
		return outMsg{}, 0, fmt.Errorf("%w: %v: %s", ErrBadRequest, r.Op, fmt.Sprintf(format, args...))
	}
	var m outMsg
	var n int64
	allowed := DataFUA | DataFlushBefore
	switch r.Op {
	case OpWrite:
		n = int64(len(r.Data))
		if n == 0 || n > int64(l.maxPayload) {
			return bad("%d bytes, want 1..%d", n, l.maxPayload)
		}
		m = outMsg{t: TypeData, payload: r.Data, n: uint32(n)}
	case OpTrim, OpWriteZeroes:
		n = r.Length
		if n <= 0 || n > MaxZeroLength {
			return bad("length %d, want 1..%d", n, int64(MaxZeroLength))
		}
		m = outMsg{t: TypeTrim, n: uint32(n)}
		need := FeatureTrim
		if r.Op == OpWriteZeroes {
			m.t, need, allowed = TypeWriteZeroes, FeatureWriteZeroes, allowed|DataNoHole
		}
		if l.features&need == 0 {
			return outMsg{}, 0, fmt.Errorf("%w: %v: not executed by both nodes (features %v): %w",
				ErrBadRequest, r.Op, l.features, errors.ErrUnsupported)
		}
	case OpFlush:
		if r.Flags != 0 {
			return bad("flags %v", r.Flags)
		}
		return outMsg{t: TypeBarrier}, 0, nil
	default:
		return bad("unknown operation")
	}
	if r.Offset < 0 || r.Offset > math.MaxInt64-n {
		return bad("offset %d length %d", r.Offset, n)
	}
	if u := r.Flags &^ allowed; u != 0 {
		return bad("flags %v not allowed", u)
	}
	m.off, m.flags = uint64(r.Offset), r.Flags
	return m, n, nil
}

// packData replaces the payload of a Data message by its compressed form
// (or by its length, DataAllZero, when it is all zeroes) if that pays.
// The caller's goroutine does it, so writes compress in parallel.
func (tlg *transferLog) packData(m *outMsg) {
	l := tlg.l
	if disk.AllZero(m.payload) {
		m.flags |= DataAllZero
		m.payload = nil
		return
	}
	if buf, out, ok := l.compress(l.dataCodec, m.payload); ok {
		m.payload, m.buf = out, buf
		m.flags |= codecFlag(l.dataCodec)
	}
}

// complete ends e's request with err. l.mu is held.
func (tlg *transferLog) completeLocked(e *tlEntry, err error) {
	r := e.req
	e.req = nil
	e.nack = err != nil
	tlg.pending--
	r.done <- err // never blocks: cap 1, one value per Submit
}

// entryLocked returns the transfer log's entry for id, or nil.
func (tlg *transferLog) entryLocked(id uint64) *tlEntry {
	if id < tlg.base || id-tlg.base >= uint64(tlg.entries.len()) {
		return nil
	}
	return tlg.entries.at(int(id - tlg.base))
}

// Pending returns how many Requests are submitted and not yet complete,
// and the lowest ID among them (0 if none): a caller's ko-count logic
// watches whether the oldest request moves.
func (l *Link) Pending() (n int, oldest uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.tlog.entries.len() {
		if e := l.tlog.entries.at(i); e.req != nil {
			return l.tlog.pending, e.id
		}
	}
	return l.tlog.pending, 0
}

// recvAck handles RecvAck, WriteAck and NegAck: the peer's answer to one
// of our writes.
func (tlg *transferLog) recvAck(t Type, id uint64, errno uint32) error {
	l := tlg.l
	proto := l.cfg.Protocol
	if (t == TypeRecvAck && proto != 'B') || (t == TypeWriteAck && proto != 'C') {
		return violation(t, "ID %d under protocol %c", id, proto)
	}
	l.mu.Lock()
	e := tlg.entryLocked(id)
	switch {
	case e == nil || e.op == OpFlush:
		l.mu.Unlock()
		return violation(t, "ID %d, which is no write in flight", id)
	case e.req != nil:
		var err error
		if t == TypeNegAck {
			err = l.peerIOError(e.op, e.off, e.n, errno)
		}
		tlg.completeLocked(e, err)
		l.mu.Unlock()
		return nil
	case t != TypeNegAck || proto == 'C' || e.nack:
		l.mu.Unlock()
		return violation(t, "ID %d, already answered", id)
	}
	// Protocol A or B: the write completed already (sent, or RecvAck);
	// the caller must learn that the peer does not have it.
	e.nack = true
	off, n := e.off, e.n
	l.mu.Unlock()
	l.log.Warn("replication: peer failed a completed write", "resource", l.cfg.Resource, "peer", l.cfg.Peer,
		"offset", off, "length", n, "errno", syscall.Errno(errno))
	if cb := l.cfg.OnOutOfSync; cb != nil {
		cb(off, n)
	}
	return nil
}

// recvBarrierAck handles the peer's BarrierAck: everything up to the
// Barrier is durable there, so it leaves the transfer log.
func (tlg *transferLog) recvBarrierAck(id uint64) error {
	l := tlg.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if tlg.barriers.len() == 0 {
		return violation(TypeBarrierAck, "ID %d, no Barrier in flight", id)
	}
	if want := *tlg.barriers.front(); id != want {
		return violation(TypeBarrierAck, "ID %d, expected %d (BarrierAcks come in order)", id, want)
	}
	tlg.barriers.pop()
	for tlg.entries.len() > 0 && tlg.entries.front().id <= id {
		e := tlg.entries.front()
		if e.req != nil {
			// Under A (and for Barriers under B) the sender may not have
			// marked it written yet: the ack says it was.
			if e.op != OpFlush && l.cfg.Protocol != 'A' {
				return violation(TypeBarrierAck, "ID %d before the ack of write %d", id, e.id)
			}
			tlg.completeLocked(e, nil)
		}
		tlg.entries.pop()
		tlg.base++
	}
	return nil
}
