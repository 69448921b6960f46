package meta

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestComputeLayout(t *testing.T) {
	const (
		GiB = int64(1) << 30
		TiB = int64(1) << 40
	)
	for _, tc := range []struct {
		name             string
		p                Placement
		dataDev, metaDev int64
		gran, al         int
		want             Layout
	}{
		{
			// DRBD: md_size_sect = ALIGN(2097152/32768, 8) + 8 + 64 = 136 sectors.
			name: "internal 1 GiB", p: InternalPlacement, dataDev: GiB, metaDev: GiB, gran: 4096, al: 1237,
			want: Layout{Placement: InternalPlacement, Granularity: 4096, ALExtents: 1237, Capacity: GiB,
				DataSize: GiB - 136*512, MDOffset: GiB - 4096, MDSize: 136 * 512,
				ALOffset: GiB - 4096 - 32768, ALSize: 32768, BMOffset: GiB - 136*512, BMSize: 32768},
		},
		{
			// 1 TiB: 65536 bitmap sectors = 32 MiB of bitmap.
			name: "internal 1 TiB", p: InternalPlacement, dataDev: TiB, metaDev: TiB, gran: 4096, al: 1237,
			want: Layout{Placement: InternalPlacement, Granularity: 4096, ALExtents: 1237, Capacity: TiB,
				DataSize: TiB - (32<<20 + 36<<10), MDOffset: TiB - 4096, MDSize: 32<<20 + 36<<10,
				ALOffset: TiB - 36<<10, ALSize: 32 << 10, BMOffset: TiB - (32<<20 + 36<<10), BMSize: 32 << 20},
		},
		{
			// A size that is not a multiple of 4 KiB is rounded down; the
			// bitmap rounds its sectors up to 4 KiB.
			name: "internal odd size", p: InternalPlacement, dataDev: 100<<20 + 1234, metaDev: 100<<20 + 1234, gran: 4096, al: 67,
			want: Layout{Placement: InternalPlacement, Granularity: 4096, ALExtents: 67, Capacity: 100 << 20,
				DataSize: 100<<20 - 40960, MDOffset: 100<<20 - 4096, MDSize: 40960,
				ALOffset: 100<<20 - 4096 - 32768, ALSize: 32768, BMOffset: 100<<20 - 40960, BMSize: 4096},
		},
		{
			// 1 MiB granularity: 256 times smaller bitmap.
			name: "internal 1 TiB at 1 MiB per bit", p: InternalPlacement, dataDev: TiB, metaDev: TiB, gran: 1 << 20, al: 1237,
			want: Layout{Placement: InternalPlacement, Granularity: 1 << 20, ALExtents: 1237, Capacity: TiB,
				DataSize: TiB - (128<<10 + 36<<10), MDOffset: TiB - 4096, MDSize: 128<<10 + 36<<10,
				ALOffset: TiB - 36<<10, ALSize: 32 << 10, BMOffset: TiB - (128<<10 + 36<<10), BMSize: 128 << 10},
		},
		{
			// More than 6433 extents needs a bigger ring: ceil(10000/919)+1 = 12 blocks.
			name: "internal, large activity log", p: InternalPlacement, dataDev: GiB, metaDev: GiB, gran: 4096, al: 10000,
			want: Layout{Placement: InternalPlacement, Granularity: 4096, ALExtents: 10000, Capacity: GiB,
				DataSize: GiB - (4096 + 12*4096 + 32768), MDOffset: GiB - 4096, MDSize: 4096 + 12*4096 + 32768,
				ALOffset: GiB - 4096 - 12*4096, ALSize: 12 * 4096, BMOffset: GiB - (4096 + 12*4096 + 32768), BMSize: 32768},
		},
		{
			name: "external flexible", p: ExternalPlacement(-1), dataDev: GiB, metaDev: 1 << 20, gran: 4096, al: 1237,
			want: Layout{Placement: ExternalPlacement(-1), Granularity: 4096, ALExtents: 1237, Capacity: GiB,
				DataSize: GiB, MDOffset: 0, MDSize: 4096 + 32768 + 32768,
				ALOffset: 4096, ALSize: 32768, BMOffset: 4096 + 32768, BMSize: 32768},
		},
		{
			name: "external indexed 2", p: ExternalPlacement(2), dataDev: GiB, metaDev: 3 * IndexedSize, gran: 4096, al: 1237,
			want: Layout{Placement: ExternalPlacement(2), Granularity: 4096, ALExtents: 1237, Capacity: GiB,
				DataSize: GiB, MDOffset: 2 * IndexedSize, MDSize: IndexedSize,
				ALOffset: 2*IndexedSize + 4096, ALSize: 32768, BMOffset: 2*IndexedSize + 4096 + 32768,
				BMSize: IndexedSize - 4096 - 32768},
		},
		{
			// DRBD_MAX_SECTORS_FIXED_BM: the indexed bitmap covers just under 4 TiB.
			name: "external indexed caps the data", p: ExternalPlacement(0), dataDev: 8 * TiB, metaDev: IndexedSize, gran: 4096, al: 1237,
			want: Layout{Placement: ExternalPlacement(0), Granularity: 4096, ALExtents: 1237, Capacity: 8 * TiB,
				DataSize: (IndexedSize - 36<<10) * 8 * 4096, MDOffset: 0, MDSize: IndexedSize,
				ALOffset: 4096, ALSize: 32768, BMOffset: 4096 + 32768, BMSize: IndexedSize - 36<<10},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ComputeLayout(tc.p, tc.dataDev, tc.metaDev, tc.gran, tc.al)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.GreaterOrEqual(t, got.BMSize*8*int64(got.Granularity), got.DataSize, "the bitmap covers the data")
			assert.Equal(t, got.MDOffset, SuperblockOffset(tc.p, tc.metaDev))
		})
	}
}

func TestComputeLayoutErrors(t *testing.T) {
	for _, tc := range []struct {
		name             string
		p                Placement
		dataDev, metaDev int64
		gran, al         int
		want             string
	}{
		{"granularity not a power of two", InternalPlacement, 1 << 30, 1 << 30, 6000, 1237, "granularity 6000"},
		{"granularity too large", InternalPlacement, 1 << 30, 1 << 30, 2 << 20, 1237, "granularity"},
		{"al-extents too small", InternalPlacement, 1 << 30, 1 << 30, 4096, 66, "al-extents 66 out of range 67..65534"},
		{"al-extents too large", InternalPlacement, 1 << 30, 1 << 30, 4096, 65535, "al-extents 65535"},
		{"backing disk too small", InternalPlacement, 36 << 10, 36 << 10, 4096, 67, "too small"},
		{"meta device too small", ExternalPlacement(-1), 1 << 30, 8192, 4096, 67, "meta device of 8192 bytes is too small"},
		{"no such index", ExternalPlacement(1), 1 << 30, IndexedSize, 4096, 67, "has no index 1"},
		{"indexed log too small", ExternalPlacement(0), 1 << 30, IndexedSize, 4096, 7000, "does not fit the indexed layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ComputeLayout(tc.p, tc.dataDev, tc.metaDev, tc.gran, tc.al)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestALRingSize(t *testing.T) {
	assert.Equal(t, int64(DefaultALSize), ALRingSize(MinALExtents))
	assert.Equal(t, int64(DefaultALSize), ALRingSize(6433), "DRBD's 32 KiB ring holds 919×7 extents")
	assert.Equal(t, int64(9*4096), ALRingSize(6434))
	assert.Equal(t, 6433, maxALExtents(DefaultALSize))
	for n := MinALExtents; n <= MaxALExtents; n += 97 {
		require.GreaterOrEqual(t, maxALExtents(ALRingSize(n)), n)
	}
}
