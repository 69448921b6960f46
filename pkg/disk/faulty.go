package disk

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
)

// OpKind names a Disk operation, for fault injection.
type OpKind int

// The operations a Faulty disk can fail.
const (
	OpRead OpKind = iota
	OpWrite
	OpFlush
	OpTrim
	OpWriteZeroes
)

func (k OpKind) String() string {
	switch k {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	case OpTrim:
		return "trim"
	case OpWriteZeroes:
		return "write-zeroes"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Op describes one operation about to reach the disk.
type Op struct {
	Kind   OpKind
	Off    int64
	Len    int64
	FUA    bool
	NoHole bool
}

// Injector decides the fate of an operation: nil lets it through, an
// error fails it without touching the disk. It may also block (to delay
// the operation or hold it at a chosen moment). It is called concurrently.
type Injector func(Op) error

// ErrInjected is the error a typical injector returns; it wraps EIO.
var ErrInjected = fmt.Errorf("disk: injected fault: %w", syscall.EIO)

// Faulty wraps a Disk and consults an Injector before every operation,
// in the spirit of pebble's errorfs.
type Faulty struct {
	Disk
	inj atomic.Pointer[Injector]
}

// NewFaulty wraps d; inj may be nil (no faults until SetInjector).
func NewFaulty(d Disk, inj Injector) *Faulty {
	f := &Faulty{Disk: d}
	f.SetInjector(inj)
	return f
}

// SetInjector replaces the injector; nil removes it.
func (f *Faulty) SetInjector(inj Injector) {
	if inj == nil {
		f.inj.Store(nil)
		return
	}
	f.inj.Store(&inj)
}

func (f *Faulty) check(op Op) error {
	if p := f.inj.Load(); p != nil {
		if err := (*p)(op); err != nil {
			return fmt.Errorf("disk: %s at %d length %d: %w", op.Kind, op.Off, op.Len, err)
		}
	}
	return nil
}

// MinBlockSize forwards the wrapped disk's alignment, if it has one.
func (f *Faulty) MinBlockSize() int {
	if bs, ok := f.Disk.(interface{ MinBlockSize() int }); ok {
		return bs.MinBlockSize()
	}
	return 1
}

// ReadAt implements Disk.
func (f *Faulty) ReadAt(p []byte, off int64) error {
	if err := f.check(Op{Kind: OpRead, Off: off, Len: int64(len(p))}); err != nil {
		return err
	}
	return f.Disk.ReadAt(p, off)
}

// WriteAt implements Disk.
func (f *Faulty) WriteAt(p []byte, off int64, fua bool) error {
	if err := f.check(Op{Kind: OpWrite, Off: off, Len: int64(len(p)), FUA: fua}); err != nil {
		return err
	}
	return f.Disk.WriteAt(p, off, fua)
}

// Flush implements Disk.
func (f *Faulty) Flush() error {
	if err := f.check(Op{Kind: OpFlush}); err != nil {
		return err
	}
	return f.Disk.Flush()
}

// Trim implements Disk.
func (f *Faulty) Trim(off, n int64, fua bool) error {
	if err := f.check(Op{Kind: OpTrim, Off: off, Len: n, FUA: fua}); err != nil {
		return err
	}
	return f.Disk.Trim(off, n, fua)
}

// WriteZeroes implements Disk.
func (f *Faulty) WriteZeroes(off, n int64, noHole, fua bool) error {
	if err := f.check(Op{Kind: OpWriteZeroes, Off: off, Len: n, FUA: fua, NoHole: noHole}); err != nil {
		return err
	}
	return f.Disk.WriteZeroes(off, n, noHole, fua)
}

// FailAll is an Injector that fails every operation of the given kinds.
func FailAll(kinds ...OpKind) Injector {
	return func(op Op) error {
		for _, k := range kinds {
			if op.Kind == k {
				return ErrInjected
			}
		}
		return nil
	}
}

// IsInjected reports whether err came from an injector returning ErrInjected.
func IsInjected(err error) bool { return errors.Is(err, ErrInjected) }
