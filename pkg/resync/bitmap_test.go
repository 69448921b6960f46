package resync

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestBitmapOfNextDirty(t *testing.T) {
	const size = 64*BlockSize + 1000 // 65 blocks, the last partial
	for _, tc := range []struct {
		name     string
		marks    [][2]int64
		off, max int64
		wantOff  int64
		wantLen  int64
		wantOK   bool
	}{
		{"clean", nil, 0, 1 << 20, 0, 0, false},
		{"first block", [][2]int64{{0, 1}}, 0, 1 << 20, 0, BlockSize, true},
		{"run capped by max", [][2]int64{{0, 10 * BlockSize}}, 0, 3 * BlockSize, 0, 3 * BlockSize, true},
		{"max rounded down to blocks", [][2]int64{{0, 10 * BlockSize}}, 0, 3*BlockSize + 100, 0, 3 * BlockSize, true},
		{"max under a block gives one", [][2]int64{{0, 10 * BlockSize}}, 0, 100, 0, BlockSize, true},
		{"at or after off", [][2]int64{{0, 10 * BlockSize}}, 4 * BlockSize, 1 << 20, 4 * BlockSize, 6 * BlockSize, true},
		{"an unaligned off skips its block", [][2]int64{{0, 10 * BlockSize}}, 4*BlockSize + 1, 1 << 20, 5 * BlockSize, 5 * BlockSize, true},
		{"skips clean blocks", [][2]int64{{20 * BlockSize, 2 * BlockSize}}, 0, 1 << 20, 20 * BlockSize, 2 * BlockSize, true},
		{"nothing after off", [][2]int64{{0, BlockSize}}, BlockSize, 1 << 20, 0, 0, false},
		{"clamped to the size", [][2]int64{{63 * BlockSize, 2 * BlockSize}}, 0, 1 << 20, 63 * BlockSize, BlockSize + 1000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemBitmap(t, size)
			for _, mk := range tc.marks {
				m.MarkOutOfSync(mk[0], mk[1])
			}
			off, n, ok := m.NextDirty(tc.off, tc.max)
			assert.Equal(t, tc.wantOK, ok)
			assert.Equal(t, tc.wantOff, off)
			assert.Equal(t, tc.wantLen, n)
		})
	}
}

func TestBitmapOfSetInSync(t *testing.T) {
	const size = 8*BlockSize + 1000
	for _, tc := range []struct {
		name      string
		off, n    int64
		wantDirty [][2]int64
	}{
		{"whole blocks", BlockSize, 2 * BlockSize, [][2]int64{{0, BlockSize}, {3 * BlockSize, 6 * BlockSize}}},
		{"partial blocks stay", 100, 2 * BlockSize, [][2]int64{{0, BlockSize}, {2 * BlockSize, 7 * BlockSize}}},
		{"the partial last block with the end", 8 * BlockSize, 1000, [][2]int64{{0, 8 * BlockSize}}},
		{"everything", 0, size, nil},
		{"negative", -BlockSize, 3 * BlockSize, [][2]int64{{0, 9 * BlockSize}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemBitmap(t, size)
			m.MarkOutOfSync(0, size)
			assert.Equal(t, int64(9*BlockSize), m.OutOfSyncBytes(), "bits × granularity")
			m.SetInSync(tc.off, tc.n)
			assert.Equal(t, tc.wantDirty, m.dirty())
		})
	}
}
