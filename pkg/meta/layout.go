package meta

import (
	"fmt"
	"strconv"

	"github.com/twinblock/twinblock/bitmap"
)

// Sizes of the metadata areas, as DRBD 8.4 has them.
const (
	// SuperblockSize is the superblock area: one 4 KiB block holding two
	// slots (see superblock.go).
	SuperblockSize = 4096
	// ALBlockSize is one activity-log transaction.
	ALBlockSize = 4096
	// DefaultALSize is the activity-log ring DRBD uses by default
	// (al-stripes 1 × al-stripe-size 32 KiB): 8 transactions.
	DefaultALSize = 32 << 10
	// IndexedSize is the fixed size of one slot of DRBD's indexed
	// external layout (meta-disk PATH[IDX]).
	IndexedSize = 128 << 20
	// ExtentSize is the activity log's unit: 4 MiB (AL_EXTENT_SHIFT 22).
	ExtentSize = 4 << 20
	// DefaultGranularity is one bitmap bit per 4 KiB block.
	DefaultGranularity = bitmap.MinGranularity
	// bmBitsPerSector is what one 512-byte bitmap sector holds; DRBD
	// sizes the bitmap in whole sectors of it, then in 4 KiB.
	bmBitsPerSector = 512 * 8
)

// Activity-log limits (drbd_limits.h).
const (
	MinALExtents     = 67
	MaxALExtents     = 65534
	DefaultALExtents = 1237
)

// Placement is where the metadata lives (drbd.conf's meta-disk).
type Placement struct {
	// Internal: at the end of the backing disk itself.
	Internal bool
	// Index is the slot of DRBD's indexed external layout (PATH[IDX]),
	// each IndexedSize bytes; -1 for the flexible external layout
	// (PATH alone). Ignored when Internal.
	Index int
}

// InternalPlacement is meta-disk internal.
var InternalPlacement = Placement{Internal: true, Index: -1}

// ExternalPlacement is meta-disk PATH (index < 0) or PATH[index].
func ExternalPlacement(index int) Placement { return Placement{Index: index} }

// String names the placement as drbd.conf does.
func (p Placement) String() string {
	switch {
	case p.Internal:
		return "internal"
	case p.Index >= 0:
		return "external[" + strconv.Itoa(p.Index) + "]"
	default:
		return "external (flexible)"
	}
}

// Layout is where each metadata area sits and how much data remains,
// computed as DRBD 8.4 does (drbd_md_set_sector_offsets):
//
//   - internal: [data][bitmap][activity log][superblock] at the end of
//     the backing disk (its size rounded down to 4 KiB); the bitmap covers
//     the whole backing disk, in 512-byte sectors of bits rounded up to
//     4 KiB; the data is what remains before it.
//   - external, flexible: [superblock][activity log][bitmap] from offset 0
//     of the meta device; the data is the whole backing disk.
//   - external, indexed: the same in a fixed 128 MiB slot at
//     index × 128 MiB; the data is capped at what that bitmap covers.
//
// All offsets are absolute byte offsets on the meta device (the backing
// disk itself when internal), all multiples of 4 KiB.
type Layout struct {
	Placement   Placement
	Granularity int   // bytes per bitmap bit
	ALExtents   int   // activity-log slots
	Capacity    int64 // backing disk size, rounded down to 4 KiB
	DataSize    int64 // usable, exported size
	MDOffset    int64 // the superblock
	MDSize      int64 // superblock + activity log + bitmap (128 MiB when indexed)
	ALOffset    int64
	ALSize      int64
	BMOffset    int64
	BMSize      int64
}

// ALRingSize is the activity-log ring needed for n slots: DRBD's 32 KiB
// when that suffices (n ≤ 6433), otherwise the smallest ring whose last
// R-1 transactions cover every slot in their context windows. DRBD asks
// for al-stripe-size to be raised by hand instead; twinblock sizes it at
// create-md.
func ALRingSize(n int) int64 {
	need := int64((n+ALContextSlots-1)/ALContextSlots+1) * ALBlockSize
	return max(DefaultALSize, need)
}

// maxALExtents is how many slots a ring of size bytes can recover.
func maxALExtents(ringSize int64) int {
	return int(ringSize/ALBlockSize-1) * ALContextSlots
}

// bitmapBytes is DRBD's bitmap size for capacity bytes: one bit per
// granularity bytes, in whole 512-byte sectors, rounded up to 4 KiB.
func bitmapBytes(capacity int64, granularity int) int64 {
	perSector := int64(bmBitsPerSector) * int64(granularity)
	sectors := (capacity + perSector - 1) / perSector
	return alignUp(sectors*512, 4096)
}

// ComputeLayout returns the layout for a backing disk of dataDev bytes
// and, when external, a meta device of metaDev bytes.
func ComputeLayout(p Placement, dataDev, metaDev int64, granularity, alExtents int) (Layout, error) {
	if granularity < bitmap.MinGranularity || granularity > bitmap.MaxGranularity || granularity&(granularity-1) != 0 {
		return Layout{}, fmt.Errorf("meta: bitmap granularity %d is not a power of two between %d and %d",
			granularity, bitmap.MinGranularity, bitmap.MaxGranularity)
	}
	if alExtents < MinALExtents || alExtents > MaxALExtents {
		return Layout{}, fmt.Errorf("meta: al-extents %d out of range %d..%d", alExtents, MinALExtents, MaxALExtents)
	}
	l := Layout{Placement: p, Granularity: granularity, ALExtents: alExtents, Capacity: alignDown(dataDev, 4096)}
	switch {
	case p.Internal:
		l.ALSize = ALRingSize(alExtents)
		l.BMSize = bitmapBytes(l.Capacity, granularity)
		l.MDSize = SuperblockSize + l.ALSize + l.BMSize
		if l.Capacity <= l.MDSize {
			return Layout{}, fmt.Errorf("meta: backing disk of %d bytes is too small for %d bytes of internal metadata", dataDev, l.MDSize)
		}
		l.MDOffset = l.Capacity - SuperblockSize
		l.ALOffset = l.MDOffset - l.ALSize
		l.BMOffset = l.Capacity - l.MDSize
		l.DataSize = l.Capacity - l.MDSize
	case p.Index >= 0:
		l.ALSize = DefaultALSize
		if max := maxALExtents(l.ALSize); alExtents > max {
			return Layout{}, fmt.Errorf("meta: al-extents %d does not fit the indexed layout's 32 KiB activity log (at most %d)", alExtents, max)
		}
		l.MDSize = IndexedSize
		l.MDOffset = int64(p.Index) * IndexedSize
		l.ALOffset = l.MDOffset + SuperblockSize
		l.BMOffset = l.ALOffset + l.ALSize
		l.BMSize = IndexedSize - SuperblockSize - l.ALSize
		l.DataSize = min(l.Capacity, l.BMSize*8*int64(granularity))
		if metaDev < l.MDOffset+l.MDSize {
			return Layout{}, fmt.Errorf("meta: meta device of %d bytes has no index %d (needs %d bytes)", metaDev, p.Index, l.MDOffset+l.MDSize)
		}
	default:
		l.ALSize = ALRingSize(alExtents)
		l.BMSize = bitmapBytes(l.Capacity, granularity)
		l.MDSize = SuperblockSize + l.ALSize + l.BMSize
		l.MDOffset = 0
		l.ALOffset = SuperblockSize
		l.BMOffset = SuperblockSize + l.ALSize
		l.DataSize = l.Capacity
		if metaDev < l.MDSize {
			return Layout{}, fmt.Errorf("meta: meta device of %d bytes is too small: %d bytes needed", metaDev, l.MDSize)
		}
	}
	if l.DataSize <= 0 {
		return Layout{}, fmt.Errorf("meta: backing disk of %d bytes leaves no data", dataDev)
	}
	return l, nil
}

// SuperblockOffset is where the superblock of placement p is on a meta
// device of metaDev bytes; it needs no other geometry, so metadata can be
// found before it is read.
func SuperblockOffset(p Placement, metaDev int64) int64 {
	switch {
	case p.Internal:
		return alignDown(metaDev, 4096) - SuperblockSize
	case p.Index >= 0:
		return int64(p.Index) * IndexedSize
	default:
		return 0
	}
}

// Extents is the number of activity-log extents of the data area.
func (l Layout) Extents() int64 { return (l.DataSize + ExtentSize - 1) / ExtentSize }

func alignUp(x, a int64) int64   { return (x + a - 1) / a * a }
func alignDown(x, a int64) int64 { return x / a * a }
