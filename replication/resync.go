package replication

import (
	"bytes"
	"fmt"
	"math"
	"sync"
	"syscall"

	"github.com/twinblock/twinblock/pkg/disk"
)

// The resync and online-verify side of a Link: the bitmap exchange, the
// sync UUID, resync requests (the sync target asks, the sync source
// answers, the target acks), and verify requests (VerifyS sends digests,
// the peer compares). docs/wire-protocol.md ("Resync") has the
// conversation.
//
// Bounds, the same on both sides: a node keeps at most maxSyncRequests
// resync and verify requests, of at most syncBudget bytes in total,
// outstanding. A resync request is outstanding on the target from its
// sending until its ResyncAck is queued (or its failure arrived), on the
// source from its arrival until that ack (or the failure) is queued; a
// verify request on both sides until its reply. The target queues the
// ack before it frees the slot, so the ack precedes the next request on
// the wire and the source sees at most the limit: a peer that exceeds
// it is in violation.

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

// servedSync is one resync or verify request of the peer this node serves.
type servedSync struct {
	id      uint64
	off, n  int64
	verify  bool
	replied bool // resync: the data (or in-sync, zero) is queued; the ack is due
}

// resyncRead and verifyRead name the peer's failed reads in errors.
type resyncRead struct{}
type verifyRead struct{}

func (resyncRead) String() string { return "resync read" }
func (verifyRead) String() string { return "verify read" }

// bitmapBound is the largest encoded bitmap accepted for disks of size
// bytes: run-length encoding takes at most one byte per bit, and a bit
// covers at least 4 KiB.
func bitmapBound(size uint64) int64 {
	return int64(min(size/BlockSize+1, MaxFrame)) + bitmapSlack
}

// SendBitmap sends this node's bitmap (bitmap.Bitmap.EncodeRLE output) in
// Bitmap frames of at most MaxPayload bytes, the last one with Last set
// (also when rle is empty: one empty Last chunk). The link copies rle. A
// bitmap bigger than the peer accepts (one byte per 4 KiB of the larger
// disk, plus 64 KiB) fails with ErrBadRequest.
func (l *Link) SendBitmap(rle []byte) error {
	if len(rle) > l.maxBitmap {
		return fmt.Errorf("%w: a bitmap of %d bytes, the peer accepts %d", ErrBadRequest, len(rle), l.maxBitmap)
	}
	rle = bytes.Clone(rle)
	chunk := int(l.maxPayload)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return l.cause
	}
	for off := 0; ; {
		end := min(off+chunk, len(rle))
		l.enqueueLocked(outMsg{t: TypeBitmap, off: uint64(off), payload: rle[off:end], last: end == len(rle)})
		if end == len(rle) {
			return nil
		}
		off = end
	}
}

// SendSyncUUID sends the sync UUID (the source, at resync start); the
// peer's OnSyncUUID gets it.
func (l *Link) SendSyncUUID(uuid uint64) error {
	return l.enqueue(outMsg{t: TypeSyncUUID, id: uuid})
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
	return l.startSync(c, outMsg{t: TypeResyncRequest, off: uint64(off), n: uint32(n), alg: c.alg, payload: c.csum[:c.alg.Size()]})
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
	return l.startSync(c, outMsg{t: TypeVerifyRequest, off: uint64(off), n: uint32(n), alg: alg, payload: buf.B[:len(digests)], buf: buf})
}

// startSync waits for a slot, registers c and queues its request m.
func (l *Link) startSync(c *syncCall, m outMsg) error {
	l.mu.Lock()
	for !l.closing && l.syncCalls.full(c.n, l.syncBudget) {
		l.syncCalls.cond.Wait()
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
	c.id = l.syncCalls.take(c, c.n)
	m.id = c.id
	l.enqueueLocked(m)
	l.mu.Unlock()
	return nil
}

// syncCallLocked returns the outstanding request id, or nil.
func (l *Link) syncCallLocked(id uint64) *syncCall { return l.syncCalls.get(id) }

// releaseSyncLocked frees c's slot; whoever does it calls c's done. False:
// the sweep has it.
func (l *Link) releaseSyncLocked(c *syncCall) bool {
	return l.syncCalls.get(c.id) == c && l.syncCalls.release(c.id)
}

// finishResync completes a resync whose reply arrived: with ack, it
// queues the ResyncAck (errno 0: on the disk or in sync) before it frees
// the slot, then calls done.
func (l *Link) finishResync(c *syncCall, res ResyncResult, ack bool, errno uint32) {
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
	mine := l.releaseSyncLocked(c)
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

// ---- Receiving (the receiver goroutine) ----

// recvBitmap collects the peer's bitmap chunks and hands the whole to
// OnBitmap at the last.
func (l *Link) recvBitmap(m *Bitmap) error {
	got := len(l.bitmap)
	switch {
	case len(m.RLE) > int(l.maxPayload):
		return violation(TypeBitmap, "chunk of %d bytes, over the agreed max payload %d", len(m.RLE), l.maxPayload)
	case m.Offset != uint64(got):
		return violation(TypeBitmap, "chunk at byte %d, expected %d", m.Offset, got)
	case len(m.RLE) == 0 && !m.Last:
		return violation(TypeBitmap, "empty chunk at byte %d that is not the last", m.Offset)
	case got+len(m.RLE) > l.maxBitmap:
		return violation(TypeBitmap, "bitmap of more than %d bytes (one per 4 KiB of the disk, plus %d)", l.maxBitmap, bitmapSlack)
	}
	l.bitmap = append(l.bitmap, m.RLE...)
	if !m.Last {
		return nil
	}
	rle := l.bitmap
	l.bitmap = nil
	if rle == nil {
		rle = []byte{}
	}
	if cb := l.cfg.OnBitmap; cb != nil {
		cb(rle)
	}
	return nil
}

// admitServed registers a resync or verify request of the peer, or
// returns the violation it is.
func (l *Link) admitServed(t Type, id, off uint64, n int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.served {
		if l.served[i].id == id {
			return violation(t, "ID %d is already in flight", id)
		}
	}
	if len(l.served) == maxSyncRequests || l.servedSyncB+n > l.syncBudget {
		return violation(t, "more than %d resync and verify requests or %d bytes outstanding", maxSyncRequests, l.syncBudget)
	}
	l.served = append(l.served, servedSync{id: id, off: int64(off), n: n, verify: t == TypeVerifyRequest})
	l.servedSyncB += n
	return nil
}

// servedLocked returns the index of the served request id, or -1.
func (l *Link) servedLocked(id uint64) int {
	for i := range l.served {
		if l.served[i].id == id {
			return i
		}
	}
	return -1
}

func (l *Link) dropServedLocked(i int) {
	l.servedSyncB -= l.served[i].n
	l.served = append(l.served[:i], l.served[i+1:]...)
}

// answerServed queues m, the answer to the served request m.id. With
// keep (a resync answered with its data, in-sync or zero) the request
// stays until its ResyncAck; otherwise it is done. Both happen under one
// lock, so the ack cannot overtake the bookkeeping.
func (l *Link) answerServed(m outMsg, keep bool) {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		if m.buf != nil {
			l.ap.pool.Put(m.buf)
		}
		return
	}
	if i := l.servedLocked(m.id); i >= 0 {
		if keep {
			l.served[i].replied = true
		} else {
			l.dropServedLocked(i)
		}
	}
	ok := l.enqueueReplyLocked(m)
	l.mu.Unlock()
	if !ok {
		if m.buf != nil {
			l.ap.pool.Put(m.buf)
		}
		l.tooManyReplies()
	}
}

// algMismatch logs, once per link, that the peer's algorithm differs.
func (l *Link) algMismatch(t Type, theirs, ours DigestAlg) {
	if !l.algWarned.Swap(true) {
		l.log.Warn("replication: the peer uses another checksum algorithm; its requests are refused",
			"resource", l.cfg.Resource, "peer", l.cfg.Peer, "request", t, "peer_alg", theirs, "alg", ours)
	}
}

// recvResyncRequest takes a ResyncRequest (this node is the sync source):
// what it cannot serve it answers at once, the rest goes to the applier.
func (l *Link) recvResyncRequest(m *ResyncRequest) error {
	op, err := l.servedOp(TypeResyncRequest, TypeResyncReply, m.ID, m.Offset, m.Length,
		m.Alg, m.Alg == DigestNone || m.Alg == l.cfg.csumsAlg, l.cfg.csumsAlg)
	if op == nil {
		return err
	}
	copy(op.csum[:], m.Csum)
	l.ap.submit(op)
	return nil
}

// recvVerifyRequest takes a VerifyRequest: as recvResyncRequest.
func (l *Link) recvVerifyRequest(m *VerifyRequest) error {
	op, err := l.servedOp(TypeVerifyRequest, TypeVerifyReply, m.ID, m.Offset, m.Length,
		m.Alg, m.Alg == l.cfg.verifyAlg, l.cfg.verifyAlg)
	if op == nil {
		return err
	}
	zb := l.ap.pool.Get(len(m.Digests))
	copy(zb.B, m.Digests)
	op.zbuf, op.zlen = zb, len(m.Digests)
	l.ap.submit(op)
	return nil
}

// servedOp runs the checks a resync and a verify request of the peer
// share (t, answered with reply): the length within the agreed payload,
// the served-request admission, the digest algorithm (algOK, else a
// mismatch answered with StatusAlgMismatch), a disk, the range. It
// returns the applier op to fill and submit; nil with a nil error when
// the request was answered here or the link is ending; a protocol
// violation as the error.
func (l *Link) servedOp(t, reply Type, id, off uint64, length uint32, alg DigestAlg, algOK bool, ours DigestAlg) (*applyOp, error) {
	n := int64(length)
	if n > int64(l.maxPayload) {
		return nil, violation(t, "%d bytes, over the agreed max payload %d", n, l.maxPayload)
	}
	if err := l.admitServed(t, id, off, n); err != nil {
		return nil, err
	}
	a := outMsg{t: reply, id: id}
	d := l.cfg.Disk
	switch {
	case !algOK:
		l.algMismatch(t, alg, ours)
		a.status = StatusAlgMismatch
	case d == nil:
		a.status, a.errno = StatusError, uint32(syscall.EIO)
	case int64(off) > d.Size()-n:
		a.status, a.errno = StatusError, uint32(syscall.EINVAL)
	}
	if a.status != StatusOK {
		l.answerServed(a, false)
		return nil, nil
	}
	op := l.ap.acquire()
	if op == nil {
		return nil, nil
	}
	op.kind, op.id, op.off, op.n, op.alg = t, id, int64(off), n, alg
	return op, nil
}

// recvResyncReply takes the answer to one of this node's Resyncs: a
// failure completes it here; data, zero and in-sync go to the applier,
// which writes and acks them in arrival order with the peer's writes.
func (l *Link) recvResyncReply(m *ResyncReply) error {
	buf, charged := l.rbuf, l.rcharged
	l.rbuf, l.rcharged = nil, 0
	l.mu.Lock()
	c := l.syncCallLocked(m.ID)
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
		l.finishResync(c, ResyncResult{Offset: c.off, Length: c.n, Err: l.peerIOError(resyncRead{}, c.off, c.n, m.Errno)}, false, 0)
		return nil
	case StatusAlgMismatch:
		l.finishResync(c, ResyncResult{Offset: c.off, Length: c.n,
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

// recvResyncAck takes the target's ResyncAck (this node is the source).
func (l *Link) recvResyncAck(m *ResyncAck) error {
	l.mu.Lock()
	i := l.servedLocked(m.ID)
	if i < 0 || l.served[i].verify {
		l.mu.Unlock()
		return violation(TypeResyncAck, "ID %d acks no resync request served", m.ID)
	}
	s := l.served[i]
	switch {
	case !s.replied:
		l.mu.Unlock()
		return violation(TypeResyncAck, "ID %d acked before it was answered", m.ID)
	case s.off != int64(m.Offset) || s.n != int64(m.Length):
		l.mu.Unlock()
		return violation(TypeResyncAck, "ID %d acks %d bytes at %d, the request was %d at %d", m.ID, m.Length, m.Offset, s.n, s.off)
	}
	l.dropServedLocked(i)
	l.mu.Unlock()
	if m.Errno != 0 {
		l.log.Warn("replication: the peer failed a resync write", "resource", l.cfg.Resource, "peer", l.cfg.Peer,
			"offset", s.off, "length", s.n, "errno", syscall.Errno(m.Errno))
	}
	if cb := l.cfg.OnResyncAck; cb != nil {
		cb(s.off, s.n, m.Errno == 0)
	}
	return nil
}

// recvVerifyReply completes one of this node's Verifys.
func (l *Link) recvVerifyReply(m *VerifyReply) error {
	l.mu.Lock()
	c := l.syncCallLocked(m.ID)
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
	l.releaseSyncLocked(c)
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

// ---- Serving and applying (the applier's workers) ----

// lockRange calls LockRange, if set.
func (l *Link) lockRange(off, n int64) func() {
	if l.cfg.LockRange == nil {
		return noUnlock
	}
	if unlock := l.cfg.LockRange(off, n); unlock != nil {
		return unlock
	}
	return noUnlock
}

func noUnlock() {}

// serveResync answers a resync request: under LockRange it reads the
// range and queues, on the same queue as Data, "in sync" (the checksum
// matched), "zero" (all zeroes), the data (compressed if that pays), or
// the read's errno.
func (a *applier) serveResync(op *applyOp) {
	l := a.l
	unlock := l.lockRange(op.off, op.n)
	defer unlock()
	buf := a.pool.Get(int(op.n))
	p := buf.B[:op.n]
	m := outMsg{t: TypeResyncReply, id: op.id}
	if err := a.disk.ReadAt(p, op.off); err != nil {
		a.pool.Put(buf)
		errno, peerFault := errnoOf(err, true)
		if !peerFault {
			a.diskError(op, err)
		}
		m.status, m.errno = StatusError, errno
		l.answerServed(m, false)
		return
	}
	var sum [MaxDigestSize]byte
	switch {
	case op.alg != DigestNone && bytes.Equal(appendDigest(op.alg, sum[:0], p), op.csum[:op.alg.Size()]):
		a.pool.Put(buf)
		m.status = StatusInSync
		l.sameCsum.Add(uint64(blocksOf(op.n)))
	case disk.AllZero(p):
		a.pool.Put(buf)
		m.status = StatusZero
	default:
		m.payload, m.buf = p, buf
		if c := l.syncCodec; c != CodecNone {
			if zb, out, ok := l.compress(c, p); ok {
				a.pool.Put(buf)
				m.payload, m.buf, m.codec = out, zb, c
			}
		}
	}
	l.answerServed(m, true)
}

// serveVerify answers a verify request: under LockRange it reads the
// range, compares each block's digest with the peer's, reports the runs
// that differ to OnVerifyMismatch and queues the mismatch bits.
func (a *applier) serveVerify(op *applyOp) {
	l := a.l
	unlock := l.lockRange(op.off, op.n)
	defer unlock()
	buf := a.pool.Get(int(op.n))
	defer a.pool.Put(buf)
	p := buf.B[:op.n]
	m := outMsg{t: TypeVerifyReply, id: op.id}
	if err := a.disk.ReadAt(p, op.off); err != nil {
		errno, peerFault := errnoOf(err, true)
		if !peerFault {
			a.diskError(op, err)
		}
		m.status, m.errno = StatusError, errno
		l.answerServed(m, false)
		return
	}
	blocks := blocksOf(op.n)
	size := op.alg.Size()
	mask := a.pool.Get(int((blocks + 7) / 8))
	bits := mask.B[:(blocks+7)/8]
	clear(bits)
	theirs := op.zbuf.B[:op.zlen]
	var sum [MaxDigestSize]byte
	run := int64(-1) // first block of the current run of mismatches
	report := func(from, to int64) {
		if cb := l.cfg.OnVerifyMismatch; cb != nil {
			start := op.off + from*BlockSize
			cb(start, min(op.off+to*BlockSize, op.off+op.n)-start)
		}
	}
	for i := range blocks {
		blk := p[i*BlockSize : min((i+1)*BlockSize, op.n)]
		if !bytes.Equal(appendDigest(op.alg, sum[:0], blk), theirs[i*int64(size):(i+1)*int64(size)]) {
			bits[i/8] |= 1 << (i % 8)
			if run < 0 {
				run = i
			}
		} else if run >= 0 {
			report(run, i)
			run = -1
		}
	}
	if run >= 0 {
		report(run, blocks)
	}
	m.payload, m.buf = bits, mask
	l.answerServed(m, false)
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
	l.finishResync(c, res, true, errno)
}

// fail ends the link for a protocol violation found outside the
// receiver (a compressed payload that does not decode).
func (l *Link) fail(err error) {
	l.log.Warn("replication: protocol violation", "resource", l.cfg.Resource, "peer", l.cfg.Peer, "err", err)
	l.shutdown(l.closedError(err), goodbyeReason(err.Error()), true)
}
