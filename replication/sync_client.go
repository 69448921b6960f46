// The sync client: this node's resync and verify requests (a sync target
// pulls, a verify source asks for digests), at most maxSyncRequests and
// syncBudget bytes outstanding (slots.go). Lock ownership: Link.mu guards
// syncClient; whoever releases a call's slot (releaseLocked) calls
// its done, the receiver or the sweep.

package replication

import (
	"fmt"
	"math"
	"sync"
)

// syncClient is the part of a Link that carries this node's resync and
// verify requests (ResyncRequest, VerifyRequest) and their replies.
// Link.mu guards it.
type syncClient struct {
	l     *Link
	calls slots[syncCall]
}

// ResyncResult is the outcome of one Resync.
type ResyncResult struct {
	Offset, Length int64
	InSync         bool  // a checksum request found the ranges identical: nothing was written
	Zero           bool  // the source's range was all zeros: written with WriteZeroes, no payload crossed
	Wire           int64 // payload bytes that crossed the wire for it (after compression)
	// Err is nil when the range is on this node's disk (written, or in
	// sync); else it wraps ErrPeerIO (the source could not read it),
	// ErrAlgMismatch (the source uses another csums-alg), a local write
	// error (also reported to OnDiskError), or ErrLinkClosed (the link
	// ended first; the range may or may not have been written).
	Err error
}

// VerifyResult is the outcome of one Verify.
type VerifyResult struct {
	Offset, Length int64
	// Mismatch: bit i (LSB first in byte i/8) set means block i (4 KiB)
	// of the range differs. Valid during the callback only.
	Mismatch []byte
	// Err wraps ErrPeerIO (the peer could not read its range),
	// ErrAlgMismatch (it uses another verify-alg) or ErrLinkClosed.
	Err error
}

// syncCall is one Resync or Verify of this node waiting for its answer.
type syncCall struct {
	id       uint64
	verify   bool
	off, n   int64
	alg      DigestAlg
	csum     [MaxDigestSize]byte
	answered bool // its reply arrived: whoever handles the reply finishes it
	rsDone   func(ResyncResult)
	vDone    func(VerifyResult)
}

var syncCallPool = sync.Pool{New: func() any { return new(syncCall) }}

// fail completes c with err.
func (c *syncCall) fail(err error) {
	if c.verify {
		c.vDone(VerifyResult{Offset: c.off, Length: c.n, Err: err})
	} else {
		c.rsDone(ResyncResult{Offset: c.off, Length: c.n, Err: err})
	}
}

// Resync (on the sync target) asks the peer for [off, off+n), n ≤
// MaxPayload(), and writes the answer to cfg.Disk through the applier,
// so it is ordered with the peer's writes exactly as a Data frame
// arriving at that point would be (later overlapping Data lands after
// it; earlier overlapping Data before it). With a non-nil csum (the
// digest of the local range under CsumsAlg, see Digest) the source
// compares first and answers "in sync" without data when it matches.
// After the write (or in-sync), the link queues a ResyncAck to the peer
// and then calls done once, from a link goroutine; done must not block.
// Resync writes belong to no epoch: a Barrier does not wait for them,
// and they are durable after the next flush.
//
// It blocks while 32 resync and verify requests (or 16 MiB of them, or
// MaxPayload if bigger) are outstanding. It fails with ErrBadRequest (a
// diskless node, a range outside this node's disk or over MaxPayload, a
// checksum without CsumsAlg or of the wrong size) or with the link's
// cause once it is ending; done is not called then.
func (l *Link) Resync(off, n int64, csum []byte, done func(ResyncResult)) error {
	d := l.cfg.Disk
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: resync of %d bytes at %d: %s", ErrBadRequest, n, off, fmt.Sprintf(format, args...))
	}
	switch {
	case done == nil:
		return bad("no done func")
	case d == nil:
		return bad("this node is diskless")
	case n <= 0 || n > int64(l.maxPayload) || off < 0 || off > d.Size()-n:
		return bad("want 1..%d bytes within the disk's %d", l.maxPayload, d.Size())
	case csum != nil && l.cfg.csumsAlg == DigestNone:
		return bad("a checksum, but no csums-alg")
	case csum != nil && len(csum) != l.cfg.csumsAlg.Size():
		return bad("a checksum of %d bytes, %v makes %d", len(csum), l.cfg.csumsAlg, l.cfg.csumsAlg.Size())
	}
	c := syncCallPool.Get().(*syncCall)
	*c = syncCall{off: off, n: n, rsDone: done}
	if csum != nil {
		c.alg = l.cfg.csumsAlg
		copy(c.csum[:], csum)
	}
	return l.sc.start(c, outMsg{t: TypeResyncRequest, off: uint64(off), n: uint32(n), alg: c.alg, payload: c.csum[:c.alg.Size()]})
}

// Verify (on VerifyS) sends the per-4-KiB digests of [off, off+n) of this
// node's disk (under VerifyAlg, concatenated, one per block, the last
// block may be short; see Digest) and returns; n ≤ MaxPayload(). The
// peer reads its own range (under LockRange), compares block by block,
// calls its OnVerifyMismatch for the differing runs, and answers with
// the mismatch bitmask; done is called once, from a link goroutine, and
// must not block. The link copies digests. It blocks and fails as
// Resync does (ErrBadRequest: no VerifyAlg, a bad range, digests of the
// wrong size).
func (l *Link) Verify(off, n int64, digests []byte, done func(VerifyResult)) error {
	alg := l.cfg.verifyAlg
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: verify of %d bytes at %d: %s", ErrBadRequest, n, off, fmt.Sprintf(format, args...))
	}
	switch {
	case done == nil:
		return bad("no done func")
	case alg == DigestNone:
		return bad("no verify-alg")
	case n <= 0 || n > int64(l.maxPayload) || off < 0 || off > math.MaxInt64-n:
		return bad("want 1..%d bytes", l.maxPayload)
	case int64(len(digests)) != blocksOf(n)*int64(alg.Size()):
		return bad("%d bytes of digests, want %d %v digests of %d bytes", len(digests), blocksOf(n), alg, alg.Size())
	}
	buf := l.ap.pool.Get(len(digests))
	copy(buf.B, digests)
	c := syncCallPool.Get().(*syncCall)
	*c = syncCall{verify: true, off: off, n: n, alg: alg, vDone: done}
	return l.sc.start(c, outMsg{t: TypeVerifyRequest, off: uint64(off), n: uint32(n), alg: alg, payload: buf.B[:len(digests)], buf: buf})
}

// start waits for a slot, registers c and queues its request m.
func (sc *syncClient) start(c *syncCall, m outMsg) error {
	l := sc.l
	l.mu.Lock()
	for !l.closing && sc.calls.full(c.n, l.syncBudget) {
		sc.calls.cond.Wait()
	}
	if l.closing {
		err := l.cause
		l.mu.Unlock()
		if m.buf != nil {
			l.ap.pool.Put(m.buf)
		}
		syncCallPool.Put(c)
		return err
	}
	c.id = sc.calls.take(c, c.n)
	m.id = c.id
	l.enqueueLocked(m)
	l.mu.Unlock()
	return nil
}

// callLocked returns the outstanding request id, or nil.
func (sc *syncClient) callLocked(id uint64) *syncCall { return sc.calls.get(id) }

// releaseLocked frees c's slot; whoever does it calls c's done. False:
// the sweep has it.
func (sc *syncClient) releaseLocked(c *syncCall) bool {
	return sc.calls.get(c.id) == c && sc.calls.release(c.id)
}

// finishResync completes a resync whose reply arrived: with ack, it
// queues the ResyncAck (errno 0: on the disk or in sync) before it frees
// the slot, then calls done.
func (sc *syncClient) finishResync(c *syncCall, res ResyncResult, ack bool, errno uint32) {
	l := sc.l
	overflow := false
	l.mu.Lock()
	if ack {
		switch {
		case l.closing:
			if res.Err == nil {
				res.Err = l.cause
			}
		case !l.enqueueReplyLocked(outMsg{t: TypeResyncAck, id: c.id, off: uint64(c.off), n: uint32(c.n), errno: errno}):
			overflow = true
		}
	}
	mine := sc.releaseLocked(c)
	l.mu.Unlock()
	if overflow {
		l.tooManyReplies()
		if res.Err == nil {
			res.Err = l.Err()
		}
	}
	if mine {
		c.rsDone(res)
		syncCallPool.Put(c)
	}
}

// recvResyncReply takes the answer to one of this node's Resyncs: a
// failure completes it here; data, zero and in-sync go to the applier,
// which writes and acks them in arrival order with the peer's writes.
func (sc *syncClient) recvResyncReply(m *ResyncReply) error {
	l := sc.l
	buf, charged := l.rbuf, l.rcharged
	l.rbuf, l.rcharged = nil, 0
	l.mu.Lock()
	c := sc.callLocked(m.ID)
	if c == nil || c.verify || c.answered {
		l.mu.Unlock()
		l.ap.release(buf, charged)
		return violation(TypeResyncReply, "ID %d answers no resync request in flight", m.ID)
	}
	c.answered = true
	l.mu.Unlock()
	wire := int64(len(m.Payload))
	l.resyncRecv.Add(uint64(wire))
	switch m.Status {
	case StatusError:
		sc.finishResync(c, ResyncResult{Offset: c.off, Length: c.n, Err: l.peerIOError(resyncRead{}, c.off, c.n, m.Errno)}, false, 0)
		return nil
	case StatusAlgMismatch:
		sc.finishResync(c, ResyncResult{Offset: c.off, Length: c.n,
			Err: fmt.Errorf("%w: peer %s does not use %v", ErrAlgMismatch, l.cfg.Peer, c.alg)}, false, 0)
		return nil
	case StatusInSync:
		if c.alg == DigestNone {
			return violation(TypeResyncReply, "ID %d: in sync, but the request carried no checksum", m.ID)
		}
	case StatusOK:
		got := wire
		if m.Codec != CodecNone {
			var err error
			if got, err = decodedLen(m.Codec, m.Payload); err != nil {
				l.ap.release(buf, charged)
				return violation(TypeResyncReply, "ID %d: %v", m.ID, err)
			}
		}
		if got != c.n {
			l.ap.release(buf, charged)
			return violation(TypeResyncReply, "ID %d: %d bytes (%v) for a request of %d", m.ID, got, m.Codec, c.n)
		}
		if buf == nil {
			return nil // the link is ending (the sweep completes c)
		}
	}
	op := l.ap.payloadOp(buf, charged, c.n, m.Codec)
	if op == nil {
		return nil
	}
	op.kind, op.id, op.off, op.n = TypeResyncReply, m.ID, c.off, c.n
	op.zlen = int(wire)
	op.status, op.wire, op.call = m.Status, wire, c
	l.ap.submit(op)
	return nil
}

// recvVerifyReply completes one of this node's Verifys.
func (sc *syncClient) recvVerifyReply(m *VerifyReply) error {
	l := sc.l
	l.mu.Lock()
	c := sc.callLocked(m.ID)
	if c == nil || !c.verify {
		l.mu.Unlock()
		return violation(TypeVerifyReply, "ID %d answers no verify request in flight", m.ID)
	}
	if m.Status == StatusOK {
		blocks := blocksOf(c.n)
		if want := (blocks + 7) / 8; int64(len(m.Mismatch)) != want {
			l.mu.Unlock()
			return violation(TypeVerifyReply, "ID %d: %d bytes of mismatch bits for %d blocks", m.ID, len(m.Mismatch), blocks)
		}
		if rest := blocks % 8; rest != 0 && m.Mismatch[len(m.Mismatch)-1]>>rest != 0 {
			l.mu.Unlock()
			return violation(TypeVerifyReply, "ID %d: mismatch bits past block %d", m.ID, blocks)
		}
	}
	sc.releaseLocked(c)
	l.mu.Unlock()
	res := VerifyResult{Offset: c.off, Length: c.n}
	switch m.Status {
	case StatusOK:
		res.Mismatch = m.Mismatch
	case StatusError:
		res.Err = l.peerIOError(verifyRead{}, c.off, c.n, m.Errno)
	default:
		res.Err = fmt.Errorf("%w: peer %s does not use %v", ErrAlgMismatch, l.cfg.Peer, c.alg)
	}
	c.vDone(res)
	syncCallPool.Put(c)
	return nil
}

// writeResync applies the answer to one of this node's Resyncs, in its
// place among the peer's writes, then acks and completes it.
func (a *applier) writeResync(op *applyOp) {
	l, c := a.l, op.call
	res := ResyncResult{Offset: c.off, Length: c.n, Wire: op.wire}
	var err error
	switch op.status {
	case StatusInSync:
		res.InSync = true
	case StatusZero:
		res.Zero = true
		err = a.disk.WriteZeroes(op.off, op.n, true, false)
	default:
		if op.zbuf != nil {
			if derr := decompress(op.codec, op.buf.B[:op.n], op.zbuf.B[:op.zlen]); derr != nil {
				l.fail(violation(TypeResyncReply, "ID %d: %v", op.id, derr))
				return // the sweep completes c
			}
		}
		err = a.disk.WriteAt(op.buf.B[:op.n], op.off, false)
	}
	var errno uint32
	if err != nil {
		var peerFault bool
		errno, peerFault = errnoOf(err, false)
		if !peerFault {
			a.diskError(op, err)
		}
		res.Err = fmt.Errorf("replication: resync write of %d bytes at %d: %w", op.n, op.off, err)
	}
	l.sc.finishResync(c, res, true, errno)
}
