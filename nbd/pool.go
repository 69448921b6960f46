package nbd

import (
	"math/bits"
	"sync"
	"unsafe"
)

// bufAlign is the alignment of every pooled buffer, enough for O_DIRECT
// on any device with logical blocks up to 4 KiB.
const bufAlign = 4096

const (
	minClassShift = 12 // 4 KiB
	maxClassShift = 25 // 32 MiB
	numClasses    = maxClassShift - minClassShift + 1
)

// buffer is a pooled, aligned byte slice of a power-of-two capacity.
type buffer struct {
	b     []byte
	class int
}

// bufPool hands out aligned buffers in power-of-two size classes, so that
// the request path allocates nothing in steady state.
type bufPool struct {
	classes [numClasses]sync.Pool
}

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// get returns a buffer that holds at least n bytes (n <= 1<<maxClassShift).
func (p *bufPool) get(n int) *buffer {
	c := classOf(n)
	if v := p.classes[c].Get(); v != nil {
		return v.(*buffer)
	}
	return &buffer{b: alignedAlloc(1 << (c + minClassShift)), class: c}
}

// put returns a buffer obtained from get.
func (p *bufPool) put(b *buffer) { p.classes[b.class].Put(b) }

// alignedAlloc returns n bytes starting on a bufAlign boundary.
func alignedAlloc(n int) []byte {
	raw := make([]byte, n+bufAlign)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) & (bufAlign - 1)); r != 0 {
		off = bufAlign - r
	}
	return raw[off : off+n : off+n]
}
