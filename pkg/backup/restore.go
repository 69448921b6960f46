package backup

import (
	"errors"
	"fmt"
	"os"
)

// Image is a discarded-blocks image opened for restore-discarded, its
// index read and checked against it.
type Image struct {
	path string
	f    *os.File
	x    *Index
	size int64
}

// OpenImage opens the image at img and its index. An index without its
// "complete" line (the resync that discarded the blocks did not finish)
// is refused unless force.
func OpenImage(img string, force bool) (*Image, error) {
	idxPath := IndexPath(img)
	x, err := ReadIndex(idxPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("no index %s: restore-discarded needs the .img.blocks file next to the image", idxPath)
	case err != nil:
		return nil, err
	}
	if !x.Complete && !force {
		return nil, fmt.Errorf("%s is incomplete (no %q line: the resync that discarded these blocks did not finish); use --force to restore the blocks it lists", idxPath, completeLine)
	}
	f, err := os.Open(img)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil {
		err = x.CheckRuns(st.Size())
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", idxPath, err)
	}
	return &Image{path: img, f: f, x: x, size: st.Size()}, nil
}

// Size is the data area's size the image was saved from.
func (m *Image) Size() int64 { return m.size }

// Close closes the image.
func (m *Image) Close() error { return m.f.Close() }

// Target is where Restore writes: the resource's replicated device (an
// NBD client of this node's export).
type Target interface {
	WriteAt(p []byte, off int64, fua bool) error
	Flush() error
}

// Restore writes every block the index lists from the image to t, in
// requests of at most chunk bytes, then flushes t. It reports the blocks
// and bytes written.
func (m *Image) Restore(t Target, chunk int64) (blocks, bytes int64, err error) {
	chunk = max(chunk, BlockSize)
	buf := make([]byte, chunk)
	for _, r := range m.x.Runs {
		for pos := r.Offset; pos < r.Offset+r.Length; {
			b := buf[:min(chunk, r.Offset+r.Length-pos)]
			if _, err := m.f.ReadAt(b, pos); err != nil {
				return 0, 0, fmt.Errorf("reading %s at %d: %w", m.path, pos, err)
			}
			if err := t.WriteAt(b, pos, false); err != nil {
				return 0, 0, fmt.Errorf("writing %d bytes at %d: %w", len(b), pos, err)
			}
			pos += int64(len(b))
		}
	}
	if err := t.Flush(); err != nil {
		return 0, 0, fmt.Errorf("flush: %w", err)
	}
	blocks, bytes = m.x.Blocks()
	return blocks, bytes, nil
}
