package nbd

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pollReader reads a socket by blocking its OS thread in poll(2) when no
// data is there, instead of parking the goroutine in Go's netpoller. A
// request then wakes the thread directly, as a blocked recv() in a C
// server does, which takes the scheduler round trip out of every request
// at queue depth 1. It costs one thread per connection blocked in poll,
// which is what NBD's few long-lived connections can afford.
//
// The poll wakes every pollSlice to notice stop (shutdown) and a closed
// connection. Anything unusual falls back to the plain net.Conn read.
type pollReader struct {
	nc   net.Conn
	rc   syscall.RawConn
	stop *atomic.Bool
}

const pollSlice = 50 * time.Millisecond

// newPollReader returns a pollReader for TCP and unix sockets, or nil.
func newPollReader(nc net.Conn, stop *atomic.Bool) *pollReader {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &pollReader{nc: nc, rc: rc, stop: stop}
}

var errStopped = errors.New("nbd: connection reader stopped")

func (p *pollReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var rerr error
	err := p.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), b)
			if rerr != unix.EAGAIN {
				return true
			}
			if p.stop.Load() {
				rerr = os.ErrDeadlineExceeded
				return true
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, perr := unix.Poll(pfd, int(pollSlice/time.Millisecond)); perr != nil && perr != unix.EINTR {
				rerr = perr
				return true
			}
		}
	})
	if err != nil {
		return 0, err // closed connection, from the runtime
	}
	if rerr != nil {
		if errors.Is(rerr, os.ErrDeadlineExceeded) {
			return 0, rerr
		}
		return 0, &net.OpError{Op: "read", Net: p.nc.LocalAddr().Network(), Err: os.NewSyscallError("read", rerr)}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}
