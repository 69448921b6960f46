package node

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/replication"
)

// ioPath is what the data path uses, swapped as a whole when the state
// machine publishes a new IOMode.
type ioPath struct {
	mode fsm.IOMode
	data disk.Disk         // the data area of the local disk (nil if none)
	md   *meta.Meta        // its metadata (nil if none)
	link *replication.Link // the established peer link (nil if none)
}

// device is the replicated block device a Primary exports over NBD. It
// implements nbd.Device.
//
// Invariant (the data-path half of "never lose an acknowledged write"):
// a write is acknowledged only if
//
//	(a) it completed on the local disk and the peer acknowledged every
//	    piece of it as its protocol requires (C: completed on the
//	    peer's disk), or
//	(b) it completed on the local disk, which is UpToDate and has not
//	    failed another request, the peer did not take it (no
//	    connection, or the link refused or failed it), on a quorum
//	    resource the group committed that the peer is Outdated at this
//	    node's epoch (outdatePeer),
//	    and its blocks are marked out of sync in the bitmap while the
//	    activity log covers them, so the mark survives a crash
//	    (meta.BeginWrite .. EndWrite), or
//	(c) the local disk is gone (Diskless Primary) or failed the write,
//	    the peer's disk is UpToDate, and the peer acknowledged it under
//	    protocol C semantics.
//
// A write that meets none of these fails with EIO. Overlapping writes are
// serialized (rangeLock), so both disks see them in the same order.
//
// Invariant (the honest status): while the state machine says Connected
// with the peer's disk UpToDate, outside a resync, every acknowledged
// application write is on the peer. So before (b) marks a write that
// was mirrored (the link was in the path and refused or failed it), it
// fences: the state machine steps PeerWriteFailed and leaves the
// connected states (fence returns only once it has), and only then are
// the blocks marked. The marks therefore never appear behind a
// Connected, UpToDate/UpToDate status: the status is a snapshot taken
// by the state machine's goroutine, after the step.
//
// The same holds for the local disk: a write acknowledged through the
// peer although its local half failed (on-io-error detach) waits for
// fenceDisk, so the state machine has left UpToDate for this disk, and
// the status says so, before the client hears of it; and such writes
// are recorded (missed), so the disk, when attached again, is resynced
// in full.
//
// A write is sent to the peer in pieces of at most Link.MaxPayload
// bytes, all submitted before any is waited for (the link keeps their
// order); it is acknowledged under (a) only if every piece was.
//
// Mode changes take mu for writing, which waits for the requests in
// flight: after setPath returns, no request uses the old path. Requests
// hold mu for reading; no lock is held across a network round trip
// except this read lock, which only a mode change waits for (and the
// resource serves fences while it waits, see Resource.await).
type device struct {
	mu      sync.RWMutex
	path    ioPath
	size    int64
	ranges  *rangeLock
	reqs    sync.Pool
	onError func(*meta.Meta, error) // posts evDiskFailed for the disk of md; never blocks
	// fence makes the state machine stop counting on link (see the
	// honest-status invariant) and returns once it has; nil in tests
	// of the device alone.
	fence func(link *replication.Link, err error)
	// fenceDisk makes the state machine take in the failure of the
	// local disk of md and returns once it has (and the status shows
	// it); nil in tests of the device alone.
	fenceDisk func(md *meta.Meta, err error)
	// linkLeft reports whether the state machine stopped counting on
	// link (it fenced or closed it); nil in tests of the device alone.
	linkLeft func(link *replication.Link) bool
	// outdatePeer, set on a quorum resource, returns once the group
	// committed that the peer is Outdated at this node's epoch (nil:
	// no quorum, nothing to ask); an error refuses a write under (b).
	outdatePeer func() error
	// quorate, set on a quorum resource, reports whether this node is in
	// a majority of its group now; without, a request fails with EIO
	// (on-no-quorum io-error) or is held (suspendNoQuorum). Nil: no
	// quorum.
	quorate func() bool
	// suspendNoQuorum is on-no-quorum suspend-io: a request that finds
	// this node out of quorum is held, not started, until the node is
	// quorate again (then it runs, under the fences of a request made
	// now), the device stops serving (a demotion, the group's
	// replacement of this Primary: it fails as not Primary), or stop
	// closes (it fails with EIO). held counts the requests held now.
	suspendNoQuorum atomic.Bool
	stop            <-chan struct{}
	held            atomic.Int64
	// userSuspended is drbdadm suspend-io: every request is held, as
	// for want of quorum, until resume-io (or the device stops serving).
	userSuspended atomic.Bool
	// serving mirrors path.mode.Serve for readers that must not wait
	// for mu (the status: a mode change may be waiting for requests).
	serving atomic.Bool
	stats   *counters
	// failed: the local disk of the current path returned an error
	// (on-io-error detach): reads go to the peer until the disk is
	// detached (setPath without it clears it).
	failed atomic.Bool
	// missed: a write was acknowledged that no local disk holds (the
	// local write failed, or there was no local disk, and the peer took
	// it). The next attach hands it to the state machine
	// (fsm.Attached.Missed), which resyncs that disk in full.
	missed atomic.Bool
	// localWrites counts the writes completed (or failed) on the local
	// disk; flushedThrough is localWrites as it stood when the last good local
	// flush began. lostUnflushed: a disk was detached after a failure
	// with writes it may not have made durable (localWrites ahead of
	// flushedThrough); a FLUSH the peer alone answers from then on
	// vouches for writes that disk may lose in a power loss, so it sets
	// missed (torture seed 10556883278662386598: the restarted Primary's
	// disk, trusted, had lost a TRIM acknowledged before such a FLUSH).
	localWrites, flushedThrough atomic.Uint64
	lostUnflushed               atomic.Bool
}

func newDevice(onError func(*meta.Meta, error), stats *counters) *device {
	d := &device{ranges: newRangeLock(), onError: onError, stats: stats}
	d.reqs.New = func() any { return new(replication.Request) }
	return d
}

// setPath installs a new I/O path after the requests in flight on the old
// one finished.
func (d *device) setPath(p ioPath, size int64) {
	d.mu.Lock()
	if p.data == nil {
		if d.path.data != nil {
			d.diskGone()
		}
		d.failed.Store(false)
	}
	d.path = p
	d.size = size
	d.serving.Store(p.mode.Serve)
	d.mu.Unlock()
}

var (
	errNotPrimary = fmt.Errorf("node: not Primary: %w", syscall.EROFS)
	errNoData     = fmt.Errorf("node: no UpToDate data reachable (local disk gone, peer unreachable): %w", syscall.EIO)
	errNoQuorum   = fmt.Errorf("node: no quorum (on-no-quorum io-error): %w", syscall.EIO)
)

func (d *device) Size() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.size
}

func (d *device) ReadOnly() bool { return false }

// holdEvery paces a held request's look at the quorum (suspendNoQuorum).
const holdEvery = 5 * time.Millisecond

// enter admits one request: it returns the path with mu held for
// reading, or an error with mu not held: the node does not serve
// (errNotPrimary), or it is out of quorum (errNoQuorum, at once under
// on-no-quorum io-error; under suspend-io only once the device stops).
// While suspend-io (the verb) is in force every request is held. A
// held request holds no lock, so a mode change never waits for it.
func (d *device) enter() (ioPath, error) {
	for counted := false; ; {
		d.mu.RLock()
		path := d.path
		user := d.userSuspended.Load()
		switch {
		case !path.mode.Serve:
			d.mu.RUnlock()
			if counted {
				d.held.Add(-1)
			}
			return path, errNotPrimary
		case !user && (d.quorate == nil || d.quorate()):
			if counted {
				d.held.Add(-1)
			}
			return path, nil
		}
		d.mu.RUnlock()
		if !user && !d.suspendNoQuorum.Load() {
			return path, errNoQuorum
		}
		if !counted {
			counted = true
			d.held.Add(1)
		}
		t := time.NewTimer(holdEvery)
		select {
		case <-d.stop:
			t.Stop()
			d.held.Add(-1)
			return path, errNoQuorum
		case <-t.C:
		}
	}
}

// suspended reports whether requests are held for want of quorum now
// (DRBD 9's suspended:quorum): under on-no-quorum suspend-io, serving
// and out of quorum.
func (d *device) suspended() bool {
	if !d.suspendNoQuorum.Load() || d.quorate == nil || d.quorate() {
		return false
	}
	return d.serving.Load()
}

// suspendedWhy is DRBD 9's list of reasons requests are held now ("":
// none): user (suspend-io), quorum.
func (d *device) suspendedWhy() string {
	var why []string
	if d.userSuspended.Load() {
		why = append(why, "user")
	}
	if d.suspended() {
		why = append(why, "quorum")
	}
	return strings.Join(why, ",")
}

// observe records a request's latency, from start until now.
func (d *device) observe(op int, start time.Time) {
	d.stats.lat[op].Observe(time.Since(start))
}

func (d *device) ReadAt(p []byte, off int64) error {
	defer d.observe(latRead, time.Now())
	path, err := d.enter()
	if err != nil {
		return err
	}
	defer d.mu.RUnlock()
	if path.mode.ReadDirtyFromPeer && path.md != nil && outOfSync(path.md, off, int64(len(p))) {
		// A sync target: this range is not resynced yet; the peer has
		// it. Without the link (it just ended, the new mode follows)
		// nothing here holds it.
		if path.link == nil {
			return errNoData
		}
		return readThrough(path.link, p, off)
	}
	// Local data serves reads only if UpToDate (a sync target's clean
	// blocks came through ReadDirtyFromPeer above): an Inconsistent
	// disk without its UpToDate peer holds stale blocks, and DRBD fails
	// the I/O instead of returning them.
	if path.mode.Local && !path.mode.PeerReads && (path.mode.UpToDate || path.mode.ReadDirtyFromPeer) && !d.failed.Load() {
		err := path.data.ReadAt(p, off)
		if err == nil {
			d.stats.diskRead.Add(uint64(len(p)))
			return nil
		}
		d.localError(path, err)
		if path.mode.PassOn || path.link == nil || !path.mode.PeerUpToDate {
			return err
		}
		// on-io-error detach: the peer has the data.
	}
	if path.link == nil || !path.mode.PeerUpToDate {
		// No disk here, or a failed one, and the peer's is not UpToDate
		// (an Inconsistent sync target holds stale blocks): no data is
		// accessible, and DRBD fails the read.
		return errNoData
	}
	return readThrough(path.link, p, off)
}

func readThrough(l *replication.Link, p []byte, off int64) error {
	max := int(l.MaxPayload())
	for len(p) > 0 {
		n := min(len(p), max)
		if err := l.ReadAt(p[:n], off); err != nil {
			return fmt.Errorf("node: read through the peer: %w: %w", err, syscall.EIO)
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (d *device) localError(path ioPath, err error) {
	if !path.mode.PassOn {
		// From now on the data path uses the peer, before the state
		// machine has even heard of the failure: a write acknowledged
		// through the peer must not be read back stale from this disk
		// (found by the torture test, seed 1796505021171629551).
		d.failed.Store(true)
		if d.onError != nil {
			d.onError(path.md, err)
		}
	}
}

func (d *device) WriteAt(p []byte, off int64, fua bool) error {
	defer d.observe(latWrite, time.Now())
	flags := replication.DataFlags(0)
	if fua {
		flags |= replication.DataFUA
	}
	return d.mutate(replication.OpWrite, p, off, int64(len(p)), flags, func(data disk.Disk) error {
		return data.WriteAt(p, off, fua)
	})
}

func (d *device) Trim(off, n int64, fua bool) error {
	defer d.observe(latTrim, time.Now())
	flags := replication.DataFlags(0)
	if fua {
		flags |= replication.DataFUA
	}
	return d.chunked(off, n, func(off, n int64) error {
		return d.mutate(replication.OpTrim, nil, off, n, flags, func(data disk.Disk) error {
			return data.Trim(off, n, fua)
		})
	})
}

func (d *device) WriteZeroes(off, n int64, noHole, fua bool) error {
	defer d.observe(latWriteZeroes, time.Now())
	flags := replication.DataFlags(0)
	if fua {
		flags |= replication.DataFUA
	}
	if noHole {
		flags |= replication.DataNoHole
	}
	return d.chunked(off, n, func(off, n int64) error {
		return d.mutate(replication.OpWriteZeroes, nil, off, n, flags, func(data disk.Disk) error {
			return data.WriteZeroes(off, n, noHole, fua)
		})
	})
}

// chunked splits a Trim or WriteZeroes into pieces the wire can carry.
func (d *device) chunked(off, n int64, f func(off, n int64) error) error {
	const maxChunk = 1 << 30
	for n > 0 {
		c := min(n, maxChunk)
		if err := f(off, c); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

// mode returns the IOMode the data path runs with.
func (d *device) mode() fsm.IOMode {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.path.mode
}

// mutate runs one write-like request on the local disk and the peer in
// parallel and decides what the client hears (see the device invariant).
func (d *device) mutate(op replication.Op, p []byte, off, n int64, flags replication.DataFlags, local func(disk.Disk) error) error {
	path, err := d.enter()
	if err != nil {
		return err
	}
	defer d.mu.RUnlock()
	d.ranges.lock(off, n)
	defer d.ranges.unlock(off, n)
	d.stats.appPending.Add(1)
	defer d.stats.appPending.Add(-1)

	useLocal := path.mode.Local && path.data != nil
	var alErr error
	if useLocal {
		if err := path.md.BeginWrite(off, n); err != nil {
			// The activity log cannot be written: the disk is failing.
			alErr = err
			d.localError(path, err)
			if path.mode.PassOn || !path.mode.Mirror {
				return fmt.Errorf("node: activity log: %w", err)
			}
			useLocal = false
		} else {
			defer path.md.EndWrite(off, n)
		}
	}

	mirrored := path.mode.Mirror && path.link != nil
	var peer pieces
	var sent time.Time
	if mirrored {
		d.stats.apInFlight.Add(n)
		sent = time.Now()
		peer = d.submit(path.link, op, p, off, n, flags)
	}

	var localErr error
	if useLocal {
		d.stats.localPending.Add(1)
		localErr = local(path.data)
		d.localWrites.Add(1) // after it completed: a FLUSH begun later covers it
		d.stats.localPending.Add(-1)
		if localErr == nil {
			d.stats.diskWritten.Add(uint64(n))
		}
	}
	var peerErr error = errNoPeer
	if mirrored {
		peerErr = d.wait(&peer)
		d.stats.apInFlight.Add(-n)
		d.stats.rtt.Observe(time.Since(sent))
		if peerErr != nil {
			// The honest status: the state machine leaves the
			// connected states before anything is marked.
			d.fenceLink(path.link, peerErr)
		}
	}

	switch {
	case useLocal && localErr == nil:
		if peerErr == nil {
			return nil // (a)
		}
		if !path.mode.UpToDate {
			// This disk is not UpToDate (a Primary sync target): the
			// write cannot be acknowledged, since only this stale disk
			// holds it. The mark makes the next resync fetch the
			// peer's version, so the two disks agree again.
			path.md.MarkOutOfSync(off, n)
			return fmt.Errorf("node: write not taken by the peer and this disk is not UpToDate: %w: %w", peerErr, syscall.EIO)
		}
		path.md.MarkOutOfSync(off, n)
		if d.failed.Load() {
			// This disk failed another request and is being detached
			// (on-io-error detach): it would hold the write alone, and
			// a disk that failed comes back, if at all, behind its
			// peer (a Primary that acknowledged writes through the
			// peer refuses it). Not acknowledged.
			return fmt.Errorf("node: write not taken by the peer, and this disk failed and is being detached: %w: %w", peerErr, syscall.EIO)
		}
		if d.outdatePeer != nil {
			// A quorum resource: the peer must be Outdated in the
			// group before this node goes on without it (twinblock's
			// fence-peer), so that it cannot be promoted meanwhile.
			if err := d.outdatePeer(); err != nil {
				return fmt.Errorf("node: write not taken by the peer, and the quorum did not outdate it: %w: %w", err, syscall.EIO)
			}
		}
		// (b): the peer does not have it; the activity log holds
		// the extent, so the mark survives a crash.
		return nil
	case useLocal: // the local disk failed
		// This disk may lack the write, or hold part of it: marked (in
		// memory; written out if the disk still takes its bitmap), as
		// DRBD marks a write that did not complete on both disks. The
		// state machine resyncs a failed disk in full when it comes
		// back in this run, so the mark matters after a restart.
		path.md.MarkOutOfSync(off, n)
		d.localError(path, localErr)
		if path.mode.PassOn || peerErr != nil || !path.mode.PeerUpToDate {
			// Without an UpToDate peer the write would rest on an
			// Inconsistent disk alone (a sync target): no node could
			// serve it, so it is not acknowledged.
			return localErr
		}
		if d.fenceDisk != nil {
			// The status must not say UpToDate for this disk once the
			// write is acknowledged without it.
			d.fenceDisk(path.md, localErr)
		}
		if d.linkLeft != nil && d.linkLeft(path.link) {
			// The state machine left the link meanwhile: another write
			// may have been acknowledged on this disk alone under (b)
			// (it saw the link fail before this disk's failure). Both
			// cannot stand: missed would refuse this disk, and that
			// write with it. This one, which the disk lacks, fails.
			// (A write that checks (b) after the failure sees failed
			// and fails instead: failed is set above, before this.)
			return localErr
		}
		d.missed.Store(true)
		return nil // (a) on the peer; this node's disk is being detached
	default: // no local disk
		if peerErr != nil {
			return fmt.Errorf("node: write on the peer: %w: %w", peerErr, syscall.EIO)
		}
		d.missed.Store(true)
		if alErr != nil && d.fenceDisk != nil {
			d.fenceDisk(path.md, alErr) // as in the case above
		}
		return nil // (c)
	}
}

// pieces are the requests one application write became on the link.
// The first is inline, so that a write within MaxPayload (the common
// case) allocates nothing.
type pieces struct {
	one  *replication.Request
	more []*replication.Request
	err  error // a piece the link refused (nothing after it was sent)
}

// submit sends a write-like request to the peer, a Write in pieces of
// at most the link's MaxPayload and a Trim or WriteZeroes whole (the
// caller keeps those within the wire's limit, see chunked). The link
// keeps the pieces in order; submit does not wait for them.
func (d *device) submit(l *replication.Link, op replication.Op, p []byte, off, n int64, flags replication.DataFlags) pieces {
	var ps pieces
	step := n
	if op == replication.OpWrite {
		step = int64(l.MaxPayload())
	}
	for done := int64(0); done < n; done += step {
		c := min(step, n-done)
		req := d.reqs.Get().(*replication.Request)
		req.Op, req.Offset, req.Length, req.Flags = op, off+done, c, flags
		if op == replication.OpWrite {
			req.Data, req.Length = p[done:done+c], 0
		}
		if err := l.Submit(req); err != nil {
			req.Reset()
			d.reqs.Put(req)
			ps.err = err
			return ps
		}
		if ps.one == nil {
			ps.one = req
		} else {
			ps.more = append(ps.more, req)
		}
	}
	return ps
}

// wait waits for every piece submit sent and returns the first error
// (a refused piece counts).
func (d *device) wait(ps *pieces) error {
	first := ps.err
	put := func(req *replication.Request) {
		if err := req.Wait(); err != nil && first == nil {
			first = err
		}
		req.Reset()
		d.reqs.Put(req)
	}
	if ps.one != nil {
		put(ps.one)
	}
	for _, req := range ps.more {
		put(req)
	}
	if ps.one == nil && first == nil {
		first = errNoPeer
	}
	return first
}

// fenceLink reports a request the peer did not take on an established
// link and returns once the state machine stopped counting on it.
func (d *device) fenceLink(l *replication.Link, err error) {
	if d.fence != nil {
		d.fence(l, err)
	}
}

var errNoPeer = errors.New("node: no peer")

// lockRange takes the range lock that orders application writes, for
// the resync: a resync read (source) or fetch (target) of a range and an
// application write to it never overlap in time.
func (d *device) lockRange(off, n int64) func() {
	d.ranges.lock(off, n)
	return func() { d.ranges.unlock(off, n) }
}

// outOfSync reports whether any block of [off, off+n) is marked out of
// sync in md.
func outOfSync(md *meta.Meta, off, n int64) bool {
	dirty := false
	md.WithBitmap(func(b *bitmap.Bitmap) {
		first, last, ok := b.BlocksOf(off, n)
		if !ok {
			return
		}
		i, ok := b.NextSet(first)
		dirty = ok && i <= last
	})
	return dirty
}

// Flush makes every completed write durable on the local disk and, under
// protocol C, on the peer (a Barrier answered after the peer's flush).
// A flush the peer failed fences the link first (see device): the
// writes of the epoch it should have made durable there are marked out
// of sync when the link ends.
func (d *device) Flush() error {
	defer d.observe(latFlush, time.Now())
	path, err := d.enter()
	if err != nil {
		return err
	}
	defer d.mu.RUnlock()
	var req *replication.Request
	var submitErr error
	mirrored := path.mode.Mirror && path.link != nil
	if mirrored {
		req = d.reqs.Get().(*replication.Request)
		req.Op = replication.OpFlush
		if submitErr = path.link.Submit(req); submitErr != nil {
			req.Reset()
			d.reqs.Put(req)
			req = nil
		}
	}
	var localErr error
	if path.mode.Local && path.data != nil {
		begun := d.localWrites.Load()
		if localErr = path.data.Flush(); localErr == nil {
			for cur := d.flushedThrough.Load(); cur < begun && !d.flushedThrough.CompareAndSwap(cur, begun); cur = d.flushedThrough.Load() {
			}
		}
	}
	var peerErr error = errNoPeer
	switch {
	case req != nil:
		peerErr = req.Wait()
		req.Reset()
		d.reqs.Put(req)
	case submitErr != nil:
		peerErr = submitErr
	}
	if mirrored && peerErr != nil {
		d.fenceLink(path.link, peerErr)
	}
	switch {
	case path.mode.Local && path.data != nil && localErr == nil:
		if peerErr != nil && mirrored && !path.mode.UpToDate {
			return fmt.Errorf("node: flush on the peer: %w: %w", peerErr, syscall.EIO)
		}
		return nil
	case path.mode.Local && path.data != nil:
		d.localError(path, localErr)
		if path.mode.PassOn || peerErr != nil {
			return localErr
		}
		// Durable on the peer only: this disk may lose any write since
		// its last good flush, so it counts as missing them, and the
		// status leaves UpToDate before the client hears of it (torture
		// seed 4337882065857263896: the disk, trusted after a failed
		// flush, lost a flushed write in a power loss).
		d.missed.Store(true)
		if d.fenceDisk != nil {
			d.fenceDisk(path.md, localErr)
		}
		return nil
	default:
		if peerErr != nil {
			return fmt.Errorf("node: flush on the peer: %w: %w", peerErr, syscall.EIO)
		}
		if d.lostUnflushed.Swap(false) {
			d.missed.Store(true)
		}
		return nil
	}
}

// diskGone records, as the local disk leaves the data path, whether it
// failed with writes it may not have made durable (lostUnflushed), and
// starts the count afresh for the next disk.
func (d *device) diskGone() {
	w := d.localWrites.Load()
	if d.failed.Load() && w > d.flushedThrough.Load() {
		d.lostUnflushed.Store(true)
	}
	d.flushedThrough.Store(w)
}
