package node

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

// The files of net { backup-discarded yes; } (see backup.go), in the
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
// OFFSET is a multiple of DiscardedBlockSize; LENGTH is one or more
// blocks (the last block of the data area may be short). A line that a
// crash cut short (no newline) is not part of the index: its save did
// not complete, so the block was not overwritten either.

// DiscardedBlockSize is the unit saved: a block is saved whole before
// any of it is overwritten.
const DiscardedBlockSize = 4096

// discardedCompleteLine ends a finished index.
const discardedCompleteLine = "complete"

// ErrBadDiscardedIndex is wrapped by the errors of ParseDiscardedIndex
// for a malformed line.
var ErrBadDiscardedIndex = errors.New("node: malformed discarded-blocks index")

// DiscardedRun is one run of saved blocks: bytes [Offset, Offset+Length)
// of the data area.
type DiscardedRun struct{ Offset, Length int64 }

// DiscardedIndex is a parsed .img.blocks file.
type DiscardedIndex struct {
	Header   string // the first comment line, without "# "
	Runs     []DiscardedRun
	Complete bool
	// Valid is the length of the well-formed prefix of the file; Torn
	// reports a final line without its newline after it (ignored).
	Valid int64
	Torn  bool
}

// Blocks is the number of DiscardedBlockSize blocks the runs hold (a
// short last block counts as one) and Bytes their length.
func (x *DiscardedIndex) Blocks() (blocks, bytes int64) {
	for _, r := range x.Runs {
		blocks += (r.Length + DiscardedBlockSize - 1) / DiscardedBlockSize
		bytes += r.Length
	}
	return blocks, bytes
}

// DiscardedFileName is the image's name for resource res, created at t.
func DiscardedFileName(res string, t time.Time) string {
	return fmt.Sprintf("%s-discarded-%s.img", res, t.UTC().Format("20060102T150405Z"))
}

// DiscardedIndexPath is the index of the image at img.
func DiscardedIndexPath(img string) string { return img + ".blocks" }

// ReadDiscardedIndex reads and parses the index at path.
func ReadDiscardedIndex(path string) (*DiscardedIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("node: discarded-blocks index: %w", err)
	}
	defer f.Close()
	return ParseDiscardedIndex(f, path)
}

// ParseDiscardedIndex parses an index; name is used in the errors, which
// name the line ("FILE:LINE: ...") and wrap ErrBadDiscardedIndex.
func ParseDiscardedIndex(r io.Reader, name string) (*DiscardedIndex, error) {
	x := &DiscardedIndex{}
	br := bufio.NewReader(r)
	bad := func(line int, format string, args ...any) error {
		return fmt.Errorf("%w: %s:%d: %s", ErrBadDiscardedIndex, name, line, fmt.Sprintf(format, args...))
	}
	for line := 1; ; line++ {
		raw, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("node: reading %s: %w", name, err)
		}
		if len(raw) == 0 {
			return x, nil
		}
		torn := raw[len(raw)-1] != '\n'
		text := strings.TrimSpace(string(bytes.TrimSuffix(raw, []byte("\n"))))
		if torn && text != discardedCompleteLine {
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
			return nil, bad(line, "%q after the %q line", text, discardedCompleteLine)
		case text == discardedCompleteLine:
			x.Complete = true
		default:
			run, err := parseDiscardedRun(text)
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

func parseDiscardedRun(text string) (DiscardedRun, error) {
	f := strings.Fields(text)
	if len(f) != 2 {
		return DiscardedRun{}, fmt.Errorf("want OFFSET LENGTH (bytes, decimal), %q or a # comment", discardedCompleteLine)
	}
	off, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || off < 0 {
		return DiscardedRun{}, fmt.Errorf("offset %q is not a byte count", f[0])
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n <= 0 {
		return DiscardedRun{}, fmt.Errorf("length %q is not a positive byte count", f[1])
	}
	if off%DiscardedBlockSize != 0 {
		return DiscardedRun{}, fmt.Errorf("offset %d is not a multiple of %d", off, DiscardedBlockSize)
	}
	if off > 1<<62 || n > 1<<62 {
		return DiscardedRun{}, fmt.Errorf("run beyond any disk")
	}
	return DiscardedRun{Offset: off, Length: n}, nil
}

// CheckRuns reports the first run of the index that does not fit in
// size bytes (the image's, the data area's).
func (x *DiscardedIndex) CheckRuns(size int64) error {
	for _, r := range x.Runs {
		if r.Offset+r.Length > size {
			return fmt.Errorf("%w: the run %d %d ends beyond the %d bytes of the image", ErrBadDiscardedIndex, r.Offset, r.Length, size)
		}
	}
	return nil
}
