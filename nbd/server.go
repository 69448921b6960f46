package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twinblock/twinblock/internal/alignbuf"
)

// errTooManyFiles is the accept error that is worth waiting out.
const errTooManyFiles = syscall.EMFILE

// ErrServerClosed is returned by Serve after Close or Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// Options configure a Server. Zero values take the defaults noted.
type Options struct {
	// Catalog resolves export names. Required.
	Catalog Catalog
	// MaxPayload is the largest READ or WRITE accepted and advertised as
	// the maximum payload size (default and upper bound: 32 MiB).
	MaxPayload uint32
	// MaxInflight bounds the requests of one connection that are being
	// executed or waiting for their reply (default 128). When it is
	// reached the server stops reading from that connection.
	MaxInflight int
	// MaxInflightBytes bounds the payload bytes held for one connection
	// (default 64 MiB). A single request larger than this is still let
	// through on its own.
	MaxInflightBytes int64
	// InlineThreshold: READ and WRITE requests run on the connection's
	// reader goroutine while the device's recent latency for them is below
	// this (default 50µs; negative disables). See conn.
	InlineThreshold time.Duration
	// HandshakeTimeout bounds the negotiation phase (default 30 s).
	HandshakeTimeout time.Duration
	// Logger receives connection events (default: discard).
	Logger *slog.Logger
	// DemandChanged, if set, is called whenever the number of CPUs the
	// connections can keep busy changes: one per connection in the
	// transmission phase, two for a connection streaming large requests
	// (reading the next payload while the last one is copied). The caller
	// may size GOMAXPROCS to it (see cli.adaptProcs). It is called with the
	// server's lock held, so calls are serialized and in order, and must
	// not call back into the Server.
	DemandChanged func(cpus int)
}

// Server is an NBD server: fixed newstyle handshake, simple and structured
// replies, many requests in flight per connection with replies out of
// order, and per-request errors. See doc.go.
type Server struct {
	opts    Options
	catalog Catalog
	log     *slog.Logger
	pool    alignbuf.Pool
	reqs    sync.Pool

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	sessions  map[string]int
	demand    int
	wg        sync.WaitGroup
	pollers   atomic.Int32 // connection readers blocked in poll(2)
	workers   atomic.Int32 // request workers alive (see conn.start)
	spawned   atomic.Int64 // request workers ever started
}

// NewServer returns a server for the given options.
func NewServer(opts Options) (*Server, error) {
	if opts.Catalog == nil {
		return nil, errors.New("nbd: Options.Catalog is required")
	}
	if opts.MaxPayload == 0 || opts.MaxPayload > defaultMaxPayload {
		opts.MaxPayload = defaultMaxPayload
	}
	if opts.MaxPayload < defaultPreferredBlock {
		return nil, fmt.Errorf("nbd: MaxPayload %d is below the preferred block size %d", opts.MaxPayload, defaultPreferredBlock)
	}
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = defaultMaxInflight
	}
	if opts.MaxInflightBytes <= 0 {
		opts.MaxInflightBytes = defaultMaxInflightByte
	}
	if opts.InlineThreshold == 0 {
		opts.InlineThreshold = 50 * time.Microsecond
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		opts:      opts,
		catalog:   opts.Catalog,
		log:       opts.Logger,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		sessions:  make(map[string]int),
	}
	s.reqs.New = func() any { return new(request) }
	return s, nil
}

// Serve accepts connections on l until Close or Shutdown, each served on
// its own goroutine. Temporary accept errors are retried with back-off
// from 5 ms to 1 s. It returns ErrServerClosed after Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("nbd: accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		backoff = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			if err := s.ServeConn(nc); err != nil {
				s.log.Info("nbd: connection ended", "remote", nc.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// ServeConn runs one connection to its end: handshake, then transmission
// until the client disconnects, the connection breaks or the server
// closes. It closes nc. A clean NBD_CMD_DISC or NBD_OPT_ABORT returns nil.
func (s *Server) ServeConn(nc net.Conn) error {
	c := &conn{srv: s, nc: nc}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return ErrServerClosed
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	err := c.serve()
	if errors.Is(err, errClientAbort) {
		err = nil
	}
	return err
}

// Sessions returns how many clients are in the transmission phase on the
// named export, on all connections.
func (s *Server) Sessions(export string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[export]
}

// addSession counts a connection entering (+1) or leaving (-1) the
// transmission phase on the named export, with the CPU demand it brings or
// takes away.
func (s *Server) addSession(name string, delta, demand int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[name] += delta
	if s.sessions[name] == 0 {
		delete(s.sessions, name)
	}
	s.addDemandLocked(demand)
}

func (s *Server) addDemand(delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addDemandLocked(delta)
}

func (s *Server) addDemandLocked(delta int) {
	if delta == 0 {
		return
	}
	s.demand += delta
	if s.opts.DemandChanged != nil {
		s.opts.DemandChanged(s.demand)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops accepting, stops reading new requests, lets every
// request already read finish and be answered, flushes each export that
// was written, and closes the connections. If ctx ends first, the
// remaining connections are closed at once (their in-flight device
// operations still complete, but their replies are lost). It waits for
// every goroutine the server started.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stopReading()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// abort can wait out a reader's poll slice: not under s.mu.
		s.mu.Lock()
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			go c.abort()
		}
		<-done
		return ctx.Err()
	}
}

// Close shuts down with no grace period beyond the requests in flight.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

func newBufio(nc net.Conn) (*bufio.Reader, *bufio.Writer) {
	return bufio.NewReaderSize(nc, 64<<10), bufio.NewWriterSize(nc, 4<<10)
}
