package disk

import (
	"sync"
	"sync/atomic"
)

// MemStats counts the operations a Mem disk has served.
type MemStats struct {
	Reads, Writes, FUAWrites, Flushes, Trims, Zeroes int64
}

// Mem is an in-memory Disk for tests and demos. Trim and WriteZeroes both
// leave zeroes. It counts operations so tests can check what reached the
// disk (a FUA, a flush).
type Mem struct {
	mu       sync.RWMutex
	data     []byte
	readOnly bool
	minBlock int

	reads, writes, fuaWrites, flushes, trims, zeroes atomic.Int64
}

// MemOptions configure NewMem.
type MemOptions struct {
	ReadOnly bool
	// MinBlockSize, when above 1, makes the disk report it (as O_DIRECT
	// files do) so the NBD server enforces alignment.
	MinBlockSize int
}

// NewMem returns a zeroed in-memory disk of size bytes.
func NewMem(size int64, opts MemOptions) *Mem {
	return &Mem{data: make([]byte, size), readOnly: opts.ReadOnly, minBlock: max(opts.MinBlockSize, 1)}
}

// Size implements Disk.
func (m *Mem) Size() int64 { return int64(len(m.data)) }

// ReadOnly implements Disk.
func (m *Mem) ReadOnly() bool { return m.readOnly }

// MinBlockSize reports the configured alignment.
func (m *Mem) MinBlockSize() int { return m.minBlock }

// ReadAt implements Disk.
func (m *Mem) ReadAt(p []byte, off int64) error {
	if err := checkRange(off, int64(len(p)), m.Size()); err != nil {
		return err
	}
	m.reads.Add(1)
	m.mu.RLock()
	copy(p, m.data[off:])
	m.mu.RUnlock()
	return nil
}

// WriteAt implements Disk.
func (m *Mem) WriteAt(p []byte, off int64, fua bool) error {
	if err := m.writable(off, int64(len(p))); err != nil {
		return err
	}
	m.writes.Add(1)
	if fua {
		m.fuaWrites.Add(1)
	}
	m.mu.Lock()
	copy(m.data[off:], p)
	m.mu.Unlock()
	return nil
}

// Flush implements Disk.
func (m *Mem) Flush() error {
	m.flushes.Add(1)
	return nil
}

// Trim implements Disk.
func (m *Mem) Trim(off, n int64, fua bool) error {
	if err := m.writable(off, n); err != nil {
		return err
	}
	m.trims.Add(1)
	m.zero(off, n)
	return nil
}

// WriteZeroes implements Disk.
func (m *Mem) WriteZeroes(off, n int64, noHole, fua bool) error {
	if err := m.writable(off, n); err != nil {
		return err
	}
	m.zeroes.Add(1)
	m.zero(off, n)
	return nil
}

func (m *Mem) zero(off, n int64) {
	m.mu.Lock()
	clear(m.data[off : off+n])
	m.mu.Unlock()
}

func (m *Mem) writable(off, n int64) error {
	if m.readOnly {
		return ErrReadOnly
	}
	return checkRange(off, n, m.Size())
}

// Close implements Disk.
func (m *Mem) Close() error { return nil }

// Bytes returns a copy of the disk's content.
func (m *Mem) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data...)
}

// Stats returns the operation counters.
func (m *Mem) Stats() MemStats {
	return MemStats{
		Reads: m.reads.Load(), Writes: m.writes.Load(), FUAWrites: m.fuaWrites.Load(),
		Flushes: m.flushes.Load(), Trims: m.trims.Load(), Zeroes: m.zeroes.Load(),
	}
}
