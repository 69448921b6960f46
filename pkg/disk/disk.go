package disk

import (
	"errors"
	"fmt"
)

// Disk is a fixed-size block store. It satisfies nbd.Device; see there for
// the concurrency and durability contract. Durable means: after WriteAt
// with fua, or after Flush, the data survives a crash or power loss of the
// machine (fdatasync on files and block devices). Close must not run
// concurrently with the other methods: callers stop their I/O first.
type Disk interface {
	Size() int64
	ReadOnly() bool
	ReadAt(p []byte, off int64) error
	WriteAt(p []byte, off int64, fua bool) error
	Flush() error
	Trim(off, length int64, fua bool) error
	WriteZeroes(off, length int64, noHole, fua bool) error
	Close() error
}

var (
	// ErrOutOfRange is returned for a range outside [0, Size()).
	ErrOutOfRange = errors.New("disk: range outside the disk")
	// ErrReadOnly is returned for a write to a disk opened read-only.
	ErrReadOnly = errors.New("disk: read-only")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("disk: closed")
)

// checkRange validates [off, off+n) against size.
func checkRange(off, n, size int64) error {
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%w: offset %d length %d, size %d", ErrOutOfRange, off, n, size)
	}
	return nil
}

// AllZero reports whether b holds only zero bytes: a block a WRITE_ZEROES
// or a hole can stand for.
func AllZero(b []byte) bool {
	for len(b) >= len(zeroPage) {
		if string(b[:len(zeroPage)]) != string(zeroPage[:]) {
			return false
		}
		b = b[len(zeroPage):]
	}
	return string(b) == string(zeroPage[:len(b)])
}

// zeroPage is what AllZero compares with (memequal, not a byte loop).
var zeroPage [16 << 10]byte
