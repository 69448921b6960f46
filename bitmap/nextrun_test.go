package bitmap

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNextRun(t *testing.T) {
	const size = 1<<20 + 2048 // a partial last block
	bm, err := New(size, 4096)
	require.NoError(t, err)
	skip, err := New(size, 4096)
	require.NoError(t, err)
	bm.Set(2, 9)
	bm.Set(100, 256) // through the partial last block
	skip.Set(4, 5)
	tests := []struct {
		name         string
		off, max     int64
		skip         bool
		wantOff, len int64
		ok           bool
	}{
		{"first run", 0, 1 << 20, false, 2 * 4096, 8 * 4096, true},
		{"capped at max", 0, 3 * 4096, false, 2 * 4096, 3 * 4096, true},
		{"stops at a skipped block", 0, 1 << 20, true, 2 * 4096, 2 * 4096, true},
		{"jumps over skipped blocks", 4 * 4096, 1 << 20, true, 6 * 4096, 4 * 4096, true},
		{"clamped to the device", 200 * 4096, 1 << 20, false, 200 * 4096, size - 200*4096, true},
		{"nothing after the end", 257 * 4096, 1 << 20, false, 0, 0, false},
		{"a cursor inside a block starts at the next one", 2*4096 + 512, 1 << 20, false, 3 * 4096, 7 * 4096, true},
		{"a cursor at the end of the partial block is done", size, 1 << 20, false, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s *Bitmap
			if tt.skip {
				s = skip
			}
			off, n, ok := bm.NextRun(tt.off, tt.max, size, s)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.wantOff, off)
			require.Equal(t, tt.len, n)
		})
	}
}
