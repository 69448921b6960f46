package bitmap

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// naive is the reference: a []bool.
type naive []bool

func (n naive) set(first, last uint64, v bool) uint64 {
	var changed uint64
	for i := first; i <= last && i < uint64(len(n)); i++ {
		if n[i] != v {
			changed++
			n[i] = v
		}
	}
	return changed
}

func (n naive) count() (c uint64) {
	for _, v := range n {
		if v {
			c++
		}
	}
	return c
}

func (n naive) next(from uint64, v bool) (uint64, bool) {
	for i := from; i < uint64(len(n)); i++ {
		if n[i] == v {
			return i, true
		}
	}
	return 0, false
}

func TestNewGeometry(t *testing.T) {
	for _, tc := range []struct {
		size     int64
		gran     int
		wantBits uint64
		wantErr  bool
	}{
		{0, 4096, 0, false},
		{1, 4096, 1, false},
		{4096, 4096, 1, false},
		{4097, 4096, 2, false},
		{1 << 30, 4096, 1 << 18, false},
		{1 << 30, 1 << 20, 1 << 10, false},
		{1 << 20, 2048, 0, true},
		{1 << 20, 3 << 12, 0, true},
		{1 << 20, 2 << 20, 0, true},
		{-1, 4096, 0, true},
	} {
		b, err := New(tc.size, tc.gran)
		if tc.wantErr {
			assert.Error(t, err, "size %d granularity %d", tc.size, tc.gran)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tc.wantBits, b.Bits(), "size %d granularity %d", tc.size, tc.gran)
		assert.Equal(t, tc.gran, b.Granularity())
	}
}

// TestAgainstNaive runs random operations on a Bitmap and the reference
// and compares every result, for many seeds and sizes (including sizes
// that are not a multiple of 64 bits or of a page).
func TestAgainstNaive(t *testing.T) {
	for seed := uint64(1); seed <= 60; seed++ {
		rng := rand.New(rand.NewPCG(seed, seed*7))
		nbits := uint64(rng.IntN(40000))
		b, err := New(int64(nbits)*4096, 4096)
		require.NoError(t, err)
		ref := make(naive, nbits)
		other, _ := New(int64(nbits)*4096, 4096)
		otherRef := make(naive, nbits)
		for op := 0; op < 300; op++ {
			first := uint64(rng.IntN(int(nbits) + 70))
			last := first + uint64(rng.IntN(3000))
			switch rng.IntN(6) {
			case 0:
				require.Equal(t, ref.set(first, last, true), b.Set(first, last), "seed %d op %d Set", seed, op)
			case 1:
				require.Equal(t, ref.set(first, last, false), b.Clear(first, last), "seed %d op %d Clear", seed, op)
			case 2:
				off, length := int64(rng.IntN(int(nbits)*4096+1)), int64(rng.IntN(100000))
				f, l, ok := b.BlocksOf(off, length)
				var want uint64
				if ok {
					want = ref.set(f, l, true)
				}
				require.Equal(t, want, b.MarkRange(off, length), "seed %d op %d MarkRange", seed, op)
			case 3:
				otherRef.set(first, last, true)
				other.Set(first, last)
				for i, v := range otherRef {
					if v {
						ref[i] = true
					}
				}
				require.NoError(t, b.Merge(other))
			case 4:
				for _, v := range []bool{true, false} {
					wi, wok := ref.next(first, v)
					var gi uint64
					var gok bool
					if v {
						gi, gok = b.NextSet(first)
					} else {
						gi, gok = b.NextClear(first)
					}
					require.Equal(t, wok, gok, "seed %d op %d Next(%v) found", seed, op, v)
					require.Equal(t, wi, gi, "seed %d op %d Next(%v) index", seed, op, v)
				}
			case 5:
				require.Equal(t, first < nbits && ref[first], b.Test(first))
			}
			require.Equal(t, ref.count(), b.Count(), "seed %d op %d Count", seed, op)
			require.NoError(t, b.Check())
		}
	}
}

func TestRLERoundTrip(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewPCG(seed, 3))
		size := int64(rng.IntN(50000)) * 4096
		b, _ := New(size, 4096)
		for i := 0; i < rng.IntN(40); i++ {
			f := uint64(rng.IntN(int(b.Bits()) + 1))
			b.Set(f, f+uint64(rng.IntN(500)))
		}
		enc := b.EncodeRLE(nil)
		c, _ := New(size, 4096)
		c.Set(0, 5) // DecodeRLE replaces, not merges
		require.NoError(t, c.DecodeRLE(enc))
		assert.Equal(t, b.words, c.words, "seed %d", seed)
		assert.Equal(t, b.Count(), c.Count())
		require.NoError(t, c.Check())
	}
	// A mostly clean 1 GiB bitmap encodes to a few bytes.
	b, _ := New(1<<30, 4096)
	b.Set(100, 199)
	b.Set(5000, 5000)
	assert.Less(t, len(b.EncodeRLE(nil)), 16)
}

func TestRLERejectsMalformed(t *testing.T) {
	b, _ := New(64*4096, 4096)
	b.Set(3, 9)
	before := append([]uint64(nil), b.words...)
	for name, data := range map[string][]byte{
		"empty":             {},
		"wrong bit count":   {65, 64},
		"runs too short":    {64, 10, 10},
		"runs too long":     {64, 60, 10},
		"empty middle run":  {64, 10, 0, 54},
		"truncated varint":  {64, 0x80},
		"overflowing count": {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		assert.ErrorIs(t, b.DecodeRLE(data), ErrRLE, name)
		assert.ErrorIs(t, b.MergeRLE(data), ErrRLE, name)
		assert.Equal(t, before, b.words, "%s: a bad encoding changes nothing", name)
	}
}

func TestDirtyPagesCoverEveryChange(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	b, _ := New(40<<30, 4096) // 10M bits, 320 pages
	for round := 0; round < 50; round++ {
		snap := make([]byte, 0, b.Pages()*PageSize)
		for p := 0; p < b.Pages(); p++ {
			snap = b.AppendPage(snap, p)
		}
		b.ClearDirtyPages()
		for i := 0; i < 5; i++ {
			f := uint64(rng.IntN(int(b.Bits())))
			if rng.IntN(2) == 0 {
				b.Set(f, f+uint64(rng.IntN(100000)))
			} else {
				b.Clear(f, f+uint64(rng.IntN(100000)))
			}
		}
		dirty := map[int]bool{}
		for _, p := range b.DirtyPages() {
			dirty[p] = true
		}
		for p := 0; p < b.Pages(); p++ {
			cur := b.AppendPage(nil, p)
			if !bytes.Equal(cur, snap[p*PageSize:(p+1)*PageSize]) {
				require.True(t, dirty[p], "round %d: page %d changed but is not marked dirty", round, p)
			}
		}
		assert.Less(t, len(dirty), b.Pages(), "only the touched pages are dirty")
		for p := 0; p < b.Pages(); p++ {
			require.Equal(t, dirty[p], b.PageDirty(p), "page %d", p)
		}
	}
}

func TestPageDirtyOneByOne(t *testing.T) {
	b, _ := New(1<<30, 4096) // 262144 bits, 8 pages of 32768 bits
	b.Set(5, 5)
	b.Set(3*32768+1, 4*32768) // pages 3 and 4
	assert.Equal(t, []int{0, 3, 4}, b.DirtyPages())
	assert.Equal(t, 3, b.PageOf(3*32768+1))
	assert.Equal(t, 4, b.PageOf(4*32768))
	b.ClearPageDirty(3)
	assert.False(t, b.PageDirty(3))
	assert.True(t, b.PageDirty(4))
	assert.Equal(t, []int{0, 4}, b.DirtyPages())
}

func TestPagesRoundTrip(t *testing.T) {
	b, _ := New(100_003*4096, 4096)
	b.Set(7, 70_000)
	b.Set(100_000, 100_002)
	c, _ := New(100_003*4096, 4096)
	for p := 0; p < b.Pages(); p++ {
		require.NoError(t, c.LoadPage(p, b.AppendPage(nil, p)))
	}
	assert.Equal(t, b.words, c.words)
	assert.Equal(t, b.Count(), c.Count())
	// Bits past the end are refused.
	bad := b.AppendPage(nil, b.Pages()-1)
	bad[len(bad)-1] = 0x80
	assert.Error(t, c.LoadPage(b.Pages()-1, bad))
	assert.Error(t, c.LoadPage(b.Pages(), bad))
}

func TestMergeGeometryMismatch(t *testing.T) {
	a, _ := New(1<<20, 4096)
	b, _ := New(2<<20, 4096)
	c, _ := New(1<<20, 8192)
	assert.ErrorIs(t, a.Merge(b), ErrGeometry)
	assert.ErrorIs(t, a.Merge(c), ErrGeometry)
}

func FuzzDecodeRLE(f *testing.F) {
	b, _ := New(1000*4096, 4096)
	b.Set(10, 20)
	f.Add(b.EncodeRLE(nil))
	f.Add([]byte{0xe8, 0x07, 0, 0xe8, 0x07})
	f.Add([]byte{0xe8, 0x07, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		x, _ := New(1000*4096, 4096)
		if err := x.DecodeRLE(data); err != nil {
			return
		}
		if err := x.Check(); err != nil {
			t.Fatal(err)
		}
		// A valid encoding re-encodes to a canonical form that decodes the same.
		y, _ := New(1000*4096, 4096)
		if err := y.DecodeRLE(x.EncodeRLE(nil)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x.EncodeRLE(nil), y.EncodeRLE(nil)) {
			t.Fatal("re-encoding differs")
		}
	})
}
