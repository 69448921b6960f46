package nbd

import (
	"errors"
	"syscall"
)

// Device is what an NBD export serves. pkg/disk provides files and block
// devices; the replicated device of package replication implements it too,
// so the server never needs to know which one it serves.
//
// Contract, relied on by the server and by CAN_MULTI_CONN:
//   - All methods are safe for concurrent use. The server never issues two
//     overlapping requests of one connection concurrently when either of
//     them writes; requests of different connections may overlap.
//   - Offsets and lengths passed in are already checked: 0 <= off,
//     off+len <= Size(), aligned to MinBlockSize when the device has one.
//   - ReadAt and WriteAt must not retain p after they return: the server
//     reuses the buffer (as io.ReaderAt and io.WriterAt require).
//   - WriteAt with fua=true returns only when the data is durable.
//   - Flush returns only when every write that completed (returned) before
//     Flush was called, on any connection, is durable. This is what makes
//     advertising NBD_FLAG_CAN_MULTI_CONN honest.
//   - After Trim, the content of the range is unspecified until rewritten
//     (NBD semantics); after WriteZeroes it reads as zeroes, and with
//     noHole=true no hole is punched.
//   - Errors are returned, never panicked. An error that wraps a
//     syscall.Errno is mapped to the nearest NBD errno (ENOSPC, EPERM, …),
//     anything else to EIO.
type Device interface {
	Size() int64
	ReadOnly() bool
	ReadAt(p []byte, off int64) error
	WriteAt(p []byte, off int64, fua bool) error
	Flush() error
	Trim(off, length int64, fua bool) error
	WriteZeroes(off, length int64, noHole, fua bool) error
}

// BlockSizer is implemented by devices that need aligned requests (O_DIRECT
// files, for example). MinBlockSize must be a power of two, at most 64 KiB.
// Devices without it accept any alignment.
type BlockSizer interface {
	MinBlockSize() int
}

// errnoOf maps a device error to the NBD errno sent to the client.
func errnoOf(err error) uint32 {
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case syscall.EPERM, syscall.EROFS, syscall.EACCES:
			return EPERM
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
			return ENOSPC
		case syscall.EINVAL:
			return EINVAL
		case syscall.ENOMEM:
			return ENOMEM
		case syscall.EOVERFLOW:
			return EOVERFLOW
		case syscall.ESHUTDOWN:
			return ESHUTDOWN
		}
	}
	return EIO
}
