package alignbuf

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func TestGetEverySizeAligned(t *testing.T) {
	for _, limit := range []int64{0, 8 << 20} {
		var p Pool
		if limit > 0 {
			p.SetLimit(limit)
		}
		for _, n := range []int{1, 4095, 4096, 4097, 65536, 1<<20 + 1, 32 << 20, 1 << MaxShift} {
			b := p.Get(n)
			require.GreaterOrEqual(t, len(b.B), n)
			require.Less(t, len(b.B), 2*n+1<<MinShift, "the smallest class that fits")
			require.Zero(t, uintptr(unsafe.Pointer(&b.B[0]))%Align, "aligned")
			p.Put(b)
		}
	}
}

func TestLimitBoundsWhatIsKept(t *testing.T) {
	var p Pool
	p.SetLimit(1 << 20)
	bufs := []*Buf{p.Get(1 << 20), p.Get(1 << 20)}
	for _, b := range bufs {
		p.Put(b)
	}
	require.Equal(t, int64(1<<20), p.held, "the second buffer is dropped")
	require.Same(t, bufs[0], p.Get(1<<20), "kept buffers are reused")
	require.Zero(t, p.held)
}

func TestSteadyTrafficAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items and allocates")
	}
	for _, limit := range []int64{0, 8 << 20} {
		var p Pool
		if limit > 0 {
			p.SetLimit(limit)
		}
		p.Put(p.Get(4096))
		allocs := testing.AllocsPerRun(100, func() { p.Put(p.Get(4096)) })
		require.Zero(t, allocs)
	}
}

func TestAlloc(t *testing.T) {
	for _, align := range []int{512, 4096} {
		b := Alloc(1000, align)
		require.Len(t, b, 1000)
		require.Equal(t, 1000, cap(b))
		require.Zero(t, uintptr(unsafe.Pointer(&b[0]))%uintptr(align))
	}
}
