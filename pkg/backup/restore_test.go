package backup

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
)

// TestRestore writes back exactly the runs the index lists, in requests
// no larger than the chunk, and refuses an incomplete index without
// force, a missing index and an image of another size.
func TestRestore(t *testing.T) {
	const size = 10 * BlockSize
	img := filepath.Join(t.TempDir(), "r0-discarded-20260101T000000Z.img")
	content := bytes.Repeat([]byte{0xab}, size)
	require.NoError(t, os.WriteFile(img, content, 0o600))
	runs := "# h\n4096 8192\n32768 4096\n"
	tests := []struct {
		name    string
		index   string // "": none
		force   bool
		chunk   int64
		wantErr string
	}{
		{"complete", runs + "complete\n", false, 1 << 20, ""},
		{"complete, small requests", runs + "complete\n", false, BlockSize, ""},
		{"incomplete", runs, false, 1 << 20, "incomplete"},
		{"incomplete, forced", runs, true, 1 << 20, ""},
		{"no index", "", false, 1 << 20, "no index"},
		{"a run past the image", "# h\n40960 4096\ncomplete\n", false, 1 << 20, "beyond"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.Remove(IndexPath(img))
			if tc.index != "" {
				require.NoError(t, os.WriteFile(IndexPath(img), []byte(tc.index), 0o600))
			}
			im, err := OpenImage(img, tc.force)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			defer im.Close()
			assert.EqualValues(t, size, im.Size())
			dst := &chunkCheck{Mem: disk.NewMem(size, disk.MemOptions{}), max: tc.chunk}
			blocks, n, err := im.Restore(dst, tc.chunk)
			require.NoError(t, err)
			assert.EqualValues(t, 3, blocks)
			assert.EqualValues(t, 3*BlockSize, n)
			assert.True(t, dst.flushed)
			got := dst.Bytes()
			for b := int64(0); b < size/BlockSize; b++ {
				want := byte(0)
				if b == 1 || b == 2 || b == 8 {
					want = 0xab
				}
				assert.Equal(t, bytes.Repeat([]byte{want}, BlockSize), got[b*BlockSize:(b+1)*BlockSize], "block %d", b)
			}
		})
	}
}

type chunkCheck struct {
	*disk.Mem
	max     int64
	flushed bool
}

func (c *chunkCheck) WriteAt(p []byte, off int64, fua bool) error {
	if int64(len(p)) > c.max {
		panic("a request over the chunk")
	}
	return c.Mem.WriteAt(p, off, fua)
}

func (c *chunkCheck) Flush() error { c.flushed = true; return c.Mem.Flush() }
