package alignbuf

import (
	"math/bits"
	"sync"
	"unsafe"
)

// Align is the alignment of every pooled buffer: enough for O_DIRECT on
// any device with logical blocks up to 4 KiB.
const Align = 4096

// The size classes: 1<<MinShift (4 KiB) up to 1<<MaxShift (64 MiB).
const (
	MinShift   = 12
	MaxShift   = 26
	numClasses = MaxShift - MinShift + 1
)

// Alloc returns n bytes starting on an align boundary (a power of two).
func Alloc(n, align int) []byte {
	raw := make([]byte, n+align)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) & uintptr(align-1)); r != 0 {
		off = align - r
	}
	return raw[off : off+n : off+n]
}

// Buf is a pooled buffer: B has the whole class size (callers slice it).
type Buf struct {
	B     []byte
	class int
}

// Pool keeps freed buffers for reuse, by size class. Its zero value
// keeps them in a sync.Pool per class, which the garbage collector may
// empty when they sit idle; with SetLimit it keeps at most that many
// bytes, so that a burst of big buffers does not stay pinned while the
// steady traffic that fits allocates nothing. Safe for concurrent use.
type Pool struct {
	pools [numClasses]sync.Pool // limit == 0

	mu    sync.Mutex
	limit int64
	free  [numClasses][]*Buf
	held  int64
}

// SetLimit makes the pool keep at most limit bytes of freed buffers
// (limit > 0). Call it before the first Get.
func (p *Pool) SetLimit(limit int64) { p.limit = limit }

func classOf(n int) int {
	if n <= 1<<MinShift {
		return 0
	}
	return bits.Len(uint(n-1)) - MinShift
}

// Get returns a buffer of at least n bytes (n <= 1<<MaxShift).
func (p *Pool) Get(n int) *Buf {
	c := classOf(n)
	if p.limit == 0 {
		if v := p.pools[c].Get(); v != nil {
			return v.(*Buf)
		}
	} else {
		p.mu.Lock()
		if f := p.free[c]; len(f) > 0 {
			b := f[len(f)-1]
			f[len(f)-1] = nil
			p.free[c] = f[:len(f)-1]
			p.held -= int64(len(b.B))
			p.mu.Unlock()
			return b
		}
		p.mu.Unlock()
	}
	return &Buf{B: Alloc(1<<(c+MinShift), Align), class: c}
}

// Put returns a buffer obtained from Get; the caller no longer uses it.
func (p *Pool) Put(b *Buf) {
	if p.limit == 0 {
		p.pools[b.class].Put(b)
		return
	}
	p.mu.Lock()
	if p.held+int64(len(b.B)) <= p.limit {
		p.free[b.class] = append(p.free[b.class], b)
		p.held += int64(len(b.B))
	}
	p.mu.Unlock()
}
