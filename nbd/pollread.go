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

// pollReader reads a socket and, when no data is there and the connection
// is idle (nothing in flight: the client is about to send its next request
// at queue depth 1), blocks its OS thread in poll(2) instead of parking
// the goroutine in Go's netpoller. The request then wakes the thread
// directly, as a blocked recv() in a C server does, which takes a
// scheduler round trip out of every request at queue depth 1. With
// requests in flight it waits in the netpoller as usual, which measured
// better at depth 32 (a blocked thread makes the runtime hand its P
// around). It costs at most one thread per idle connection.
//
// The poll wakes every pollSlice to notice stop (shutdown) and a closed
// connection.
type pollReader struct {
	nc      net.Conn
	rc      syscall.RawConn
	stop    *atomic.Bool
	idle    func() bool
	pollers *atomic.Int32 // threads in poll(2), server-wide

	// One Read's state, for readFD, which is bound once (p.fn) so that
	// a Read allocates no closure. Only the connection's reader reads.
	fn   func(fd uintptr) bool
	buf  []byte
	n    int
	rerr error
	pfd  [1]unix.PollFd
}

// maxPollers bounds the threads a server keeps blocked in poll(2); more
// idle connections wait in the netpoller. Without it, every idle client
// would hold a thread, and enough of them would exhaust Go's thread limit.
const maxPollers = 64

const pollSlice = 50 * time.Millisecond

// newPollReader returns a pollReader for TCP and unix sockets, or nil.
func newPollReader(nc net.Conn, stop *atomic.Bool, idle func() bool, pollers *atomic.Int32) *pollReader {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &pollReader{nc: nc, rc: rc, stop: stop, idle: idle, pollers: pollers}
	p.fn = p.readFD
	return p
}

var errStopped = errors.New("nbd: connection reader stopped")

func (p *pollReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p.buf, p.n, p.rerr = b, 0, nil
	err := p.rc.Read(p.fn)
	n, rerr := p.n, p.rerr
	p.buf, p.rerr = nil, nil
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

// readFD is Read's body, run by the runtime with the socket's descriptor:
// true when done (p.n and p.rerr hold the result), false to wait in the
// netpoller and be called again.
func (p *pollReader) readFD(fd uintptr) bool {
	for {
		p.n, p.rerr = unix.Read(int(fd), p.buf)
		if p.rerr != unix.EAGAIN {
			return true
		}
		if !p.idle() {
			return false // wait in the netpoller, then call again
		}
		if p.stop.Load() {
			p.rerr = os.ErrDeadlineExceeded
			return true
		}
		if p.pollers.Add(1) > maxPollers {
			p.pollers.Add(-1)
			return false
		}
		p.pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		_, perr := unix.Poll(p.pfd[:], int(pollSlice/time.Millisecond))
		p.pollers.Add(-1)
		if perr != nil && perr != unix.EINTR {
			p.rerr = perr
			return true
		}
	}
}
