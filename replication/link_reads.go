// The read client: ReadAt reads the peer's disk through the link
// (ReadRequest, ReadReply), with at most maxPeerReads calls and readBudget
// bytes outstanding (slots.go). Lock ownership: Link.mu guards l.rd.calls;
// the receiver completes a call, or endRequests does when the link ends.

package replication

import (
	"fmt"
	"math"
	"sync"
)

// readClient is the read client's part of a Link: this node's ReadAt
// calls waiting for their ReadReply. Link.mu guards it.
type readClient struct {
	l     *Link
	calls slots[readCall]
}

// readCall is one ReadAt waiting for its ReadReply.
type readCall struct {
	id   uint64
	off  int64
	p    []byte
	done chan error
}

var readCalls = sync.Pool{New: func() any { return &readCall{done: make(chan error, 1)} }}

// ReadAt reads len(p) bytes at off from the peer's disk (ReadRequest and
// ReadReply); len(p) must be at most MaxPayload. It blocks while the
// link has 64 reads (or their byte budget) outstanding. It returns nil,
// an error wrapping ErrPeerIO (the peer's read failed), ErrBadRequest or
// ErrLinkClosed.
func (l *Link) ReadAt(p []byte, off int64) error {
	n := int64(len(p))
	if n == 0 {
		return nil
	}
	if n > int64(l.maxPayload) || off < 0 || off > math.MaxInt64-n {
		return fmt.Errorf("%w: read of %d bytes at %d (max %d bytes)", ErrBadRequest, n, off, l.maxPayload)
	}
	c := readCalls.Get().(*readCall)
	l.mu.Lock()
	for !l.closing && l.rd.calls.full(n, l.readBudget) {
		l.rd.calls.cond.Wait()
	}
	if l.closing {
		err := l.cause
		l.mu.Unlock()
		readCalls.Put(c)
		return err
	}
	c.off, c.p = off, p
	c.id = l.rd.calls.take(c, n)
	l.enqueueLocked(outMsg{t: TypeReadRequest, id: c.id, off: uint64(off), n: uint32(n)})
	l.mu.Unlock()
	err := <-c.done
	c.p = nil
	readCalls.Put(c)
	return err
}

// callLocked removes and returns the outstanding read id, or nil.
func (rc *readClient) callLocked(id uint64) *readCall {
	c := rc.calls.get(id)
	if c != nil {
		rc.calls.release(id)
	}
	return c
}

// readOp names a read in errors, as Op names the writes.
type readOp struct{}

// recvReply completes one of our ReadAt calls.
func (rc *readClient) recvReply(m *ReadReply) error {
	l := rc.l
	buf, charged := l.rbuf, l.rcharged
	l.rbuf, l.rcharged = nil, 0
	defer l.ap.release(buf, charged)
	l.mu.Lock()
	c := rc.calls.get(m.ID)
	if c == nil {
		l.mu.Unlock()
		return violation(TypeReadReply, "ID %d answers no read in flight", m.ID)
	}
	if m.Errno == 0 && len(m.Payload) != len(c.p) {
		l.mu.Unlock()
		return violation(TypeReadReply, "ID %d: %d bytes for a read of %d", m.ID, len(m.Payload), len(c.p))
	}
	rc.callLocked(m.ID)
	l.mu.Unlock()
	if m.Errno != 0 {
		c.done <- l.peerIOError(readOp{}, c.off, int64(len(c.p)), m.Errno)
		return nil
	}
	copy(c.p, m.Payload)
	c.done <- nil
	return nil
}
