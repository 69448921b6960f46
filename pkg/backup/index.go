package backup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// The files of net { backup-discarded yes; } (see doc.go), in the
// metadata directory (the directory of the meta-disk file; with
// internal metadata, of the backing disk):
//
//	RES-discarded-YYYYMMDDTHHMMSSZ.img         the saved blocks
//	RES-discarded-YYYYMMDDTHHMMSSZ.img.blocks  their index
//
// The image is a sparse file the size of the data area: each saved
// block at its own offset, everything else a hole. The index is text,
// one line at a time:
//
//	# twinblock backup-discarded v1: resource r0, node b, ...   (comments: '#')
//	OFFSET LENGTH        a run of saved blocks, in bytes, decimal
//	...
//	complete             the resync finished: nothing more is saved
//
// OFFSET is a multiple of BlockSize; LENGTH is one or more
// blocks (the last block of the data area may be short). A line that a
// crash cut short (no newline) is not part of the index: its save did
// not complete, so the block was not overwritten either.

// BlockSize is the unit saved: a block is saved whole before
// any of it is overwritten.
const BlockSize = 4096

// completeLine ends a finished index.
const completeLine = "complete"

// ErrBadIndex is wrapped by the errors of ParseIndex
// for a malformed line.
var ErrBadIndex = errors.New("backup: malformed discarded-blocks index")

// Run is one run of saved blocks: bytes [Offset, Offset+Length)
// of the data area.
type Run struct{ Offset, Length int64 }

// Index is a parsed .img.blocks file.
type Index struct {
	Header   string // the first comment line, without "# "
	Runs     []Run
	Complete bool
	// Valid is the length of the well-formed prefix of the file; Torn
	// reports a final line without its newline after it (ignored).
	Valid int64
	Torn  bool
}

// Blocks is the number of BlockSize blocks the runs hold (a
// short last block counts as one) and Bytes their length.
func (x *Index) Blocks() (blocks, bytes int64) {
	for _, r := range x.Runs {
		blocks += (r.Length + BlockSize - 1) / BlockSize
		bytes += r.Length
	}
	return blocks, bytes
}

// FileName is the image's name for resource res, created at t.
func FileName(res string, t time.Time) string {
	return fmt.Sprintf("%s-discarded-%s.img", res, t.UTC().Format("20060102T150405Z"))
}

// IndexPath is the index of the image at img.
func IndexPath(img string) string { return img + ".blocks" }

// ReadIndex reads and parses the index at path.
func ReadIndex(path string) (*Index, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backup: discarded-blocks index: %w", err)
	}
	defer f.Close()
	return ParseIndex(f, path)
}

// ParseIndex parses an index; name is used in the errors, which
// name the line ("FILE:LINE: ...") and wrap ErrBadIndex.
func ParseIndex(r io.Reader, name string) (*Index, error) {
	x := &Index{}
	br := bufio.NewReader(r)
	bad := func(line int, format string, args ...any) error {
		return fmt.Errorf("%w: %s:%d: %s", ErrBadIndex, name, line, fmt.Sprintf(format, args...))
	}
	for line := 1; ; line++ {
		raw, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("backup: reading %s: %w", name, err)
		}
		if len(raw) == 0 {
			return x, nil
		}
		torn := raw[len(raw)-1] != '\n'
		text := strings.TrimSpace(string(bytes.TrimSuffix(raw, []byte("\n"))))
		if torn && text != completeLine {
			// A save a crash interrupted: not part of the index.
			x.Torn = true
			return x, nil
		}
		x.Valid += int64(len(raw))
		switch {
		case text == "":
		case strings.HasPrefix(text, "#"):
			if line == 1 {
				x.Header = strings.TrimSpace(strings.TrimPrefix(text, "#"))
			}
		case x.Complete:
			return nil, bad(line, "%q after the %q line", text, completeLine)
		case text == completeLine:
			x.Complete = true
		default:
			run, err := parseRun(text)
			if err != nil {
				return nil, bad(line, "%q: %v", text, err)
			}
			x.Runs = append(x.Runs, run)
		}
		if torn {
			return x, nil
		}
	}
}

func parseRun(text string) (Run, error) {
	f := strings.Fields(text)
	if len(f) != 2 {
		return Run{}, fmt.Errorf("want OFFSET LENGTH (bytes, decimal), %q or a # comment", completeLine)
	}
	off, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || off < 0 {
		return Run{}, fmt.Errorf("offset %q is not a byte count", f[0])
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n <= 0 {
		return Run{}, fmt.Errorf("length %q is not a positive byte count", f[1])
	}
	if off%BlockSize != 0 {
		return Run{}, fmt.Errorf("offset %d is not a multiple of %d", off, BlockSize)
	}
	if off > 1<<62 || n > 1<<62 {
		return Run{}, fmt.Errorf("run beyond any disk")
	}
	return Run{Offset: off, Length: n}, nil
}

// CheckRuns reports the first run of the index that does not fit in
// size bytes (the image's, the data area's).
func (x *Index) CheckRuns(size int64) error {
	for _, r := range x.Runs {
		if r.Offset+r.Length > size {
			return fmt.Errorf("%w: the run %d %d ends beyond the %d bytes of the image", ErrBadIndex, r.Offset, r.Length, size)
		}
	}
	return nil
}
