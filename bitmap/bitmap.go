package bitmap

import (
	"errors"
	"fmt"
	"math/bits"
)

// Granularity limits, in bytes per bit.
const (
	MinGranularity = 4 << 10
	MaxGranularity = 1 << 20
	// PageSize is the unit in which the serialized bitmap is persisted.
	PageSize     = 4096
	wordsPerPage = PageSize / 8
)

// ErrGeometry is returned when two bitmaps of different shapes meet.
var ErrGeometry = errors.New("bitmap: geometry mismatch")

// Bitmap is one bit per block of a device; see the package doc.
type Bitmap struct {
	words []uint64
	nbits uint64
	shift uint // log2 of the granularity
	count uint64
	dirty []uint64 // one bit per PageSize page of words
}

// New returns a clear bitmap covering size bytes with one bit per
// granularity bytes (a power of two in [MinGranularity, MaxGranularity]).
// A partial last block gets a bit of its own.
func New(size int64, granularity int) (*Bitmap, error) {
	if size < 0 {
		return nil, fmt.Errorf("bitmap: negative size %d", size)
	}
	if granularity < MinGranularity || granularity > MaxGranularity || granularity&(granularity-1) != 0 {
		return nil, fmt.Errorf("bitmap: granularity %d is not a power of two between %d and %d", granularity, MinGranularity, MaxGranularity)
	}
	shift := uint(bits.TrailingZeros(uint(granularity)))
	nbits := (uint64(size) + uint64(granularity) - 1) >> shift
	nwords := (nbits + 63) / 64
	npages := (nwords + wordsPerPage - 1) / wordsPerPage
	return &Bitmap{
		words: make([]uint64, nwords),
		nbits: nbits,
		shift: shift,
		dirty: make([]uint64, (npages+63)/64),
	}, nil
}

// Bits is the number of blocks covered.
func (b *Bitmap) Bits() uint64 { return b.nbits }

// Granularity is the number of bytes per bit.
func (b *Bitmap) Granularity() int { return 1 << b.shift }

// Count is the number of set bits (blocks out of sync).
func (b *Bitmap) Count() uint64 { return b.count }

// Test reports whether bit i is set. Bits past the end read as clear.
func (b *Bitmap) Test(i uint64) bool {
	if i >= b.nbits {
		return false
	}
	return b.words[i/64]&(1<<(i%64)) != 0
}

// BlocksOf returns the bit range [first, last] that the byte range
// [off, off+length) touches, and false for an empty range.
func (b *Bitmap) BlocksOf(off, length int64) (first, last uint64, ok bool) {
	if length <= 0 || off < 0 {
		return 0, 0, false
	}
	first = uint64(off) >> b.shift
	last = (uint64(off) + uint64(length) - 1) >> b.shift
	if first >= b.nbits {
		return 0, 0, false
	}
	return first, min(last, b.nbits-1), true
}

// MarkRange sets the bits of every block that the byte range touches
// (a write there puts the block out of sync) and returns how many changed.
func (b *Bitmap) MarkRange(off, length int64) uint64 {
	first, last, ok := b.BlocksOf(off, length)
	if !ok {
		return 0
	}
	return b.Set(first, last)
}

// Set sets bits [first, last] (clamped to Bits) and returns how many were
// clear before.
func (b *Bitmap) Set(first, last uint64) uint64 { return b.apply(first, last, true) }

// Clear clears bits [first, last] (clamped to Bits) and returns how many
// were set before.
func (b *Bitmap) Clear(first, last uint64) uint64 { return b.apply(first, last, false) }

// SetAll sets every bit (a full sync).
func (b *Bitmap) SetAll() {
	if b.nbits > 0 {
		b.Set(0, b.nbits-1)
	}
}

func (b *Bitmap) apply(first, last uint64, set bool) uint64 {
	if b.nbits == 0 || first > last || first >= b.nbits {
		return 0
	}
	last = min(last, b.nbits-1)
	var changed uint64
	fw, lw := first/64, last/64
	for w := fw; w <= lw; w++ {
		mask := ^uint64(0)
		if w == fw {
			mask &= ^uint64(0) << (first % 64)
		}
		if w == lw {
			mask &= ^uint64(0) >> (63 - last%64)
		}
		old := b.words[w]
		var nw uint64
		if set {
			nw = old | mask
		} else {
			nw = old &^ mask
		}
		if nw == old {
			continue
		}
		d := uint64(bits.OnesCount64(old ^ nw))
		changed += d
		if set {
			b.count += d
		} else {
			b.count -= d
		}
		b.words[w] = nw
		b.markPage(w)
	}
	return changed
}

func (b *Bitmap) markPage(w uint64) {
	p := w / wordsPerPage
	b.dirty[p/64] |= 1 << (p % 64)
}

// NextSet returns the first set bit at or after from.
func (b *Bitmap) NextSet(from uint64) (uint64, bool) { return b.next(from, 0) }

// NextClear returns the first clear bit at or after from.
func (b *Bitmap) NextClear(from uint64) (uint64, bool) { return b.next(from, ^uint64(0)) }

// next finds the first bit at or after from whose value, XORed with flip's
// bit, is 1: flip 0 finds set bits, all ones finds clear bits.
func (b *Bitmap) next(from, flip uint64) (uint64, bool) {
	if from >= b.nbits {
		return 0, false
	}
	w := from / 64
	word := (b.words[w] ^ flip) & (^uint64(0) << (from % 64))
	for {
		if word != 0 {
			if i := w*64 + uint64(bits.TrailingZeros64(word)); i < b.nbits {
				return i, true
			}
			return 0, false
		}
		w++
		if w >= uint64(len(b.words)) {
			return 0, false
		}
		word = b.words[w] ^ flip
	}
}

// NextRun returns the first run of set bits, as a byte range of a device
// of size bytes: its blocks start at or after off (a block that starts
// before off is not returned, so a caller whose cursor ends inside the
// last, partial block is done), are set in b and clear in skip (nil: no
// skip), and span at most maxLen bytes (at least one block). The range is
// clamped to size.
func (b *Bitmap) NextRun(off, maxLen, size int64, skip *Bitmap) (start, length int64, ok bool) {
	g := int64(1) << b.shift
	from := uint64((max(off, 0) + g - 1) / g)
	for {
		i, found := b.NextSet(from)
		if !found {
			return 0, 0, false
		}
		if skip != nil && skip.Test(i) {
			j, found := skip.NextClear(i)
			if !found {
				return 0, 0, false
			}
			from = j
			continue
		}
		limit := uint64(max(maxLen/g, 1))
		end := i + 1
		for end < b.nbits && end-i < limit && b.Test(end) && (skip == nil || !skip.Test(end)) {
			end++
		}
		start = int64(i) * g
		length = min(int64(end-i)*g, size-start)
		if length <= 0 {
			return 0, 0, false
		}
		return start, length, true
	}
}

// Merge ORs other into b (the connect-time union of both nodes' out-of-sync
// blocks). Both must have the same geometry.
func (b *Bitmap) Merge(other *Bitmap) error {
	if other.nbits != b.nbits || other.shift != b.shift {
		return fmt.Errorf("%w: %d bits of %d bytes vs %d bits of %d bytes", ErrGeometry,
			b.nbits, b.Granularity(), other.nbits, other.Granularity())
	}
	for w, ow := range other.words {
		old := b.words[w]
		if nw := old | ow; nw != old {
			b.count += uint64(bits.OnesCount64(nw ^ old))
			b.words[w] = nw
			b.markPage(uint64(w))
		}
	}
	return nil
}

// Pages is the number of PageSize pages of the serialized form.
func (b *Bitmap) Pages() int { return (len(b.words) + wordsPerPage - 1) / wordsPerPage }

// DirtyPages returns the pages changed since the last ClearDirtyPages, in
// order.
func (b *Bitmap) DirtyPages() []int {
	var out []int
	for i, d := range b.dirty {
		for d != 0 {
			out = append(out, i*64+bits.TrailingZeros64(d))
			d &= d - 1
		}
	}
	return out
}

// ClearDirtyPages forgets which pages changed (after they were persisted).
func (b *Bitmap) ClearDirtyPages() { clear(b.dirty) }

// PageOf returns the page of the serialized form that holds bit i.
func (b *Bitmap) PageOf(i uint64) int { return int(i / 64 / wordsPerPage) }

// PageDirty reports whether page p changed since it was last marked clean.
func (b *Bitmap) PageDirty(p int) bool { return b.dirty[p/64]&(1<<(p%64)) != 0 }

// ClearPageDirty marks page p clean (after it alone was persisted).
func (b *Bitmap) ClearPageDirty(p int) { b.dirty[p/64] &^= 1 << (p % 64) }

// AppendPage appends page p of the serialized form (little-endian words,
// zero-padded to PageSize) to dst.
func (b *Bitmap) AppendPage(dst []byte, p int) []byte {
	start := p * wordsPerPage
	for i := 0; i < wordsPerPage; i++ {
		var w uint64
		if start+i < len(b.words) {
			w = b.words[start+i]
		}
		dst = append(dst, byte(w), byte(w>>8), byte(w>>16), byte(w>>24), byte(w>>32), byte(w>>40), byte(w>>48), byte(w>>56))
	}
	return dst
}

// LoadPage replaces page p from its serialized form (PageSize bytes). Bits
// past the end must be zero.
func (b *Bitmap) LoadPage(p int, data []byte) error {
	if p < 0 || p >= b.Pages() || len(data) != PageSize {
		return fmt.Errorf("bitmap: page %d of %d bytes does not fit %d pages", p, len(data), b.Pages())
	}
	start := p * wordsPerPage
	for i := 0; i < wordsPerPage; i++ {
		o := data[i*8:]
		w := uint64(o[0]) | uint64(o[1])<<8 | uint64(o[2])<<16 | uint64(o[3])<<24 |
			uint64(o[4])<<32 | uint64(o[5])<<40 | uint64(o[6])<<48 | uint64(o[7])<<56
		idx := start + i
		if idx >= len(b.words) {
			if w != 0 {
				return fmt.Errorf("bitmap: page %d has bits set past the end", p)
			}
			continue
		}
		if idx == len(b.words)-1 && b.nbits%64 != 0 && w>>(b.nbits%64) != 0 {
			return fmt.Errorf("bitmap: page %d has bits set past bit %d", p, b.nbits)
		}
		b.count -= uint64(bits.OnesCount64(b.words[idx]))
		b.count += uint64(bits.OnesCount64(w))
		b.words[idx] = w
	}
	return nil
}

// Check verifies the invariants of the package doc.
func (b *Bitmap) Check() error {
	var n uint64
	for _, w := range b.words {
		n += uint64(bits.OnesCount64(w))
	}
	if n != b.count {
		return fmt.Errorf("bitmap: count %d, but %d bits are set", b.count, n)
	}
	if r := b.nbits % 64; r != 0 && b.words[len(b.words)-1]>>r != 0 {
		return fmt.Errorf("bitmap: bits set past bit %d", b.nbits)
	}
	return nil
}
