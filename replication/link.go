package replication

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/twinblock/twinblock/internal/alignbuf"
	"github.com/twinblock/twinblock/pkg/disk"
)

// Errors of the connection runtime. A handshake the nodes refused (a
// mismatch of resource, names, versions or protocol, a protocol
// violation) wraps ErrHandshake, one whose authentication failed ErrAuth,
// which wraps ErrHandshake; a handshake the connection or the context
// ended wraps neither (see Handshake). Every way a running link ends
// wraps ErrLinkClosed; a write or read the peer's disk failed wraps
// ErrPeerIO and the peer's syscall.Errno.
var (
	ErrHandshake  = errors.New("replication: handshake")
	ErrAuth       = fmt.Errorf("%w: cram-hmac", ErrHandshake)
	ErrLinkClosed = errors.New("replication: link closed")
	ErrPeerIO     = errors.New("replication: peer I/O error")
	// ErrBadRequest: Submit or ReadAt was given a request the link cannot
	// send (a zero length, a payload over MaxPayload, a Trim the peer
	// does not execute, a Request still in flight).
	ErrBadRequest = errors.New("replication: invalid request")
	// ErrAlgMismatch: the peer answered a resync or verify request
	// whose algorithm is not its own csums-alg / verify-alg (the nodes
	// are configured differently).
	ErrAlgMismatch = errors.New("replication: the peer uses another csums-alg or verify-alg")
	// ErrStaleEpoch: the peer serves under a quorum epoch lower than one
	// this node has seen: a newer Primary replaced it (LinkConfig.Fence).
	// It is not a protocol violation: the peer is told why, and the
	// node it fences demotes.
	ErrStaleEpoch = errors.New("replication: stale epoch: a newer Primary replaced this one")
)

// EpochFence is a node's quorum epoch fence (issue 15): the highest
// epoch under which it has seen a Primary serve, kept durable. A link
// with a fence refuses, at the handshake and on every State and Data
// after it, a peer epoch below the floor (a Data with a NegAck of ESTALE,
// then the connection ends with ErrStaleEpoch), and raises the floor,
// durably, before it acts on a higher one.
type EpochFence interface {
	// Floor returns the highest epoch seen.
	Floor() uint64
	// Raise makes e (> Floor) the floor, durable before it returns.
	Raise(e uint64) error
}

// Defaults and limits of a link.
const (
	// DefaultMaxPayload is LinkConfig.MaxPayload's default: 1 MiB, so
	// that a 1 MiB NBD write (the kernel's usual maximum) travels as one
	// Data message. Callers split bigger requests.
	DefaultMaxPayload = 1 << 20
	// DefaultHandshakeTimeout bounds Hello, authentication and State.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxBuffers is LinkConfig.MaxBuffers' default, DRBD's
	// max-buffers: 2048 pages of 4 KiB, 8 MiB of peer writes in flight.
	DefaultMaxBuffers = 2048
	// DefaultMaxEpochSize is LinkConfig.MaxEpochSize's default, DRBD's
	// max-epoch-size.
	DefaultMaxEpochSize = 2048

	// maxApplyOps bounds the peer's writes and reads this node executes
	// at once; when all are taken the receiver stops reading the socket.
	maxApplyOps = 64
	// maxPeerReads bounds the ReadRequests a node has outstanding (sent,
	// ReadReply not yet received); readBudget bounds their bytes. Both
	// sides compute the same limits, so a peer that exceeds them is in
	// violation (docs/wire-protocol.md, "Reads through the peer").
	maxPeerReads  = 64
	minReadBudget = 16 << 20
	// maxSyncRequests bounds the resync and verify requests a node has
	// outstanding (Resync: until its answer is written and acked;
	// Verify: until its answer arrived), minSyncBudget with MaxPayload
	// their bytes; the peer enforces both exactly (docs/wire-protocol.md,
	// "Resync"). It is half of maxApplyOps: the peer serves them on its
	// applier's operations, where they may wait for LockRange, and the
	// other half stays free for writes, which only wait for the disk.
	maxSyncRequests = 32
	minSyncBudget   = 16 << 20
	// bitmapSlack is added to the bound of a received bitmap: one byte
	// per 4 KiB of the larger disk (run-length encoding never takes more
	// than a byte per bit) plus this.
	bitmapSlack    = 64 << 10
	maxQueuedAcks  = 1 << 16 // frames queued in answer to the peer: more means it does not read
	closeGrace     = time.Second
	bufferPageSize = 4096
)

// LinkConfig configures one peer connection of a resource.
type LinkConfig struct {
	Resource   string
	Self, Peer string // node names ("on NAME" sections)
	Protocol   byte   // 'A', 'B' or 'C'
	// CramHMACAlg and SharedSecret: both empty, no authentication; both
	// set, DRBD's cram-hmac. One without the other is a configuration
	// error.
	CramHMACAlg, SharedSecret string
	DataSize                  uint64 // usable bytes of the local disk, 0 when diskless
	Features                  Features
	// MaxPayload is the largest bulk payload this node accepts,
	// MinMaxPayload..MaxPayloadSize; 0 means DefaultMaxPayload (1 MiB).
	// The link uses the smaller of both sides' (Link.MaxPayload).
	MaxPayload uint32
	// Disk is where the peer's writes are applied and its reads served;
	// nil means diskless: writes get a NegAck and reads a ReadReply with
	// EIO. The link never closes it.
	Disk   disk.Disk
	Logger *slog.Logger // nil: no logging
	// HandshakeTimeout bounds Hello, authentication and State; 0 means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxBuffers (DRBD's max-buffers, in 4 KiB pages; 0 means
	// DefaultMaxBuffers) bounds the payload bytes of peer writes this
	// node holds at once; beyond it the receiver stops reading the
	// socket. One write is always admitted, whatever its size.
	MaxBuffers int
	// MaxEpochSize (DRBD's max-epoch-size; 0 means DefaultMaxEpochSize)
	// is how many writes the link sends before it closes the epoch with
	// a Barrier of its own, so the transfer log stays bounded when the
	// caller never flushes.
	MaxEpochSize int

	// CsumsAlg and VerifyAlg name the digests of checksum-based resync
	// and online verify ("" = none): "crc32c", "md5", "sha1", "sha256".
	// Both sides must use the same; a request carries the algorithm id
	// and a mismatch is answered with an error (ErrAlgMismatch at the
	// requester), not a violation.
	CsumsAlg, VerifyAlg string
	// Compression is how this node compresses the payloads it sends: ""
	// or "none", "s2", "zstd". It compresses resync replies always when
	// set, and Data (replication) payloads only when CompressReplication
	// is true. It uses an algorithm only if the peer announced it can
	// decode it (Hello features FeatureCompressS2/FeatureCompressZstd:
	// every node announces both).
	Compression         string
	CompressReplication bool
	// LockRange, if non-nil, is called before the link reads a local
	// range to answer a resync or verify request, and the func it
	// returns after the answer was queued: the node passes its
	// application-write range lock, so an application write to the same
	// range comes wholly before the read (its Data frame queued before
	// the answer) or wholly after. It is called from the link's applier
	// workers, never from the receiver, so it may wait for application
	// writes that wait for the peer's acks.
	LockRange func(off, n int64) (unlock func())
	// Fence, if non-nil, is the node's epoch fence (EpochFence): a
	// quorum resource's. Nil: epochs are not checked (a resource without
	// quorum sends 0).
	Fence EpochFence

	// The parsed forms of CsumsAlg, VerifyAlg and Compression.
	csumsAlg, verifyAlg DigestAlg
	codec               Codec

	// Callbacks, called from the link's goroutines. They must not block
	// and must not call back into the Link synchronously (post to a
	// channel, or do something as cheap as setting bitmap bits). Any may
	// be nil.

	// OnState is called with every State the peer sends after the
	// handshake.
	OnState func(State)
	// OnPeerState, unlike OnState, also sees the State of the handshake:
	// it is called with it before the link's goroutines start, and then
	// with every later State on the receiver goroutine, before OnState.
	// So a frame the peer sent after a State is handled after the call
	// for it: a node that decides per peer write from the peer's disk
	// state (DRBD marks the writes of a Diskless peer) sets that state
	// here. It must not block.
	OnPeerState func(State)
	// OnDiskError is called when applying a peer write, serving a peer
	// read or flushing for a peer Barrier failed on Disk (not for a
	// request outside the disk or a read-only disk: those are the peer's
	// mistake, answered with an errno). The node decides (on-io-error).
	OnDiskError func(error)
	// OnOutOfSync is called with a byte range the peer may not hold
	// although the Request that wrote it completed with nil: under
	// protocol A or B a NegAck that came after completion; and, when the
	// link ends, every write that completed but was not yet covered by
	// a BarrierAck (DRBD's transfer log). It is called before OnClose.
	// Requests that complete with an error are not reported: the caller
	// learns about them from Wait.
	OnOutOfSync func(off, length int64)
	// OnBitmap gets the peer's whole bitmap (the RLE bytes of all its
	// Bitmap chunks, concatenated; the callee owns the slice) when the
	// last chunk arrived. A bitmap bigger than one byte per 4 KiB of the
	// larger disk plus 64 KiB is a protocol violation.
	OnBitmap func(rle []byte)
	// OnSyncUUID gets the sync UUID the sync source sent.
	OnSyncUUID func(uuid uint64)
	// OnResyncAck (on the sync source) is called when the target reports
	// a range it asked for as done: ok = it is now on the target's disk
	// (written, or found identical by checksum; durable after the
	// target's next flush, like a WriteAck without FUA); !ok = the
	// target failed to write it (the source keeps it out of sync).
	// Ranges served but never acked (the link ended first) are not
	// reported: the source keeps them out of sync.
	OnResyncAck func(off, n int64, ok bool)
	// OnVerifyMismatch (on the node answering verify requests) gets
	// each range of 4 KiB blocks whose digests differ, so it marks them
	// out of sync too.
	OnVerifyMismatch func(off, n int64)
	// OnClose is called exactly once, when the link has ended, with the
	// cause (never nil, always wrapping ErrLinkClosed): the peer's
	// Goodbye (with its reason), end of stream or reset, a protocol
	// violation, a failed flush, or a local Close (with its reason). By
	// then every goroutine of the link has stopped and every Request
	// has completed.
	OnClose func(error)
}

// withDefaults validates c and fills in the defaults.
func (c LinkConfig) withDefaults() (LinkConfig, error) {
	for _, f := range []struct{ name, v string }{{"resource", c.Resource}, {"self", c.Self}, {"peer", c.Peer}} {
		if err := checkName(TypeHello, f.name, f.v); err != nil {
			return c, fmt.Errorf("replication: link config: %w", err)
		}
	}
	if c.Self == c.Peer {
		return c, fmt.Errorf("replication: link config: self and peer are both %q", c.Self)
	}
	if c.Protocol != 'A' && c.Protocol != 'B' && c.Protocol != 'C' {
		return c, fmt.Errorf("replication: link config: protocol %q, want A, B or C", c.Protocol)
	}
	switch {
	case c.MaxPayload == 0:
		c.MaxPayload = DefaultMaxPayload
	case c.MaxPayload < MinMaxPayload || c.MaxPayload > MaxPayloadSize:
		return c, fmt.Errorf("replication: link config: max payload %d, want %d..%d", c.MaxPayload, MinMaxPayload, MaxPayloadSize)
	}
	if (c.CramHMACAlg == "") != (c.SharedSecret == "") {
		return c, errors.New("replication: link config: cram-hmac-alg and shared-secret go together (set both or neither)")
	}
	if c.CramHMACAlg != "" {
		if _, err := hashFor(c.CramHMACAlg); err != nil {
			return c, fmt.Errorf("replication: link config: %w", err)
		}
	}
	var err error
	if c.csumsAlg, err = digestAlgByName(c.CsumsAlg); err != nil {
		return c, fmt.Errorf("replication: link config: csums-alg: %w", err)
	}
	if c.verifyAlg, err = digestAlgByName(c.VerifyAlg); err != nil {
		return c, fmt.Errorf("replication: link config: verify-alg: %w", err)
	}
	if c.codec, err = codecByName(c.Compression); err != nil {
		return c, fmt.Errorf("replication: link config: %w", err)
	}
	c.Features |= compressFeatures
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxBuffers <= 0 {
		c.MaxBuffers = DefaultMaxBuffers
	}
	if c.MaxEpochSize <= 0 {
		c.MaxEpochSize = DefaultMaxEpochSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Link is the running connection to the peer of a resource, after a
// successful Handshake. It is symmetric: either node may send writes
// (Submit) and reads (ReadAt) and serve the other's, and roles may change
// while it runs.
//
// Goroutines (all started by Handshake, all waited for before OnClose
// and Done):
//   - the sender drains one queue (writes, acks, pings, states, read
//     requests and replies) and writes it in batches, many frames per
//     writev, bulk payloads without a copy;
//   - the receiver decodes frames, answers acks and pings, completes
//     requests, and hands the peer's writes and reads to the applier;
//   - the applier's workers (up to 64, started on demand) run the peer's
//     operations on cfg.Disk (its writes and reads; the reads that
//     answer its resync and verify requests, under LockRange; the
//     writes of the answers to this node's resyncs, decompressing what
//     came compressed), and its flusher answers Barriers;
//   - a supervisor tears the link down and runs the callbacks.
//
// Invariants:
//   - Every Request completes exactly once. One submitted before or
//     concurrently with Close, or with the link breaking, completes
//     with an error wrapping ErrLinkClosed unless its ack (or, under
//     protocol A, its write to the socket) came first. Submit after the
//     end fails at once. So a caller that marks a range out of sync
//     whenever Wait returns an error, and on OnOutOfSync, never
//     believes the peer holds data it may not hold.
//   - Requests complete only after their frames left the sender: the
//     link never reads Request.Data after completion.
//   - On the receive side, writes that overlap apply in arrival order; a
//     read waits for the writes it overlaps that came before it; a
//     BarrierAck leaves only after every write with a lower ID completed
//     and Disk.Flush succeeded, and BarrierAcks leave in ID order.
//   - No lock is held across network or disk I/O; the receiver never
//     blocks on anything that depends on the peer reading its socket
//     (only on local disk progress), so two nodes cannot deadlock each
//     other. Memory is bounded: 64 operations and MaxBuffers of write
//     payload in flight, the peer's outstanding reads by the protocol's
//     read limits, queued acks by maxQueuedAcks.
type Link struct {
	cfg        LinkConfig
	nc         net.Conn
	dec        *Decoder
	log        *slog.Logger
	peer       Hello
	peerState  State
	features   Features
	maxPayload uint32
	readBudget int64
	syncBudget int64 // bytes of resync and verify requests outstanding (both directions' limit)
	maxBitmap  int   // bytes of a received bitmap
	syncCodec  Codec // what this node compresses resync replies with (CodecNone: nothing)
	dataCodec  Codec // what it compresses Data with

	resyncRecv atomic.Uint64
	sameCsum   atomic.Uint64
	compIn     atomic.Uint64
	compOut    atomic.Uint64
	algWarned  atomic.Bool

	epoch     atomic.Uint64 // this node's State.Epoch, carried by its writes
	received  atomic.Uint64
	recvBytes atomic.Uint64

	stopCh   chan struct{} // closed when the link starts to end
	done     chan struct{} // closed when it has ended
	kick     chan struct{} // cap 1: the send queue became non-empty
	sendDone chan struct{}
	recvDone chan struct{}
	wg       sync.WaitGroup // workers and flusher

	ap applier

	mu      sync.Mutex // guards the fields below
	closing bool
	cause   error
	bye     string // Goodbye reason, if sendBye
	sendBye bool
	byeSent bool

	outq      []outMsg // the send queue
	replies   int      // answers to the peer in outq or being written
	sentBytes uint64

	servedReads int   // peer reads received and not yet answered on the wire
	servedBytes int64 // their bytes
	resyncSent  uint64

	// The sub-protocols, each in its own file with its own methods, all
	// under mu: the queue above is theirs in common, and one lock keeps
	// a write's place in the sequence and in the queue together.
	tlog transferLog // the write path: link_tl.go
	rd   readClient  // this node's reads of the peer's disk: link_reads.go
	sc   syncClient  // this node's resync and verify requests: sync_client.go
	ss   syncServer  // the peer's, served here: sync_server.go

	// sender-owned
	snd   sendScratch
	spare []outMsg // the queue's other buffer: the sender swaps them

	// receiver-owned
	rbuf     *alignbuf.Buf // payload buffer handed to the decoder
	rcharged int64
	lastID   uint64 // highest write-path ID received
	bitmap   []byte // the peer's bitmap chunks so far
}

// PeerHello returns the Hello the peer sent.
func (l *Link) PeerHello() Hello { return l.peer }

// PeerState returns the State the peer sent in the handshake.
func (l *Link) PeerState() State { return l.peerState }

// Features returns the features both sides announced.
func (l *Link) Features() Features { return l.features }

// MaxPayload is the smaller of both sides' MaxPayload: callers split
// writes and reads larger than this.
func (l *Link) MaxPayload() uint32 { return l.maxPayload }

// PeerDataSize is the usable size of the peer's disk (0: diskless).
func (l *Link) PeerDataSize() uint64 { return l.peer.DataSize }

// Received counts the frames received since the handshake, of any type:
// a caller's ping-timeout logic watches it advance.
func (l *Link) Received() uint64 { return l.received.Load() }

// Done is closed when the link has ended (after OnClose returned).
func (l *Link) Done() <-chan struct{} { return l.done }

// Err returns the cause the link ended with (the one given to OnClose),
// or nil while it runs.
func (l *Link) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cause
}

// LinkStats are a link's counters, for the status file.
type LinkStats struct {
	SentBytes uint64 // Data payload bytes sent (ns), as written (before compression)
	RecvBytes uint64 // Data payload bytes received (nr), as written (after decompression)
	Pending   int    // Requests submitted and not yet complete (pe)
	Unacked   int    // peer writes received and not yet completed here (ua)
	Epochs    int    // receive-side epochs open, the current one included (ep; usually 1)

	ResyncSent     uint64 // resync payload bytes this node sent (after compression): counts toward ns
	ResyncRecv     uint64 // resync payload bytes received (as they crossed the wire): counts toward nr
	ResyncSameCsum uint64 // blocks (4 KiB) this node, as sync source, found identical by checksum and did not send
	// CompressedIn and CompressedOut: raw bytes given to the compressor
	// and the bytes it produced, over every payload this node
	// compressed (also those it then sent raw because they did not
	// shrink enough).
	CompressedIn, CompressedOut uint64
}

// Stats returns the link's counters.
func (l *Link) Stats() LinkStats {
	l.mu.Lock()
	s := LinkStats{SentBytes: l.sentBytes, RecvBytes: l.recvBytes.Load(), Pending: l.tlog.pending, ResyncSent: l.resyncSent}
	l.mu.Unlock()
	s.Unacked, s.Epochs = l.ap.stats()
	s.ResyncRecv, s.ResyncSameCsum = l.resyncRecv.Load(), l.sameCsum.Load()
	s.CompressedIn, s.CompressedOut = l.compIn.Load(), l.compOut.Load()
	return s
}

// The operations. The zero Op is invalid.
const (
	OpWrite       Op = iota + 1 // Data
	OpTrim                      // Trim (needs FeatureTrim on both sides)
	OpWriteZeroes               // WriteZeroes (needs FeatureWriteZeroes on both sides)
	OpFlush                     // Barrier
)

// String returns the operation's name.
func (o Op) String() string {
	switch o {
	case OpWrite:
		return "write"
	case OpTrim:
		return "trim"
	case OpWriteZeroes:
		return "write-zeroes"
	case OpFlush:
		return "flush"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// ID is the request's sequence number on the link (the one Pending
// reports), valid after a successful Submit.
func (r *Request) ID() uint64 { return r.id }

// Reset clears r for another Submit and keeps its completion channel,
// so that a pooled Request costs no allocation per use. Call it after
// Wait returned or Submit failed; a Request still in flight stays
// marked so, and Submit refuses it.
func (r *Request) Reset() {
	*r = Request{busy: r.busy, done: r.done}
}

// Wait blocks until r is complete for the link's protocol and returns
// the outcome:
//   - A: a write is complete when its frame was written to the socket;
//   - B: when the peer's RecvAck arrived;
//   - C: when the peer's WriteAck arrived;
//   - OpFlush: under C when the BarrierAck arrived (every write before
//     it is durable on the peer); under A and B once the Barrier was
//     written.
//
// It returns nil; an error wrapping ErrPeerIO and the peer's
// syscall.Errno (a NegAck); or an error wrapping ErrLinkClosed, the
// link's cause, when the link ended first. If Submit returned an error,
// Wait returns the same error. Call Wait exactly once per Submit.
func (r *Request) Wait() error {
	if r.done == nil {
		return fmt.Errorf("%w: Wait without Submit", ErrBadRequest)
	}
	err := <-r.done
	r.busy = false
	return err
}

// SendState queues s for the peer (its OnState sees it). The writes
// sent from now on carry s.Epoch.
func (l *Link) SendState(s State) error {
	if err := s.check(); err != nil {
		return err
	}
	l.epoch.Store(s.Epoch)
	return l.enqueue(outMsg{t: TypeState, state: s})
}

// admitEpoch applies the epoch fence to epoch e, which the peer sent in
// a State (data false: 0 means "not Primary", never stale) or with a
// write (data true). It returns ErrStaleEpoch for a stale one, or the
// error of raising the floor.
func (l *Link) admitEpoch(e uint64, data bool) error {
	return admitEpoch(l.cfg.Fence, l.cfg.Peer, e, data)
}

func admitEpoch(f EpochFence, peer string, e uint64, data bool) error {
	if f == nil || (e == 0 && !data) {
		return nil
	}
	floor := f.Floor()
	switch {
	case e < floor:
		return fmt.Errorf("%w: peer %s serves under epoch %d, this node has seen epoch %d", ErrStaleEpoch, peer, e, floor)
	case e > floor:
		if err := f.Raise(e); err != nil {
			return fmt.Errorf("replication: recording epoch %d of peer %s: %w", e, peer, err)
		}
	}
	return nil
}

// Ping queues a Ping; the peer's PingAck advances Received.
func (l *Link) Ping() error { return l.enqueue(outMsg{t: TypePing}) }

// Close ends the link: it sends a best-effort Goodbye with reason, closes
// the connection, completes every pending Request, read, resync and
// verify with ErrLinkClosed, waits for every goroutine of the link
// (including disk operations and LockRange calls it runs for the peer,
// which may wait for those Requests), completes the resyncs those
// goroutines had, calls OnOutOfSync and OnClose, and returns. It is
// idempotent and safe to call from any goroutine except the callbacks;
// it returns nil (the cause is Err's).
func (l *Link) Close(reason string) error {
	l.shutdown(fmt.Errorf("%w: closed by this node: %s", ErrLinkClosed, reason), goodbyeReason(reason), true)
	<-l.done
	return nil
}

// shutdown starts the end of the link with cause; the first call wins.
// With bye, the sender writes a Goodbye with reason before it stops.
func (l *Link) shutdown(cause error, reason string, bye bool) {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return
	}
	l.closing, l.cause, l.bye, l.sendBye = true, cause, reason, bye
	l.rd.calls.cond.Broadcast()
	l.sc.calls.cond.Broadcast()
	l.mu.Unlock()
	l.ap.stop()
	_ = l.nc.SetWriteDeadline(time.Now().Add(closeGrace))
	close(l.stopCh)
	l.log.Info("replication: link ending", "resource", l.cfg.Resource, "peer", l.cfg.Peer, "cause", cause)
}

// supervise waits for the end, tears the link down in order and runs the
// final callbacks.
func (l *Link) supervise() {
	<-l.stopCh
	<-l.sendDone // it wrote the Goodbye, if any (bounded by the write deadline)
	l.mu.Lock()
	byeSent := l.byeSent
	l.mu.Unlock()
	lingering := false
	if cw, ok := l.nc.(interface{ CloseWrite() error }); ok && byeSent && cw.CloseWrite() == nil {
		// Let the peer read the Goodbye: closing with unread input would
		// reset the connection and could destroy it. The receiver goes
		// on reading until the peer closes, for closeGrace at most.
		lingering = true
		_ = l.nc.SetReadDeadline(time.Now().Add(closeGrace))
	} else {
		l.nc.Close()
	}
	<-l.recvDone
	if lingering {
		// If the receiver stopped early (a protocol violation), drain
		// here; otherwise the stream is at its end and this returns.
		_, _ = io.Copy(io.Discard, l.nc)
	}
	l.nc.Close()
	oos := l.endRequests()
	l.wg.Wait()
	l.sweep(oos)
	if l.cfg.OnClose != nil {
		l.cfg.OnClose(l.cause)
	}
	close(l.done)
}

// extent is a byte range.
type extent struct{ off, n int64 }

// endRequests completes, with the cause, what only the sender and the
// receiver could have completed, both of which have stopped: every
// pending Request and read, and every resync and verify still waiting
// for its answer; it empties the transfer log and returns the completed
// writes the peer never covered with a BarrierAck. It runs before the
// link waits for its workers, which may be waiting in LockRange for an
// application write that waits for one of these Requests.
func (l *Link) endRequests() []extent {
	var oos []extent
	var calls []*syncCall
	l.mu.Lock()
	for i := range l.tlog.entries.len() {
		e := l.tlog.entries.at(i)
		switch {
		case e.req != nil:
			l.tlog.completeLocked(e, l.cause)
		case e.op != OpFlush && !e.nack:
			oos = append(oos, extent{e.off, e.n})
		}
	}
	l.tlog.entries.reset()
	l.rd.calls.drain(func(c *readCall) { c.done <- l.cause })
	l.sc.calls.each(func(c *syncCall, _ uint64) {
		if !c.answered {
			l.sc.releaseLocked(c)
			calls = append(calls, c)
		}
	})
	l.mu.Unlock()
	for _, c := range calls {
		c.fail(l.cause)
	}
	return oos
}

// sweep completes what the ended link leaves once every goroutine has
// stopped: the resyncs whose answers the workers never got to, with the
// cause; and the writes of oos (endRequests') through OnOutOfSync.
func (l *Link) sweep(oos []extent) {
	var calls []*syncCall
	l.mu.Lock()
	l.sc.calls.drain(func(c *syncCall) { calls = append(calls, c) })
	l.ss.served, l.ss.bytes = nil, 0
	l.bitmap = nil
	clear(l.outq)
	l.outq = l.outq[:0]
	l.mu.Unlock()
	for _, c := range calls {
		c.fail(l.cause)
	}
	if l.cfg.OnOutOfSync != nil {
		for _, e := range oos {
			l.cfg.OnOutOfSync(e.off, e.n)
		}
	}
}

// goodbyeReason makes s fit a Goodbye: valid UTF-8, at most MaxReasonLen
// bytes, cut at a rune boundary.
func goodbyeReason(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= MaxReasonLen {
		return s
	}
	n := MaxReasonLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// errnoOf maps a disk error to the errno the peer gets: the
// syscall.Errno it wraps, ENOSPC (writes) or EINVAL (reads) for a range
// outside the disk, EROFS for a read-only disk, else EIO. peerFault is
// true for the two that are the peer's mistake, not a disk failure.
func errnoOf(err error, read bool) (errno uint32, peerFault bool) {
	switch {
	case errors.Is(err, disk.ErrOutOfRange):
		if read {
			return uint32(syscall.EINVAL), true
		}
		return uint32(syscall.ENOSPC), true
	case errors.Is(err, disk.ErrReadOnly):
		return uint32(syscall.EROFS), true
	}
	var en syscall.Errno
	if errors.As(err, &en) && en != 0 {
		return uint32(en), false
	}
	return uint32(syscall.EIO), false
}

// peerIOError is what a NegAck or a failed ReadReply turns into.
func (l *Link) peerIOError(what fmt.Stringer, off, n int64, errno uint32) error {
	return fmt.Errorf("%w: peer %s: %v of %d bytes at %d failed: %w", ErrPeerIO, l.cfg.Peer, what, n, off, syscall.Errno(errno))
}

// closedError is the cause for a connection that ended under the link.
func (l *Link) closedError(err error) error {
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: peer %s closed the connection: %w", ErrLinkClosed, l.cfg.Peer, err)
	case errors.Is(err, ErrProtocol):
		return fmt.Errorf("%w: peer %s: %w", ErrLinkClosed, l.cfg.Peer, err)
	}
	return fmt.Errorf("%w: connection to peer %s: %w", ErrLinkClosed, l.cfg.Peer, err)
}
