// The sync server: the peer's resync and verify requests this node
// answers from its disk, under LockRange, in order with the write path.
// Lock ownership: Link.mu guards syncServer; the applier's
// workers read the disk and queue the answers.

package replication

import (
	"bytes"
	"syscall"

	"github.com/twinblock/twinblock/pkg/disk"
)

// syncServer is the part of a Link that serves the peer's resync and
// verify requests. Link.mu guards it.
type syncServer struct {
	l      *Link
	served []servedSync
	bytes  int64 // their bytes
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

// admit registers a resync or verify request of the peer, or
// returns the violation it is.
func (ss *syncServer) admit(t Type, id, off uint64, n int64) error {
	l := ss.l
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range ss.served {
		if ss.served[i].id == id {
			return violation(t, "ID %d is already in flight", id)
		}
	}
	if len(ss.served) == maxSyncRequests || ss.bytes+n > l.syncBudget {
		return violation(t, "more than %d resync and verify requests or %d bytes outstanding", maxSyncRequests, l.syncBudget)
	}
	ss.served = append(ss.served, servedSync{id: id, off: int64(off), n: n, verify: t == TypeVerifyRequest})
	ss.bytes += n
	return nil
}

// servedLocked returns the index of the served request id, or -1.
func (ss *syncServer) servedLocked(id uint64) int {
	for i := range ss.served {
		if ss.served[i].id == id {
			return i
		}
	}
	return -1
}

func (ss *syncServer) dropLocked(i int) {
	ss.bytes -= ss.served[i].n
	ss.served = append(ss.served[:i], ss.served[i+1:]...)
}

// answer queues m, the answer to the served request m.id. With
// keep (a resync answered with its data, in-sync or zero) the request
// stays until its ResyncAck; otherwise it is done. Both happen under one
// lock, so the ack cannot overtake the bookkeeping.
func (ss *syncServer) answer(m outMsg, keep bool) {
	l := ss.l
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		if m.buf != nil {
			l.ap.pool.Put(m.buf)
		}
		return
	}
	if i := ss.servedLocked(m.id); i >= 0 {
		if keep {
			ss.served[i].replied = true
		} else {
			ss.dropLocked(i)
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
func (ss *syncServer) algMismatch(t Type, theirs, ours DigestAlg) {
	l := ss.l
	if !l.algWarned.Swap(true) {
		l.log.Warn("replication: the peer uses another checksum algorithm; its requests are refused",
			"resource", l.cfg.Resource, "peer", l.cfg.Peer, "request", t, "peer_alg", theirs, "alg", ours)
	}
}

// recvResyncRequest takes a ResyncRequest (this node is the sync source):
// what it cannot serve it answers at once, the rest goes to the applier.
func (ss *syncServer) recvResyncRequest(m *ResyncRequest) error {
	l := ss.l
	op, err := ss.servedOp(TypeResyncRequest, TypeResyncReply, m.ID, m.Offset, m.Length,
		m.Alg, m.Alg == DigestNone || m.Alg == l.cfg.csumsAlg, l.cfg.csumsAlg)
	if op == nil {
		return err
	}
	copy(op.csum[:], m.Csum)
	l.ap.submit(op)
	return nil
}

// recvVerifyRequest takes a VerifyRequest: as recvResyncRequest.
func (ss *syncServer) recvVerifyRequest(m *VerifyRequest) error {
	l := ss.l
	op, err := ss.servedOp(TypeVerifyRequest, TypeVerifyReply, m.ID, m.Offset, m.Length,
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
func (ss *syncServer) servedOp(t, reply Type, id, off uint64, length uint32, alg DigestAlg, algOK bool, ours DigestAlg) (*applyOp, error) {
	l := ss.l
	n := int64(length)
	if n > int64(l.maxPayload) {
		return nil, violation(t, "%d bytes, over the agreed max payload %d", n, l.maxPayload)
	}
	if err := ss.admit(t, id, off, n); err != nil {
		return nil, err
	}
	a := outMsg{t: reply, id: id}
	d := l.cfg.Disk
	switch {
	case !algOK:
		ss.algMismatch(t, alg, ours)
		a.status = StatusAlgMismatch
	case d == nil:
		a.status, a.errno = StatusError, uint32(syscall.EIO)
	case int64(off) > d.Size()-n:
		a.status, a.errno = StatusError, uint32(syscall.EINVAL)
	}
	if a.status != StatusOK {
		ss.answer(a, false)
		return nil, nil
	}
	op := l.ap.acquire()
	if op == nil {
		return nil, nil
	}
	op.kind, op.id, op.off, op.n, op.alg = t, id, int64(off), n, alg
	return op, nil
}

// recvResyncAck takes the target's ResyncAck (this node is the source).
func (ss *syncServer) recvResyncAck(m *ResyncAck) error {
	l := ss.l
	l.mu.Lock()
	i := ss.servedLocked(m.ID)
	if i < 0 || ss.served[i].verify {
		l.mu.Unlock()
		return violation(TypeResyncAck, "ID %d acks no resync request served", m.ID)
	}
	s := ss.served[i]
	switch {
	case !s.replied:
		l.mu.Unlock()
		return violation(TypeResyncAck, "ID %d acked before it was answered", m.ID)
	case s.off != int64(m.Offset) || s.n != int64(m.Length):
		l.mu.Unlock()
		return violation(TypeResyncAck, "ID %d acks %d bytes at %d, the request was %d at %d", m.ID, m.Length, m.Offset, s.n, s.off)
	}
	ss.dropLocked(i)
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

// lockRange calls LockRange, if set.
func (ss *syncServer) lockRange(off, n int64) func() {
	l := ss.l
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
	unlock := l.ss.lockRange(op.off, op.n)
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
		l.ss.answer(m, false)
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
	l.ss.answer(m, true)
}

// serveVerify answers a verify request: under LockRange it reads the
// range, compares each block's digest with the peer's, reports the runs
// that differ to OnVerifyMismatch and queues the mismatch bits.
func (a *applier) serveVerify(op *applyOp) {
	l := a.l
	unlock := l.ss.lockRange(op.off, op.n)
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
		l.ss.answer(m, false)
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
	l.ss.answer(m, false)
}
