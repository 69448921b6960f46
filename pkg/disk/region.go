package disk

import "fmt"

// Region is a window [Offset, Offset+Length) of another disk, seen as a
// disk of its own: the data area of a backing device whose end holds
// internal metadata, so that no request to the data area can reach the
// metadata. Close does not close the underlying disk.
type Region struct {
	d           Disk
	off, length int64
}

// NewRegion returns the window of d starting at off, length bytes long.
func NewRegion(d Disk, off, length int64) (*Region, error) {
	if err := checkRange(off, length, d.Size()); err != nil {
		return nil, fmt.Errorf("disk: region: %w", err)
	}
	return &Region{d: d, off: off, length: length}, nil
}

// Size implements Disk.
func (r *Region) Size() int64 { return r.length }

// ReadOnly implements Disk.
func (r *Region) ReadOnly() bool { return r.d.ReadOnly() }

// MinBlockSize reports the underlying disk's alignment, if it has one.
func (r *Region) MinBlockSize() int {
	if bs, ok := r.d.(interface{ MinBlockSize() int }); ok {
		return bs.MinBlockSize()
	}
	return 1
}

// ReadAt implements Disk.
func (r *Region) ReadAt(p []byte, off int64) error {
	if err := checkRange(off, int64(len(p)), r.length); err != nil {
		return err
	}
	return r.d.ReadAt(p, r.off+off)
}

// WriteAt implements Disk.
func (r *Region) WriteAt(p []byte, off int64, fua bool) error {
	if err := checkRange(off, int64(len(p)), r.length); err != nil {
		return err
	}
	return r.d.WriteAt(p, r.off+off, fua)
}

// Flush implements Disk.
func (r *Region) Flush() error { return r.d.Flush() }

// Trim implements Disk.
func (r *Region) Trim(off, n int64, fua bool) error {
	if err := checkRange(off, n, r.length); err != nil {
		return err
	}
	return r.d.Trim(r.off+off, n, fua)
}

// WriteZeroes implements Disk.
func (r *Region) WriteZeroes(off, n int64, noHole, fua bool) error {
	if err := checkRange(off, n, r.length); err != nil {
		return err
	}
	return r.d.WriteZeroes(r.off+off, n, noHole, fua)
}

// Close implements Disk; the underlying disk stays open.
func (r *Region) Close() error { return nil }
