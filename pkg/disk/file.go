package disk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/twinblock/twinblock/internal/alignbuf"
)

// FileOptions select how a File is opened.
type FileOptions struct {
	// ReadOnly opens with O_RDONLY; writes fail with ErrReadOnly.
	ReadOnly bool
	// Direct opens with O_DIRECT (bypassing the page cache). Requests must
	// then be aligned to MinBlockSize: the logical sector size of a block
	// device, 4096 for a regular file. The usable size is rounded down to
	// that alignment.
	Direct bool
}

// File is a Disk on a regular file or a block device.
//
// Trim punches a hole in a file (the range then reads as zeroes) and
// issues BLKDISCARD on a block device (content unspecified afterwards, as
// NBD allows); where the file system or device cannot discard, Trim does
// nothing, which NBD also allows. WriteZeroes always leaves zeroes: it
// punches a hole (or, with noHole, fallocates a zeroed range) where the
// file system or device can, and writes zeroes where it cannot.
type File struct {
	f *os.File
	// rc runs the raw syscalls (pwritev2, fdatasync, fallocate, ioctl)
	// on the descriptor under the os.File's reference: after Close they
	// fail instead of reaching whatever file reuses the number (found by
	// the real-process torture suite, R1b).
	rc       syscall.RawConn
	fd       int // for the ioctls at open only
	path     string
	size     int64
	blockDev bool
	readOnly bool
	direct   bool
	align    int   // request alignment: 1, or with O_DIRECT the sector size
	sector   int64 // logical sector of a block device: discard/zero-out granularity

	noPwritev2 atomic.Bool // pwritev2(RWF_DSYNC) unsupported here
	zerosOnce  sync.Once
	zeros      []byte
}

// OpenFile opens a regular file or block device as a Disk. The size of a
// block device comes from BLKGETSIZE64.
func OpenFile(path string, opts FileOptions) (*File, error) {
	flags := os.O_RDWR
	if opts.ReadOnly {
		flags = os.O_RDONLY
	}
	if opts.Direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err) // *PathError names the path
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("disk: %s: %w", path, err)
	}
	d := &File{f: f, rc: rc, fd: int(f.Fd()), path: path, readOnly: opts.ReadOnly, direct: opts.Direct, align: 1}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk: stat %s: %w", path, err)
	}
	switch {
	case fi.Mode().IsRegular():
		d.size = fi.Size()
		if opts.Direct {
			d.align = 4096
		}
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		d.blockDev = true
		var size uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); e != 0 {
			f.Close()
			return nil, fmt.Errorf("disk: BLKGETSIZE64 on %s: %w", path, e)
		}
		d.size = int64(size)
		ss, err := unix.IoctlGetInt(d.fd, unix.BLKSSZGET)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("disk: BLKSSZGET on %s: %w", path, err)
		}
		d.sector = int64(ss)
		if opts.Direct {
			d.align = ss
		}
	default:
		f.Close()
		return nil, fmt.Errorf("disk: %s is neither a regular file nor a block device (mode %s)", path, fi.Mode())
	}
	d.size -= d.size % int64(d.align)
	return d, nil
}

// Path returns the path the disk was opened from.
func (d *File) Path() string { return d.path }

// Size implements Disk.
func (d *File) Size() int64 { return d.size }

// ReadOnly implements Disk.
func (d *File) ReadOnly() bool { return d.readOnly }

// MinBlockSize is the alignment requests need: 1, or with O_DIRECT the
// device's logical sector size (4096 for files).
func (d *File) MinBlockSize() int { return d.align }

// ReadAt implements Disk.
func (d *File) ReadAt(p []byte, off int64) error {
	if err := checkRange(off, int64(len(p)), d.size); err != nil {
		return err
	}
	if d.direct && !aligned(p, d.align) {
		b := alignbuf.Alloc(len(p), d.align)
		if err := d.ReadAt(b, off); err != nil {
			return err
		}
		copy(p, b)
		return nil
	}
	if _, err := d.f.ReadAt(p, off); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // the file shrank under us
		}
		return fmt.Errorf("disk: read %s at %d: %w", d.path, off, err)
	}
	return nil
}

// WriteAt implements Disk. With fua the write is durable on return
// (pwritev2 with RWF_DSYNC, or pwrite and fdatasync where that is missing).
func (d *File) WriteAt(p []byte, off int64, fua bool) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if err := checkRange(off, int64(len(p)), d.size); err != nil {
		return err
	}
	if d.direct && !aligned(p, d.align) {
		b := alignbuf.Alloc(len(p), d.align)
		copy(b, p)
		p = b
	}
	if fua && !d.noPwritev2.Load() {
		err := d.pwriteDsync(p, off)
		if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
			return err
		}
		d.noPwritev2.Store(true)
	}
	if _, err := d.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("disk: write %s at %d: %w", d.path, off, err)
	}
	if fua {
		return d.Flush()
	}
	return nil
}

func (d *File) pwriteDsync(p []byte, off int64) error {
	iov := [][]byte{p}
	for len(iov[0]) > 0 {
		var n int
		err := d.withFD(func(fd int) (err error) {
			n, err = unix.Pwritev2(fd, iov, off, unix.RWF_DSYNC)
			return err
		})
		if err == unix.EINTR {
			continue
		}
		if err == nil && n == 0 {
			err = io.ErrShortWrite
		}
		if err != nil {
			if err == unix.ENOSYS || err == unix.EOPNOTSUPP {
				return err
			}
			return fmt.Errorf("disk: write %s at %d: %w", d.path, off, err)
		}
		iov[0] = iov[0][n:]
		off += int64(n)
	}
	return nil
}

// Flush implements Disk: fdatasync, which also flushes a block device's
// volatile write cache.
func (d *File) Flush() error {
	if err := d.withFD(unix.Fdatasync); err != nil {
		return fmt.Errorf("disk: fdatasync %s: %w", d.path, err)
	}
	return nil
}

// Trim implements Disk.
func (d *File) Trim(off, n int64, fua bool) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if err := checkRange(off, n, d.size); err != nil {
		return err
	}
	var err error
	if d.blockDev {
		// BLKDISCARD needs logical-sector alignment: discard the aligned
		// interior (TRIM is advisory).
		start, end := alignUp(off, d.sector), alignDown(off+n, d.sector)
		if end > start {
			rng := [2]uint64{uint64(start), uint64(end - start)}
			err = d.withFD(func(fd int) error {
				if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKDISCARD, uintptr(unsafe.Pointer(&rng))); e != 0 {
					return e
				}
				return nil
			})
		}
	} else {
		err = d.withFD(func(fd int) error {
			return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		})
	}
	if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("disk: trim %s at %d length %d: %w", d.path, off, n, err)
	}
	if fua {
		return d.Flush()
	}
	return nil
}

// WriteZeroes implements Disk.
func (d *File) WriteZeroes(off, n int64, noHole, fua bool) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if err := checkRange(off, n, d.size); err != nil {
		return err
	}
	if err := d.zeroRange(off, n, noHole); err != nil {
		return fmt.Errorf("disk: write zeroes %s at %d length %d: %w", d.path, off, n, err)
	}
	if fua {
		return d.Flush()
	}
	return nil
}

func (d *File) zeroRange(off, n int64, noHole bool) error {
	start, end := off, off+n
	if d.blockDev { // fallocate on a block device wants sector alignment
		start, end = alignUp(off, d.sector), alignDown(off+n, d.sector)
		if end <= start {
			return d.writeZeroBytes(off, n)
		}
		if err := d.writeZeroBytes(off, start-off); err != nil {
			return err
		}
		if err := d.writeZeroBytes(end, off+n-end); err != nil {
			return err
		}
	}
	modes := []uint32{unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE}
	if !noHole {
		modes = []uint32{unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, modes[0]}
	}
	for _, mode := range modes {
		err := d.withFD(func(fd int) error { return unix.Fallocate(fd, mode, start, end-start) })
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENODEV) {
			return err
		}
	}
	return d.writeZeroBytes(start, end-start)
}

// writeZeroBytes writes real zeroes, 1 MiB at a time.
func (d *File) writeZeroBytes(off, n int64) error {
	d.zerosOnce.Do(func() { d.zeros = alignbuf.Alloc(1<<20, 4096) })
	for n > 0 {
		chunk := min(n, int64(len(d.zeros)))
		if _, err := d.f.WriteAt(d.zeros[:chunk], off); err != nil {
			return err
		}
		off += chunk
		n -= chunk
	}
	return nil
}

// withFD runs fn on the open descriptor, which stays open until fn
// returns; after Close it fails with ErrClosed.
func (d *File) withFD(fn func(fd int) error) error {
	var ferr error
	if err := d.rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return ferr
}

// Close implements Disk.
func (d *File) Close() error {
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("disk: close %s: %w", d.path, err)
	}
	return nil
}

func alignUp(x, a int64) int64   { return (x + a - 1) / a * a }
func alignDown(x, a int64) int64 { return x / a * a }

func aligned(p []byte, align int) bool {
	return len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))%uintptr(align) == 0
}
