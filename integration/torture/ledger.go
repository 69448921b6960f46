package torture

import (
	"fmt"
	"math"
	"strings"
	"sync"
)

// OpKind is what a request does to the blocks it covers.
type OpKind uint8

const (
	// OpWrite writes self-describing blocks (FillBlock).
	OpWrite OpKind = iota
	// OpZero is WRITE_ZEROES: the blocks read as zeroes afterwards.
	OpZero
	// OpTrim is TRIM: the blocks read as zeroes or keep what they held
	// (NBD lets a server ignore a TRIM), so a TRIM supersedes nothing.
	OpTrim
	// OpBase is what a block was seen to hold at a quiescent check
	// (Establish): the history restarts from it.
	OpBase
	// OpRead and OpFlush are counted but change no block.
	OpRead
	OpFlush
)

func (k OpKind) String() string {
	switch k {
	case OpWrite:
		return "write"
	case OpZero:
		return "write-zeroes"
	case OpTrim:
		return "trim"
	case OpBase:
		return "base"
	case OpRead:
		return "read"
	case OpFlush:
		return "flush"
	}
	return "OpKind(?)"
}

// OpState is where a request stands.
type OpState uint8

const (
	// Pending: sent, no reply yet.
	Pending OpState = iota
	// Acked: the server replied success.
	Acked
	// Failed: the server replied with an error. Maybe written.
	Failed
	// Unknown: the connection ended before the reply. Maybe written, at
	// any time until Bound says the process that held it is dead.
	Unknown
)

func (s OpState) String() string {
	return [...]string{"pending", "acked", "failed", "unknown"}[s]
}

// never is the completion of a request that may still take effect.
const never = math.MaxUint64

// Op is one request in the ledger. Issue is its write id; every field
// is guarded by the ledger's mutex once the Op is issued.
type Op struct {
	Kind     OpKind
	First, N uint64 // blocks
	FUA      bool
	Issue    uint64
	End      uint64 // sequence number of its reply; never while pending or unknown and unbounded
	State    OpState
	value    Content // OpBase: what the block held
}

func (o *Op) String() string {
	end := "∞"
	if o.End != never {
		end = uitoa(o.End)
	}
	if o.Kind == OpBase {
		return fmt.Sprintf("base@%d(%s)", o.Issue, o.value)
	}
	return fmt.Sprintf("%s#%d[%d,%s] %s", o.Kind, o.Issue, o.Issue, end, o.State)
}

// Ledger is the model of the device: for every block, the requests that
// may have written it since it was last seen at a quiescent point.
//
// The rule (a final read of a linearizable register, per block): a read
// of block b issued at ri and completed at re may return the value of a
// request W on b with W.Issue < re unless an acknowledged non-TRIM
// request W2 on b, completed before ri, was issued after W completed
// (End(W) < W2.Issue). An unacknowledged W (error reply, no reply) is
// "maybe written": it is never required, and it may show up until a
// later acknowledged write issued after its end supersedes it; one with
// no reply has no end until Bound gives it one.
//
// Sequence numbers come from one counter: a request is issued (and
// registered on its blocks) before it is sent, and completed after its
// reply is received, so their order is real-time order.
type Ledger struct {
	nonce uint64

	mu   sync.Mutex
	seq  uint64
	hist [][]*Op
	ops  [OpFlush + 1]struct{ issued, acked, failed, unknown uint64 }
}

// NewLedger models a device of blocks zeroed blocks.
func NewLedger(blocks int, nonce uint64) *Ledger {
	l := &Ledger{nonce: nonce, hist: make([][]*Op, blocks), seq: 1}
	base := &Op{Kind: OpBase, Issue: 1, End: 1, State: Acked, value: Content{Kind: Zero}}
	for b := range l.hist {
		l.hist[b] = []*Op{base}
	}
	return l
}

// Nonce identifies this run in every block.
func (l *Ledger) Nonce() uint64 { return l.nonce }

// Blocks is the device size in blocks.
func (l *Ledger) Blocks() int { return len(l.hist) }

// Tick returns a fresh sequence number (a read's issue or end).
func (l *Ledger) Tick() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return l.seq
}

// Issue registers a request on its blocks and gives it its sequence
// number, which is also the write id its blocks carry. Call it before
// the request is sent.
func (l *Ledger) Issue(kind OpKind, first, n uint64, fua bool) *Op {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	op := &Op{Kind: kind, First: first, N: n, FUA: fua, Issue: l.seq, End: never}
	l.ops[kind].issued++
	if kind == OpWrite || kind == OpZero || kind == OpTrim {
		for b := first; b < first+n; b++ {
			l.hist[b] = append(l.hist[b], op)
		}
	}
	return op
}

// Ack records op's success reply. Call it after the reply is received.
func (l *Ledger) Ack(op *Op) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	op.End, op.State = l.seq, Acked
	l.ops[op.Kind].acked++
	return l.seq
}

// Fail records that op got an error reply (replied) or none (the
// connection ended): it may or may not have been written. bound, if
// non-zero, is the sequence number by which the process that held op
// was dead (see Bound).
func (l *Ledger) Fail(op *Op, replied bool, bound uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	if replied {
		op.End, op.State = l.seq, Failed
		l.ops[op.Kind].failed++
		return
	}
	op.State = Unknown
	l.ops[op.Kind].unknown++
	if bound != 0 {
		op.End = bound
	}
}

// Bound gives the unknown requests ops an end: the process that may
// still have applied them is dead. It returns that sequence number.
func (l *Ledger) Bound(ops []*Op) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	for _, op := range ops {
		if op.State == Unknown && op.End == never {
			op.End = l.seq
		}
	}
	return l.seq
}

// Counts returns, per kind, requests issued, acknowledged, failed (error
// reply) and unknown (no reply).
func (l *Ledger) Counts(k OpKind) (issued, acked, failed, unknown uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.ops[k]
	return c.issued, c.acked, c.failed, c.unknown
}

// Verdict is a block that read back something the rule forbids.
type Verdict struct {
	Block uint64
	Kind  ContentKind // Torn, Foreign, or Written/Zero for a lost (stale) block
	Got   Content
	Want  string // the allowed values
}

// Lost reports whether the verdict is a lost acknowledged write (the
// block holds an older value, or zeroes) rather than a torn or foreign
// block.
func (v Verdict) Lost() bool { return v.Kind == Written || v.Kind == Zero }

func (v Verdict) String() string {
	what := "lost"
	if !v.Lost() {
		what = v.Kind.String()
	}
	return fmt.Sprintf("block %d %s: read %s, allowed %s", v.Block, what, v.Got, v.Want)
}

// CheckRead checks data, read from block first on, by a read issued at
// ri and completed at re; it returns the blocks that break the rule.
func (l *Ledger) CheckRead(first uint64, data []byte, ri, re uint64) []Verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	var bad []Verdict
	for i := 0; i+BlockSize <= len(data); i += BlockSize {
		b := first + uint64(i/BlockSize)
		got := DecodeBlock(data[i:i+BlockSize], l.nonce, b)
		if v, ok := l.check(b, got, ri, re); !ok {
			bad = append(bad, v)
		}
	}
	return bad
}

// check applies the rule to one block; l.mu is held.
func (l *Ledger) check(b uint64, got Content, ri, re uint64) (Verdict, bool) {
	h := l.hist[b]
	// m: the latest issue of an acknowledged, superseding request that
	// completed before the read was issued. A request that ended before
	// m is superseded.
	var m uint64
	for _, w := range h {
		if w.State == Acked && w.Kind != OpTrim && w.End < ri && w.Issue > m {
			m = w.Issue
		}
	}
	known := false
	for _, w := range h {
		if w.Kind == OpWrite && got.Kind == Written && got.ID == w.Issue && w.Issue < re {
			known = true // an older write of this block (one issued after the read is foreign)
		}
		if w.Issue >= re || w.End < m {
			continue
		}
		if matches(w, got) {
			return Verdict{}, true
		}
	}
	v := Verdict{Block: b, Kind: got.Kind, Got: got}
	var want []string
	for _, w := range h {
		if w.Issue < re && w.End >= m {
			want = append(want, w.String())
		}
	}
	if len(want) > 6 {
		want = append(want[:3], fmt.Sprintf("… %d more …", len(want)-6), want[len(want)-3], want[len(want)-2], want[len(want)-1])
	}
	v.Want = "{" + strings.Join(want, ", ") + "}"
	// A valid block of this run and block number whose write is not in
	// the history is stale if it is older than the base (h[0]); a newer
	// one would be in the history had it been issued to this block.
	if got.Kind == Written && !known && got.ID > h[0].Issue {
		v.Kind = Foreign
	}
	return v, false
}

func matches(w *Op, got Content) bool {
	switch w.Kind {
	case OpWrite:
		return got.Kind == Written && got.ID == w.Issue
	case OpZero, OpTrim:
		return got.Kind == Zero
	case OpBase:
		return got == w.value
	}
	return false
}

// Establish restarts block b's history from what it was seen to hold at
// a quiescent point (no request in flight). Call it only for a block
// CheckRead accepted, or after a finding has been recorded.
func (l *Ledger) Establish(first uint64, data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	for i := 0; i+BlockSize <= len(data); i += BlockSize {
		b := first + uint64(i/BlockSize)
		got := DecodeBlock(data[i:i+BlockSize], l.nonce, b)
		l.hist[b] = []*Op{{Kind: OpBase, Issue: l.seq, End: l.seq, State: Acked, value: got}}
	}
}
