package node

import (
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/replication"
)

// peerlessDisk is the disk a link writes the peer's writes to. While the
// peer has no disk of its own (a Diskless Primary writing through this
// node), every write it applies is marked out of sync first, under the
// activity log, as DRBD's receive_Data does when pdsk < Inconsistent:
// this node then holds the only copy, and the bitmap is what tells the
// peer's disk, when it comes back behind, which blocks it lacks.
//
// Invariant: a peer write that arrived after a State saying the peer's
// disk has no data is marked before it is applied, and the mark is
// covered by the activity log until the write ended, so it survives a
// crash of this node. (The flag is set on the link's receiver goroutine,
// replication.LinkConfig.OnPeerState, before the frames that followed
// that State are handed to the applier.) Writes that arrived before it
// may be marked too, which costs a resync of those blocks, never data.
type peerlessDisk struct {
	disk.Disk
	md func() *meta.Meta // the attached disk's metadata (nil: none)
	// peerNoData: the peer's last State said its disk has no data.
	peerNoData atomic.Bool
}

// setPeer records the disk state of the peer's State (OnPeerState).
func (p *peerlessDisk) setPeer(st replication.State) {
	p.peerNoData.Store(fsm.DiskState(st.Disk) < fsm.Inconsistent)
}

// MinBlockSize forwards the data area's alignment.
func (p *peerlessDisk) MinBlockSize() int {
	if bs, ok := p.Disk.(interface{ MinBlockSize() int }); ok {
		return bs.MinBlockSize()
	}
	return 1
}

// WriteAt implements disk.Disk.
func (p *peerlessDisk) WriteAt(b []byte, off int64, fua bool) error {
	return p.marked(off, int64(len(b)), func() error { return p.Disk.WriteAt(b, off, fua) })
}

// Trim implements disk.Disk.
func (p *peerlessDisk) Trim(off, n int64, fua bool) error {
	return p.marked(off, n, func() error { return p.Disk.Trim(off, n, fua) })
}

// WriteZeroes implements disk.Disk.
func (p *peerlessDisk) WriteZeroes(off, n int64, noHole, fua bool) error {
	return p.marked(off, n, func() error { return p.Disk.WriteZeroes(off, n, noHole, fua) })
}

func (p *peerlessDisk) marked(off, n int64, write func() error) error {
	md := p.md()
	if !p.peerNoData.Load() || md == nil {
		return write() // (no metadata: no disk either, the write fails)
	}
	if err := md.BeginWrite(off, n); err != nil {
		return err
	}
	defer md.EndWrite(off, n)
	md.MarkOutOfSync(off, n)
	return write()
}

// swapDisk is the disk a link uses: the resource's attached data area at
// the time of each operation, never a closed one. A link outlives disks:
// a Primary's disk fails and it carries on through the link; the disk it
// attaches again is resynced in place over that same link (fsm:
// attached, WFBitMapT), which must write the resync's answers to the new
// disk without reconnecting (that would leave the Primary without data
// meanwhile). With no disk, every operation fails and its size is 0 (the
// link answers the peer with errors, as for a diskless node).
//
// Invariant: once a disk returned an I/O error (fail), the link does no
// more I/O on it, reads included: it may lack writes that failed on it
// and were acknowledged through the peer, and a resync read served from
// it would carry the stale block back to the peer, over the only copy of
// the write (torture seed 13543028146989035362: a SyncSource Primary's
// failed write, taken by its SyncTarget, was overwritten there by the
// resync's read of the failed disk). DRBD answers a resync request
// negatively unless its disk is UpToDate; a failed disk is D_FAILED at
// once. fail runs before the failed request is answered, under its range
// lock, so every later resync read of that range sees it.
type swapDisk struct {
	d       atomic.Pointer[diskRef]
	written *atomic.Uint64 // bytes written, trimmed or zeroed through it (nil: not counted)
}

// count adds n bytes to the written counter after a successful write.
func (l *swapDisk) count(n int64, err error) error {
	if err == nil && l.written != nil {
		l.written.Add(uint64(n))
	}
	return err
}

type diskRef struct {
	disk.Disk
	md     *meta.Meta  // the attachment it belongs to
	failed atomic.Bool // an I/O error was seen on it
}

var (
	// errNoDisk: the node attached no disk since the link came up.
	errNoDisk = fmt.Errorf("node: no disk attached: %w", syscall.EIO)
	// errFailedDisk: the attached disk failed and is being detached.
	errFailedDisk = fmt.Errorf("node: the local disk failed (on-io-error detach): %w", syscall.EIO)
)

// set makes d (nil: none), the data area of the attachment md, the disk
// the link uses from now on.
func (l *swapDisk) set(d disk.Disk, md *meta.Meta) {
	if d == nil {
		l.d.Store(nil)
		return
	}
	l.d.Store(&diskRef{Disk: d, md: md})
}

// fail records an I/O error on the disk of attachment md: the link uses
// it no more. An error of an earlier attachment changes nothing.
func (l *swapDisk) fail(md *meta.Meta) {
	if r := l.d.Load(); r != nil && r.md == md {
		r.failed.Store(true)
	}
}

func (l *swapDisk) get() (disk.Disk, error) {
	r := l.d.Load()
	switch {
	case r == nil:
		return nil, errNoDisk
	case r.failed.Load():
		return nil, errFailedDisk
	}
	return r.Disk, nil
}

// Size implements disk.Disk.
func (l *swapDisk) Size() int64 {
	if r := l.d.Load(); r != nil {
		return r.Size()
	}
	return 0
}

// ReadOnly implements disk.Disk.
func (l *swapDisk) ReadOnly() bool { return false }

// MinBlockSize forwards the data area's alignment.
func (l *swapDisk) MinBlockSize() int {
	if r := l.d.Load(); r != nil {
		if bs, ok := r.Disk.(interface{ MinBlockSize() int }); ok {
			return bs.MinBlockSize()
		}
	}
	return 1
}

// ReadAt implements disk.Disk.
func (l *swapDisk) ReadAt(p []byte, off int64) error {
	d, err := l.get()
	if err != nil {
		return err
	}
	return d.ReadAt(p, off)
}

// WriteAt implements disk.Disk.
func (l *swapDisk) WriteAt(p []byte, off int64, fua bool) error {
	d, err := l.get()
	if err != nil {
		return err
	}
	return l.count(int64(len(p)), d.WriteAt(p, off, fua))
}

// Flush implements disk.Disk.
func (l *swapDisk) Flush() error {
	d, err := l.get()
	if err != nil {
		// Writes applied before a detach may not be durable: a Barrier
		// must not be acknowledged as if they were.
		return err
	}
	return d.Flush()
}

// Trim implements disk.Disk.
func (l *swapDisk) Trim(off, n int64, fua bool) error {
	d, err := l.get()
	if err != nil {
		return err
	}
	return l.count(n, d.Trim(off, n, fua))
}

// WriteZeroes implements disk.Disk.
func (l *swapDisk) WriteZeroes(off, n int64, noHole, fua bool) error {
	d, err := l.get()
	if err != nil {
		return err
	}
	return l.count(n, d.WriteZeroes(off, n, noHole, fua))
}

// Close implements disk.Disk; the resource closes the real disk.
func (l *swapDisk) Close() error { return nil }
