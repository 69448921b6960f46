package disk

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrInUse is returned by Lock when another process holds the disk.
var ErrInUse = errors.New("disk: in use by another process")

// Lock takes an advisory lock on the file or block device at path and
// returns the file that holds it (close it to release). exclusive is for
// a writer that owns the disk (the daemon while attached, create-md);
// shared for readers (dump-md, show-gi). A running daemon's disks thus
// cannot be reformatted or edited under it. Only twinblock honours the
// lock.
func Lock(path string, exclusive bool) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (attached by a running twinblock daemon? detach it first)", ErrInUse, path)
		}
		return nil, fmt.Errorf("disk: lock %s: %w", path, err)
	}
	return f, nil
}
