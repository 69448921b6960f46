package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/twinblock/twinblock/nbd/client"
)

// Writer is the ledger writer: Workers goroutines share one NBD
// connection to whichever node serves (a Secondary refuses the
// handshake), pipelining writes of every size, FUA writes, FLUSH, TRIM,
// WRITE_ZEROES and reads; every request goes through the Ledger, and
// every read is checked against it as it completes. A broken connection
// is replaced at once by a new one to either node.
type Writer struct {
	l       *Ledger
	nodes   []WriterNode
	workers int
	seed    uint64
	bad     func(where string, v []Verdict)

	mu       sync.Mutex
	cond     *sync.Cond
	running  bool
	closing  bool
	sess     *session
	sessions []*session // every session that has unknown requests
	inflight map[*inflightOp]struct{}

	// Service: the longest stretch, while running, with no request
	// completing successfully. Paused time does not count.
	activeSince time.Time
	acc         time.Duration
	gapMax      time.Duration
	gapWhere    string

	stats WriterStats
	wg    sync.WaitGroup
}

// WriterNode is a node the writer may connect to.
type WriterNode struct {
	Name, Addr string
}

// WriterStats counts what the writer saw.
type WriterStats struct {
	Acked, Failed, Unknown uint64 // requests: success, error reply, no reply
	AckedBytes             uint64 // written, zeroed or trimmed, acknowledged
	FUA                    uint64 // acknowledged requests with the FUA flag
	ReadsChecked           uint64 // blocks read and checked while writing
	Connects               uint64
	ByKind                 [OpFlush + 1]uint64 // acknowledged, per kind
}

type session struct {
	node   string
	c      *client.Client
	broken bool
	killed uint64 // the ledger's sequence number once the node was killed
	lost   []*Op
}

type inflightOp struct {
	kind  OpKind
	start time.Time
	node  string
}

// NewWriter makes a writer; Resume starts it.
func NewWriter(l *Ledger, nodes []WriterNode, workers int, seed uint64, bad func(string, []Verdict)) *Writer {
	w := &Writer{l: l, nodes: nodes, workers: workers, seed: seed, bad: bad, inflight: map[*inflightOp]struct{}{}}
	w.cond = sync.NewCond(&w.mu)
	w.wg.Add(1 + workers)
	go w.connector()
	for i := range workers {
		go w.worker(i)
	}
	return w
}

// Resume lets the workers issue requests.
func (w *Writer) Resume() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.running {
		w.running = true
		w.activeSince = time.Now()
		w.cond.Broadcast()
	}
}

// Pause stops issuing requests and waits up to within for those in
// flight to finish; it returns an error naming the oldest if some do not.
func (w *Writer) Pause(within time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		w.running = false
		w.acc += time.Since(w.activeSince)
		w.cond.Broadcast()
	}
	deadline := time.Now().Add(within)
	t := time.AfterFunc(within, func() { w.mu.Lock(); w.cond.Broadcast(); w.mu.Unlock() })
	defer t.Stop()
	for len(w.inflight) > 0 && time.Now().Before(deadline) {
		w.cond.Wait()
	}
	if len(w.inflight) > 0 {
		return fmt.Errorf("%d requests still in flight after %v; oldest: %s", len(w.inflight), within, w.oldestLocked())
	}
	return nil
}

func (w *Writer) oldestLocked() string {
	var o *inflightOp
	for op := range w.inflight {
		if o == nil || op.start.Before(o.start) {
			o = op
		}
	}
	if o == nil {
		return "none"
	}
	return fmt.Sprintf("%s to %s for %v", o.kind, o.node, time.Since(o.start).Round(time.Millisecond))
}

// Oldest is how long the oldest request in flight has waited.
func (w *Writer) Oldest() (time.Duration, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var o *inflightOp
	for op := range w.inflight {
		if o == nil || op.start.Before(o.start) {
			o = op
		}
	}
	if o == nil {
		return 0, ""
	}
	return time.Since(o.start), w.oldestLocked()
}

// TakeGap returns the longest time without service since the last call
// (including the stretch still running) and restarts the measure.
func (w *Writer) TakeGap() (time.Duration, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := w.acc
	if w.running {
		cur += time.Since(w.activeSince)
	}
	g, where := w.gapMax, w.gapWhere
	if cur > g {
		g, where = cur, "still without service"
	}
	w.gapMax, w.gapWhere = 0, ""
	return g, where
}

// Node is the node the writer is connected to ("" if none).
func (w *Writer) Node() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sess == nil || w.sess.broken {
		return ""
	}
	return w.sess.node
}

// Stats returns a copy of the counters.
func (w *Writer) Stats() WriterStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Killed tells the writer that node's process is dead: the requests it
// sent there that never got a reply can no longer take effect.
func (w *Writer) Killed(node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.sessions {
		if s.node == node && s.killed == 0 {
			s.killed = w.l.Bound(s.lost)
			s.lost = nil
		}
	}
	if w.sess != nil && w.sess.node == node && w.sess.killed == 0 {
		w.sess.killed = w.l.Bound(w.sess.lost)
		w.sess.lost = nil
	}
	// Sessions to the dead process are over; forget them.
	keep := w.sessions[:0]
	for _, s := range w.sessions {
		if s.node != node {
			keep = append(keep, s)
		}
	}
	w.sessions = keep
}

// Close stops the writer and closes its connection.
func (w *Writer) Close() {
	w.mu.Lock()
	w.closing, w.running = true, false
	w.cond.Broadcast()
	s := w.sess
	w.mu.Unlock()
	if s != nil {
		go s.c.Close() // may hang on a stopped server; the daemons' end closes it
	}
	w.wg.Wait()
}

// connector keeps a session open while the writer runs.
func (w *Writer) connector() {
	defer w.wg.Done()
	next := 0
	for {
		w.mu.Lock()
		for !w.closing && (!w.running || (w.sess != nil && !w.sess.broken)) {
			w.cond.Wait()
		}
		if w.closing {
			w.mu.Unlock()
			return
		}
		old := w.sess
		w.mu.Unlock()
		if old != nil {
			_ = old.c.Close() // the connection is broken: its reader has ended
		}
		nd := w.nodes[next%len(w.nodes)]
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := client.Dial(ctx, nd.Addr, client.Options{Export: "r0"})
		cancel()
		if err != nil {
			next++
			time.Sleep(25 * time.Millisecond)
			continue
		}
		w.mu.Lock()
		if w.closing {
			w.mu.Unlock()
			_ = c.Close()
			return
		}
		w.sess = &session{node: nd.Name, c: c}
		w.stats.Connects++
		w.cond.Broadcast()
		w.mu.Unlock()
	}
}

// waitSession returns the session to use, or nil when closing, with the
// request about to be issued already counted in flight: Pause must not
// see zero requests between this and the request's start.
func (w *Writer) waitSession() (*session, *inflightOp) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.closing && (!w.running || w.sess == nil || w.sess.broken) {
		w.cond.Wait()
	}
	if w.closing {
		return nil, nil
	}
	io := &inflightOp{start: time.Now(), node: w.sess.node}
	w.inflight[io] = struct{}{}
	return w.sess, io
}

// Sizes in blocks: mostly 4 KiB, sometimes up to 1 MiB, rarely the
// boundaries around the peer link's 1 MiB payload and beyond, up to the
// export's 32 MiB maximum.
func pickBlocks(r *rand.Rand, max uint64) uint64 {
	var n uint64
	switch x := r.IntN(1000); {
	case x < 550:
		n = 1
	case x < 800:
		n = 2 + r.Uint64N(15)
	case x < 950:
		n = 17 + r.Uint64N(240)
	case x < 985:
		n = []uint64{255, 256, 257, 320, 512, 768}[r.IntN(6)]
	case x < 997:
		n = 257 + r.Uint64N(768)
	default:
		n = 1025 + r.Uint64N(8192-1024)
	}
	return min(n, max)
}

func (w *Writer) worker(i int) {
	defer w.wg.Done()
	r := rand.New(rand.NewPCG(w.seed, uint64(i)+1))
	blocks := uint64(w.l.Blocks())
	var buf []byte
	for {
		s, io := w.waitSession()
		if s == nil {
			return
		}
		n := pickBlocks(r, blocks)
		var first uint64
		if r.IntN(10) < 3 { // a hot region: overlapping requests in flight
			first = r.Uint64N(max(1, min(256, blocks-n+1)))
		} else {
			first = r.Uint64N(blocks - n + 1)
		}
		var kind OpKind
		switch x := r.IntN(100); {
		case x < 62:
			kind = OpWrite
		case x < 76:
			kind = OpRead
		case x < 85:
			kind = OpZero
		case x < 93:
			kind = OpTrim
		default:
			kind = OpFlush
		}
		fua := r.IntN(100) < 15
		if kind == OpWrite || kind == OpRead {
			if need := int(n) * BlockSize; cap(buf) < need {
				buf = make([]byte, need)
			}
			buf = buf[:n*BlockSize]
		}
		w.do(s, io, kind, first, n, fua, r.IntN(2) == 0, buf)
	}
}

// do runs one request on session s (io: its in-flight entry) and
// records it.
func (w *Writer) do(s *session, io *inflightOp, kind OpKind, first, n uint64, fua, noHole bool, buf []byte) {
	w.mu.Lock()
	io.kind = kind
	w.mu.Unlock()

	off, length := int64(first*BlockSize), int64(n*BlockSize)
	var op *Op
	var err error
	var ri, re uint64
	switch kind {
	case OpRead:
		ri = w.l.Tick()
		err = s.c.ReadAt(buf, off)
		re = w.l.Tick()
	case OpFlush:
		op = w.l.Issue(OpFlush, 0, 0, false)
		err = s.c.Flush()
	case OpWrite:
		op = w.l.Issue(OpWrite, first, n, fua)
		for b := uint64(0); b < n; b++ {
			FillBlock(buf[b*BlockSize:(b+1)*BlockSize], w.l.Nonce(), first+b, op.Issue)
		}
		err = s.c.WriteAt(buf, off, fua)
	case OpZero:
		op = w.l.Issue(OpZero, first, n, fua)
		err = s.c.WriteZeroes(off, length, noHole, fua)
	case OpTrim:
		op = w.l.Issue(OpTrim, first, n, fua)
		err = s.c.Trim(off, length, fua)
	}

	var replyErr *client.Error
	replied := errors.As(err, &replyErr)
	if err == nil && op != nil {
		w.l.Ack(op)
	}
	if kind == OpRead && err == nil {
		if bad := w.l.CheckRead(first, buf, ri, re); len(bad) > 0 {
			w.bad(fmt.Sprintf("a read of %d blocks at block %d through %s while writing", n, first, s.node), bad)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.inflight, io)
	w.cond.Broadcast()
	switch {
	case err == nil:
		w.stats.Acked++
		w.stats.ByKind[kind]++
		if fua && kind != OpRead && kind != OpFlush {
			w.stats.FUA++
		}
		if kind == OpWrite || kind == OpZero || kind == OpTrim {
			w.stats.AckedBytes += uint64(length)
		}
		if w.running {
			now := time.Now()
			if g := w.acc + now.Sub(w.activeSince); g > w.gapMax {
				w.gapMax, w.gapWhere = g, "until a "+kind.String()+" on "+s.node+" at "+now.Format("15:04:05.000")
			}
			w.acc, w.activeSince = 0, now
		}
	case replied:
		w.stats.Failed++
		if op != nil {
			w.l.Fail(op, true, 0)
		}
	default:
		if kind == OpRead {
			s.broken = true
			w.cond.Broadcast()
			return
		}
		w.stats.Unknown++
		w.l.Fail(op, false, s.killed)
		if s.killed == 0 {
			if len(s.lost) == 0 {
				w.sessions = append(w.sessions, s)
			}
			s.lost = append(s.lost, op)
		}
		s.broken = true
		w.cond.Broadcast()
	}
	if kind == OpRead && err == nil {
		w.stats.ReadsChecked += n
	}
}
