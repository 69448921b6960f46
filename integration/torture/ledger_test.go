package torture

import (
	"testing"
)

func block(nonce, b, id uint64) []byte {
	buf := make([]byte, BlockSize)
	FillBlock(buf, nonce, b, id)
	return buf
}

func TestBlockDecode(t *testing.T) {
	const nonce = 42
	if got := DecodeBlock(block(nonce, 7, 99), nonce, 7); got != (Content{Kind: Written, ID: 99, Block: 7}) {
		t.Fatalf("own block: %v", got)
	}
	if got := DecodeBlock(make([]byte, BlockSize), nonce, 7); got.Kind != Zero {
		t.Fatalf("zeroes: %v", got)
	}
	if got := DecodeBlock(block(nonce, 8, 99), nonce, 7); got.Kind != Foreign || got.Block != 8 {
		t.Fatalf("another block's: %v", got)
	}
	if got := DecodeBlock(block(nonce+1, 7, 99), nonce, 7); got.Kind != Foreign {
		t.Fatalf("another run's: %v", got)
	}
	torn := block(nonce, 7, 99)
	copy(torn[2048:], block(nonce, 7, 100)[2048:]) // half of each write
	if got := DecodeBlock(torn, nonce, 7); got.Kind != Torn {
		t.Fatalf("torn: %v", got)
	}
	junk := make([]byte, BlockSize)
	junk[100] = 1
	if got := DecodeBlock(junk, nonce, 7); got.Kind != Torn {
		t.Fatalf("junk: %v", got)
	}
}

// check reads block 0 holding what id wrote (0: zeroes) with a read
// issued now and completed at once.
func check(l *Ledger, id uint64) []Verdict {
	var data []byte
	if id == 0 {
		data = make([]byte, BlockSize)
	} else {
		data = block(l.Nonce(), 0, id)
	}
	ri := l.Tick()
	return l.CheckRead(0, data, ri, l.Tick())
}

func TestLedgerRule(t *testing.T) {
	l := NewLedger(4, 1)
	if v := check(l, 0); v != nil {
		t.Fatalf("a fresh device reads zeroes: %v", v)
	}
	w1 := l.Issue(OpWrite, 0, 1, false)
	// In flight: either value.
	if check(l, 0) != nil || check(l, w1.Issue) != nil {
		t.Fatal("a write in flight: old or new")
	}
	l.Ack(w1)
	if v := check(l, 0); len(v) != 1 || !v[0].Lost() {
		t.Fatalf("zeroes after an acknowledged write are a lost write: %v", v)
	}
	// Two overlapping writes in flight, both acknowledged: either.
	w2 := l.Issue(OpWrite, 0, 1, false)
	w3 := l.Issue(OpWrite, 0, 1, true)
	l.Ack(w3)
	l.Ack(w2)
	if check(l, w2.Issue) != nil || check(l, w3.Issue) != nil {
		t.Fatal("overlapping writes: either may win")
	}
	if v := check(l, w1.Issue); len(v) != 1 || !v[0].Lost() {
		t.Fatalf("the write both superseded: %v", v)
	}
	// A failed write is maybe-written until a later acknowledged write.
	w4 := l.Issue(OpWrite, 0, 1, false)
	l.Fail(w4, true, 0)
	if check(l, w4.Issue) != nil || check(l, w3.Issue) != nil {
		t.Fatal("a failed write: maybe written")
	}
	// No reply: maybe written, even after later writes, until bounded.
	w5 := l.Issue(OpWrite, 0, 1, false)
	l.Fail(w5, false, 0)
	w6 := l.Issue(OpWrite, 0, 1, false)
	l.Ack(w6)
	if check(l, w5.Issue) != nil {
		t.Fatal("a write without a reply may still land")
	}
	if v := check(l, w4.Issue); len(v) != 1 || !v[0].Lost() {
		t.Fatalf("the failed write, superseded: %v", v)
	}
	l.Bound([]*Op{w5})
	w7 := l.Issue(OpWrite, 0, 1, false)
	l.Ack(w7)
	if v := check(l, w5.Issue); len(v) != 1 || !v[0].Lost() {
		t.Fatalf("the bounded write, superseded: %v", v)
	}
	// TRIM: zeroes or what was there; WRITE_ZEROES: zeroes.
	tr := l.Issue(OpTrim, 0, 1, false)
	l.Ack(tr)
	if check(l, 0) != nil || check(l, w7.Issue) != nil {
		t.Fatal("a trim: zeroes or the old content")
	}
	z := l.Issue(OpZero, 0, 1, false)
	l.Ack(z)
	if check(l, 0) != nil {
		t.Fatal("write-zeroes reads zeroes")
	}
	if v := check(l, w7.Issue); len(v) != 1 || !v[0].Lost() {
		t.Fatalf("the write before write-zeroes: %v", v)
	}
	// A valid block of a write never issued to it is foreign; a torn
	// one is torn.
	if v := check(l, 1<<40); len(v) != 1 || v[0].Kind != Foreign {
		t.Fatalf("a write id nobody issued here: %v", v)
	}
	ri := l.Tick()
	if v := l.CheckRead(0, block(l.Nonce(), 3, w7.Issue), ri, l.Tick()); len(v) != 1 || v[0].Kind != Foreign {
		t.Fatalf("block 3's content at block 0: %v", v)
	}
	torn := block(l.Nonce(), 0, w7.Issue)
	torn[9] ^= 1
	ri = l.Tick()
	if v := l.CheckRead(0, torn, ri, l.Tick()); len(v) != 1 || v[0].Kind != Torn {
		t.Fatalf("torn: %v", v)
	}
}

// A read's window: a write acknowledged before the read began must be
// seen; one issued after the read completed cannot be.
func TestLedgerReadWindow(t *testing.T) {
	l := NewLedger(1, 1)
	w1 := l.Issue(OpWrite, 0, 1, false)
	l.Ack(w1)
	ri := l.Tick()
	w2 := l.Issue(OpWrite, 0, 1, false) // concurrent with the read
	re := l.Tick()
	w3 := l.Issue(OpWrite, 0, 1, false) // after it
	l.Ack(w3)
	l.Ack(w2)
	if l.CheckRead(0, block(1, 0, w1.Issue), ri, re) != nil || l.CheckRead(0, block(1, 0, w2.Issue), ri, re) != nil {
		t.Fatal("before or concurrent: allowed")
	}
	if v := l.CheckRead(0, block(1, 0, w3.Issue), ri, re); len(v) != 1 || v[0].Kind != Foreign {
		t.Fatalf("a write issued after the read completed: %v", v)
	}
}

func TestLedgerEstablish(t *testing.T) {
	l := NewLedger(2, 1)
	w := l.Issue(OpWrite, 0, 2, false)
	l.Fail(w, false, 0) // unknown: either value
	data := append(block(1, 0, w.Issue), make([]byte, BlockSize)...)
	ri := l.Tick()
	if v := l.CheckRead(0, data, ri, l.Tick()); v != nil {
		t.Fatal(v)
	}
	l.Establish(0, data)
	// From now on block 0 holds w, block 1 zeroes, and nothing else.
	if v := check(l, 0); len(v) != 1 || !v[0].Lost() {
		t.Fatalf("block 0 was seen holding the write: %v", v)
	}
	ri = l.Tick()
	if v := l.CheckRead(1, block(1, 1, w.Issue), ri, l.Tick()); len(v) != 1 || !v[0].Lost() {
		t.Fatalf("block 1 was seen zero; the write showing up later is stale: %v", v)
	}
}
