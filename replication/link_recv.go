package replication

import (
	"errors"
	"fmt"
	"syscall"
)

// errStop ends the receiver without a new cause (the peer's Goodbye set
// it already).
var errStop = errors.New("replication: receiver stopped")

// receive is the receiver goroutine: it decodes frames until the
// connection ends. While the link is ending it goes on reading (and
// dropping what needs work) until the peer closes, so that our Goodbye is
// not destroyed by a reset.
func (l *Link) receive() {
	defer close(l.recvDone)
	err := l.receiveLoop()
	l.ap.release(l.rbuf, l.rcharged)
	l.rbuf, l.rcharged = nil, 0
	switch {
	case errors.Is(err, errStop):
	case errors.Is(err, ErrProtocol):
		l.log.Warn("replication: protocol violation", "resource", l.cfg.Resource, "peer", l.cfg.Peer, "err", err)
		l.shutdown(l.closedError(err), goodbyeReason(err.Error()), true)
	default:
		l.shutdown(l.closedError(err), "", false)
	}
}

func (l *Link) receiveLoop() error {
	for {
		m, err := l.dec.Next()
		if err != nil {
			return err
		}
		l.received.Add(1)
		if err := l.handle(m); err != nil {
			return err
		}
	}
}

// handle acts on one frame from the peer.
func (l *Link) handle(m Message) error {
	switch m := m.(type) {
	case *Data:
		return l.recvWrite(TypeData, m.ID, m.Epoch, m.Offset, int64(len(m.Payload)), m.Flags, m)
	case *Trim:
		return l.recvWrite(TypeTrim, m.ID, m.Epoch, m.Offset, int64(m.Length), m.Flags, nil)
	case *WriteZeroes:
		return l.recvWrite(TypeWriteZeroes, m.ID, m.Epoch, m.Offset, int64(m.Length), m.Flags, nil)
	case *Barrier:
		if err := l.checkSeq(TypeBarrier, m.ID); err != nil {
			return err
		}
		if err := l.admitEpoch(m.Epoch, true); err != nil {
			// A replaced Primary's barrier: nothing it covers is made
			// durable for it, and the connection ends.
			l.shutdown(l.closedError(err), goodbyeReason(err.Error()), true)
			return errStop
		}
		return l.ap.barrier(m.ID)
	case *RecvAck:
		return l.tlog.recvAck(TypeRecvAck, m.ID, 0)
	case *WriteAck:
		return l.tlog.recvAck(TypeWriteAck, m.ID, 0)
	case *NegAck:
		return l.tlog.recvAck(TypeNegAck, m.ID, m.Errno)
	case *BarrierAck:
		return l.tlog.recvBarrierAck(m.ID)
	case *ReadRequest:
		return l.serveRead(m.ID, m.Offset, m.Length)
	case *ReadReply:
		return l.rd.recvReply(m)
	case *Bitmap:
		return l.recvBitmap(m)
	case *SyncUUID:
		if cb := l.cfg.OnSyncUUID; cb != nil {
			cb(m.UUID)
		}
	case *ResyncRequest:
		return l.ss.recvResyncRequest(m)
	case *ResyncReply:
		return l.sc.recvResyncReply(m)
	case *ResyncAck:
		return l.ss.recvResyncAck(m)
	case *VerifyRequest:
		return l.ss.recvVerifyRequest(m)
	case *VerifyReply:
		return l.sc.recvVerifyReply(m)
	case *State:
		if err := l.admitEpoch(m.Epoch, false); err != nil {
			l.shutdown(l.closedError(err), goodbyeReason(err.Error()), true)
			return errStop
		}
		if cb := l.cfg.OnPeerState; cb != nil {
			cb(*m)
		}
		if cb := l.cfg.OnState; cb != nil {
			cb(*m)
		}
	case *Ping:
		l.enqueueReply(outMsg{t: TypePingAck})
	case *PingAck:
		// Counted in Received; that is all a PingAck is for.
	case *Goodbye:
		l.shutdown(fmt.Errorf("%w: peer %s said goodbye: %s", ErrLinkClosed, l.cfg.Peer, m.Reason), "", false)
		return errStop
	default: // Hello, authentication
		return violation(m.Type(), "unexpected after the handshake")
	}
	return nil
}

// getPayload is the decoder's payload buffer source (SetPayloadBuffer):
// Data, ReadReply and ResyncReply payloads land in pooled buffers charged
// to the applier's byte budget. Waiting for budget waits for local disk
// progress only. While the link ends it returns nil (the decoder then
// uses its own buffer and the frame is dropped).
func (l *Link) getPayload(n int) []byte {
	if !l.ap.charge(int64(n)) {
		return nil
	}
	b := l.ap.pool.Get(n)
	l.rbuf, l.rcharged = b, int64(n)
	return b.B
}

// checkSeq enforces the write path's strictly increasing IDs.
func (l *Link) checkSeq(t Type, id uint64) error {
	if id <= l.lastID {
		return violation(t, "ID %d after %d: the write path's IDs must increase", id, l.lastID)
	}
	l.lastID = id
	return nil
}

// recvWrite takes a Data (dm), Trim or WriteZeroes from the peer: it
// answers at once what it cannot execute (NegAck), sends the RecvAck
// under protocol B, and hands the rest to the applier (waiting for a
// free operation: that is the backpressure). A compressed Data travels
// with its compressed payload and a buffer for what it decodes to (the
// applier's worker decodes it); an all-zero Data with no buffer.
func (l *Link) recvWrite(t Type, id, epoch, off uint64, n int64, flags DataFlags, dm *Data) error {
	buf, charged := l.rbuf, l.rcharged
	l.rbuf, l.rcharged = nil, 0
	if err := l.checkSeq(t, id); err != nil {
		l.ap.release(buf, charged)
		return err
	}
	if err := l.admitEpoch(epoch, true); err != nil {
		// A replaced Primary's write (Data, Trim or WriteZeroes):
		// refused before it reaches the disk, and the connection ends.
		l.ap.release(buf, charged)
		if errors.Is(err, ErrStaleEpoch) {
			l.enqueueReply(outMsg{t: TypeNegAck, id: id, errno: uint32(syscall.ESTALE)})
		}
		l.shutdown(l.closedError(err), goodbyeReason(err.Error()), true)
		return errStop
	}
	codec, wire := CodecNone, n
	if t == TypeData {
		if flags&(dataCodecFlags|DataAllZero) != 0 {
			var err error
			if n, err = l.packedLen(dm); err != nil {
				l.ap.release(buf, charged)
				return err
			}
			codec = flags.codec()
		}
		l.recvBytes.Add(uint64(n))
		if n > int64(l.maxPayload) {
			l.ap.release(buf, charged)
			return violation(t, "%d bytes, over the agreed max payload %d", n, l.maxPayload)
		}
		if buf == nil {
			return nil // the link is ending
		}
	}
	var errno syscall.Errno
	d := l.cfg.Disk
	switch {
	case d == nil:
		errno = syscall.EIO
	case t == TypeTrim && l.features&FeatureTrim == 0, t == TypeWriteZeroes && l.features&FeatureWriteZeroes == 0:
		errno = syscall.EOPNOTSUPP
	case int64(off) > d.Size()-n:
		errno = syscall.ENOSPC
	}
	if errno != 0 {
		l.ap.release(buf, charged)
		l.enqueueReply(outMsg{t: TypeNegAck, id: id, errno: uint32(errno)})
		return nil
	}
	if l.cfg.Protocol == 'B' {
		l.enqueueReply(outMsg{t: TypeRecvAck, id: id})
	}
	inflate := codec
	if flags&DataAllZero != 0 && t == TypeData {
		l.ap.release(buf, charged) // the length was all of it
		buf, charged, inflate = nil, 0, CodecNone
	}
	op := l.ap.payloadOp(buf, charged, n, inflate)
	if op == nil {
		return nil
	}
	op.kind, op.id, op.off, op.n, op.flags = t, id, int64(off), n, flags
	op.zlen, op.codec = int(wire), codec
	l.ap.submit(op)
	return nil
}

// packedLen is the length of the write a compressed or all-zero Data
// makes, read from its header (a violation if it does not say).
func (l *Link) packedLen(m *Data) (int64, error) {
	if m.Flags&DataAllZero != 0 {
		return int64(m.ZeroLength), nil
	}
	n, err := decodedLen(m.Flags.codec(), m.Payload)
	if err != nil {
		return 0, violation(TypeData, "ID %d: %v", m.ID, err)
	}
	if n == 0 {
		return 0, violation(TypeData, "ID %d: compressed payload decodes to nothing", m.ID)
	}
	return n, nil
}

// serveRead takes a ReadRequest from the peer.
func (l *Link) serveRead(id, off uint64, length uint32) error {
	n := int64(length)
	if n > int64(l.maxPayload) {
		return violation(TypeReadRequest, "%d bytes, over the agreed max payload %d", n, l.maxPayload)
	}
	// The peer keeps at most maxPeerReads reads and readBudget bytes
	// outstanding. This node counts a read until its reply left the
	// sender, which can be later than the peer received it (and asked
	// again): at most one batch of replies later, so twice the limits
	// hold for an honest peer and still bound this node's memory.
	l.mu.Lock()
	l.servedReads++
	l.servedBytes += n
	over := l.servedReads > 2*maxPeerReads || l.servedBytes > 2*l.readBudget
	l.mu.Unlock()
	if over {
		return violation(TypeReadRequest, "more than %d reads or %d bytes outstanding", maxPeerReads, l.readBudget)
	}
	var errno syscall.Errno
	d := l.cfg.Disk
	switch {
	case d == nil:
		errno = syscall.EIO
	case int64(off) > d.Size()-n:
		errno = syscall.EINVAL
	}
	if errno != 0 {
		l.enqueueReply(outMsg{t: TypeReadReply, id: id, errno: uint32(errno), n: length})
		return nil
	}
	op := l.ap.acquire()
	if op == nil {
		return nil
	}
	op.kind, op.id, op.off, op.n, op.buf = TypeReadRequest, id, int64(off), n, l.ap.pool.Get(int(n))
	l.ap.submit(op)
	return nil
}

func (readOp) String() string { return "read" }
