package netsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Network is one simulated network.
type Network struct {
	mu        sync.Mutex
	listeners map[string]*listener
	conns     map[*Conn]struct{}
	blocked   map[[2]string]bool // host pairs, sorted, partitioned
	delay     time.Duration
	nextPort  int
}

// New returns an empty network.
func New() *Network {
	return &Network{listeners: map[string]*listener{}, conns: map[*Conn]struct{}{}, blocked: map[[2]string]bool{}, nextPort: 40000}
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func host(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

// Addr is a simulated address.
type Addr string

// Network implements net.Addr.
func (Addr) Network() string { return "netsim" }

// String implements net.Addr.
func (a Addr) String() string { return string(a) }

// Listen listens on addr (host:port).
func (n *Network) Listen(network, addr string) (net.Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.listeners[addr]; ok {
		return nil, fmt.Errorf("netsim: listen %s: %w", addr, syscall.EADDRINUSE)
	}
	l := &listener{n: n, addr: Addr(addr), ch: make(chan *Conn, 16), done: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// Dial connects from host local (an address or a bare host; its port is
// made up) to remote. It fails with ECONNREFUSED when nothing listens
// and with ETIMEDOUT when the hosts are partitioned.
func (n *Network) Dial(ctx context.Context, network, local, remote string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	l := n.listeners[remote]
	if n.blocked[pair(host(local), host(remote))] {
		n.mu.Unlock()
		return nil, fmt.Errorf("netsim: dial %s: %w", remote, syscall.ETIMEDOUT)
	}
	if l == nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("netsim: dial %s: %w", remote, syscall.ECONNREFUSED)
	}
	n.nextPort++
	laddr := Addr(net.JoinHostPort(host(local), fmt.Sprint(n.nextPort)))
	ab, ba := newStream(), newStream()
	c := &Conn{n: n, local: laddr, remote: Addr(remote), in: ba, out: ab}
	s := &Conn{n: n, local: Addr(remote), remote: laddr, in: ab, out: ba}
	c.peer, s.peer = s, c
	n.conns[c], n.conns[s] = struct{}{}, struct{}{}
	n.mu.Unlock()
	select {
	case l.ch <- s:
		return c, nil
	case <-l.done:
	case <-ctx.Done():
	}
	c.reset(syscall.ECONNREFUSED)
	return nil, fmt.Errorf("netsim: dial %s: %w", remote, syscall.ECONNREFUSED)
}

// Cut resets every connection between hosts a and b, as a router that
// sends RSTs.
func (n *Network) Cut(a, b string) {
	for _, c := range n.between(a, b) {
		c.reset(syscall.ECONNRESET)
	}
}

// Partition black-holes hosts a and b: what either writes to the other
// is dropped and new dials fail, until Heal.
func (n *Network) Partition(a, b string) {
	n.mu.Lock()
	n.blocked[pair(a, b)] = true
	n.mu.Unlock()
}

// Heal ends a partition of a and b.
func (n *Network) Heal(a, b string) {
	n.mu.Lock()
	delete(n.blocked, pair(a, b))
	n.mu.Unlock()
}

// SetDelay makes every write wait d (in real time) before its bytes
// reach the other side.
func (n *Network) SetDelay(d time.Duration) {
	n.mu.Lock()
	n.delay = d
	n.mu.Unlock()
}

// Isolate resets every connection of host h (its process died).
func (n *Network) Isolate(h string) {
	n.mu.Lock()
	var cs []*Conn
	for c := range n.conns {
		if host(string(c.local)) == h || host(string(c.remote)) == h {
			cs = append(cs, c)
		}
	}
	n.mu.Unlock()
	for _, c := range cs {
		c.reset(syscall.ECONNRESET)
	}
}

func (n *Network) between(a, b string) []*Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	want := pair(a, b)
	var cs []*Conn
	for c := range n.conns {
		if pair(host(string(c.local)), host(string(c.remote))) == want {
			cs = append(cs, c)
		}
	}
	return cs
}

func (n *Network) writeFate(from, to Addr) (drop bool, delay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.blocked[pair(host(string(from)), host(string(to)))], n.delay
}

func (n *Network) forget(c *Conn) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
}

type listener struct {
	n    *Network
	addr Addr
	ch   chan *Conn
	once sync.Once
	done chan struct{}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("netsim: accept %s: %w", l.addr, net.ErrClosed)
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.n.mu.Lock()
		if l.n.listeners[string(l.addr)] == l {
			delete(l.n.listeners, string(l.addr))
		}
		l.n.mu.Unlock()
	})
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }

// stream is one direction of a connection.
type stream struct {
	mu   sync.Mutex
	cond *sync.Cond
	// chunks are the bytes written and not yet read, one copy per
	// Write, so a reader that lags never makes a writer copy the whole
	// backlog again (as one growing slice did).
	chunks [][]byte
	eof    bool  // the writer closed its side
	err    error // reset
	closed bool  // the reader closed its side
	rdl    time.Time
	timer  *time.Timer
}

func newStream() *stream {
	s := &stream{}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// Conn is one end of a simulated connection.
type Conn struct {
	n             *Network
	local, remote Addr
	in, out       *stream
	peer          *Conn
	mu            sync.Mutex
	wdl           time.Time
	closed        bool
}

func (c *Conn) reset(err error) {
	for _, s := range []*stream{c.in, c.out} {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	s := c.in
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		switch {
		case s.closed:
			return 0, net.ErrClosed
		case len(s.chunks) > 0:
			n := 0
			for n < len(p) && len(s.chunks) > 0 {
				c := copy(p[n:], s.chunks[0])
				n += c
				if s.chunks[0] = s.chunks[0][c:]; len(s.chunks[0]) == 0 {
					s.chunks[0] = nil
					s.chunks = s.chunks[1:]
				}
			}
			return n, nil
		case s.err != nil:
			return 0, s.err
		case s.eof:
			return 0, io.EOF
		case !s.rdl.IsZero() && !time.Now().Before(s.rdl):
			return 0, os.ErrDeadlineExceeded
		}
		s.cond.Wait()
	}
}

// Write implements net.Conn. It never blocks on the reader.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	closed, wdl := c.closed, c.wdl
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	if !wdl.IsZero() && !time.Now().Before(wdl) {
		return 0, os.ErrDeadlineExceeded
	}
	drop, delay := c.n.writeFate(c.local, c.remote)
	if delay > 0 {
		time.Sleep(delay)
	}
	s := c.out
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.err != nil:
		return 0, s.err
	case s.eof:
		return 0, net.ErrClosed
	case drop || s.closed:
		return len(p), nil // black-holed, or the peer stopped reading
	}
	if len(p) > 0 {
		s.chunks = append(s.chunks, append([]byte(nil), p...))
	}
	s.cond.Broadcast()
	return len(p), nil
}

// CloseWrite ends this side's writing: the peer reads EOF after the
// bytes already written.
func (c *Conn) CloseWrite() error {
	s := c.out
	s.mu.Lock()
	s.eof = true
	s.cond.Broadcast()
	s.mu.Unlock()
	return nil
}

// Close implements net.Conn.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	_ = c.CloseWrite()
	s := c.in
	s.mu.Lock()
	s.closed = true
	s.chunks = nil
	s.cond.Broadcast()
	s.mu.Unlock()
	c.n.forget(c)
	return nil
}

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	_ = c.SetWriteDeadline(t)
	return c.SetReadDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	s := c.in
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rdl = t
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !t.IsZero() {
		s.timer = time.AfterFunc(time.Until(t), func() {
			s.mu.Lock()
			s.cond.Broadcast()
			s.mu.Unlock()
		})
	}
	s.cond.Broadcast()
	return nil
}

// SetWriteDeadline implements net.Conn. Writes never block, so only a
// deadline already past matters.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wdl = t
	c.mu.Unlock()
	return nil
}

// ErrRefused reports whether err is a refused dial.
func ErrRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
