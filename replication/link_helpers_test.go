package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
)

// testTimeout bounds every wait of these tests.
const testTimeout = 10 * time.Second

const testDiskSize = 1 << 20

// testConfig is a valid LinkConfig between self and peer on resource r0.
func testConfig(self, peer string, proto byte, d disk.Disk) LinkConfig {
	cfg := LinkConfig{
		Resource: "r0", Self: self, Peer: peer, Protocol: proto,
		Features: FeatureRLE | FeatureTrim | FeatureWriteZeroes, Disk: d,
		HandshakeTimeout: testTimeout,
	}
	if d != nil {
		cfg.DataSize = uint64(d.Size())
	}
	return cfg
}

// checkGoroutines fails the test if goroutines started during it are
// still running when its cleanups are done (tailscale's ResourceCheck).
// Call it first, so its cleanup runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(testTimeout)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines leaked:\n%s", runtime.NumGoroutine()-before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// connPair returns the two ends of a connection: net.Pipe, or TCP on
// 127.0.0.1.
func connPair(t testing.TB, tcp bool) (net.Conn, net.Conn) {
	t.Helper()
	if !tcp {
		a, b := net.Pipe()
		return a, b
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	b := <-accepted
	require.NotNil(t, b)
	return a, b
}

// handshakePair runs Handshake on both ends at once.
func handshakePair(t testing.TB, ca, cb net.Conn, cfgA, cfgB LinkConfig) (la, lb *Link, errA, errB error) {
	t.Helper()
	return handshakeStates(t, ca, cb, cfgA, cfgB, State{Role: 1, Disk: 8}, State{Role: 2, Disk: 8})
}

// handshakeStates is handshakePair with the States each end sends.
func handshakeStates(t testing.TB, ca, cb net.Conn, cfgA, cfgB LinkConfig, stA, stB State) (la, lb *Link, errA, errB error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	type result struct {
		l   *Link
		err error
	}
	rb := make(chan result, 1)
	go func() {
		l, err := Handshake(ctx, cb, cfgB, stB)
		rb <- result{l, err}
	}()
	la, errA = Handshake(ctx, ca, cfgA, stA)
	r := <-rb
	return la, r.l, errA, r.err
}

// linkPair connects a and b; both links are closed at the end of the
// test.
func linkPair(t testing.TB, tcp bool, cfgA, cfgB LinkConfig) (*Link, *Link) {
	t.Helper()
	ca, cb := connPair(t, tcp)
	la, lb, errA, errB := handshakePair(t, ca, cb, cfgA, cfgB)
	require.NoError(t, errA)
	require.NoError(t, errB)
	t.Cleanup(func() {
		closeLink(t, la)
		closeLink(t, lb)
	})
	return la, lb
}

// closeLink closes l and fails the test if that takes too long.
func closeLink(t testing.TB, l *Link) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		_ = l.Close("test over")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Errorf("Close of the link to %s hangs", l.cfg.Peer)
	}
}

// events records a link's callbacks.
type events struct {
	closes     atomic.Int32
	closed     chan error
	diskErrors chan error
	states     chan State
	mu         sync.Mutex
	outOfSync  [][2]int64
}

// watch installs the recorders in cfg.
func watch(cfg *LinkConfig) *events {
	e := &events{closed: make(chan error, 4), diskErrors: make(chan error, 256), states: make(chan State, 16)}
	cfg.OnClose = func(err error) {
		e.closes.Add(1)
		e.closed <- err
	}
	cfg.OnDiskError = func(err error) {
		select {
		case e.diskErrors <- err:
		default:
		}
	}
	cfg.OnState = func(s State) {
		select {
		case e.states <- s:
		default: // callbacks must not block
		}
	}
	cfg.OnOutOfSync = func(off, n int64) {
		e.mu.Lock()
		e.outOfSync = append(e.outOfSync, [2]int64{off, n})
		e.mu.Unlock()
	}
	return e
}

func (e *events) oos() [][2]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([][2]int64(nil), e.outOfSync...)
}

// waitClosed returns the cause OnClose got.
func (e *events) waitClosed(t *testing.T) error {
	t.Helper()
	select {
	case err := <-e.closed:
		return err
	case <-time.After(testTimeout):
		t.Fatal("OnClose was not called")
		return nil
	}
}

// recv waits for a value on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// eventually polls cond (for states that no callback announces).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// waitErr runs r.Wait with a time limit.
func waitErr(t *testing.T, r *Request) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Wait() }()
	return recv(t, done, "a request to complete")
}

// gate is a disk injector that holds the operations of the given kinds
// until it opens, announcing each one as it arrives.
type gate struct {
	kinds   []disk.OpKind
	open    chan struct{}
	once    sync.Once
	entered chan disk.Op
}

func newGate(kinds ...disk.OpKind) *gate {
	return &gate{kinds: kinds, open: make(chan struct{}), entered: make(chan disk.Op, 1024)}
}

func (g *gate) inject(op disk.Op) error {
	for _, k := range g.kinds {
		if op.Kind == k {
			g.entered <- op
			<-g.open
		}
	}
	return nil
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// rawPeer speaks the peer protocol by hand over TCP, so tests can send
// what a Link never would.
type rawPeer struct {
	t   *testing.T
	nc  net.Conn
	dec *Decoder
}

// newRawPeer connects a Link configured by cfg (its peer is "b") to a
// raw peer, which sends hello (if nil, a matching one) and, unless
// stopAfterHello, does the rest of the handshake. It returns the raw
// peer and the link's handshake result.
func newRawPeer(t *testing.T, cfg LinkConfig, hello *Hello, stopAfterHello bool) (*rawPeer, <-chan *Link, <-chan error) {
	t.Helper()
	ca, cb := connPair(t, true)
	links, errs := make(chan *Link, 1), make(chan error, 1)
	go func() {
		l, err := Handshake(context.Background(), ca, cfg, State{})
		if err != nil {
			errs <- err
			return
		}
		links <- l
	}()
	p := &rawPeer{t: t, nc: cb, dec: NewDecoder(cb, 0)}
	t.Cleanup(func() { cb.Close() })
	if hello == nil {
		hello = &Hello{ProtoMin: ProtoVersionMin, ProtoMax: ProtoVersionMax, Resource: cfg.Resource, From: cfg.Peer, To: cfg.Self,
			Protocol: cfg.Protocol, Features: cfg.Features, MaxPayload: DefaultMaxPayload, DataSize: testDiskSize}
	}
	p.send(hello)
	if _, ok := p.next().(*Hello); !ok || stopAfterHello {
		return p, links, errs
	}
	p.send(&State{})
	_, ok := p.next().(*State)
	require.True(t, ok)
	return p, links, errs
}

func (p *rawPeer) send(m Message) {
	p.t.Helper()
	b, err := Append(nil, m)
	require.NoError(p.t, err)
	_ = p.nc.SetWriteDeadline(time.Now().Add(testTimeout))
	_, err = p.nc.Write(b)
	require.NoError(p.t, err)
}

// next returns the next message, nil at the end of the stream.
func (p *rawPeer) next() Message {
	p.t.Helper()
	_ = p.nc.SetReadDeadline(time.Now().Add(testTimeout))
	m, err := p.dec.Next()
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	require.NoError(p.t, err)
	return m
}

// goodbye skips to the Goodbye and returns its reason ("" if the stream
// ended without one).
func (p *rawPeer) goodbye() string {
	p.t.Helper()
	for {
		switch m := p.next().(type) {
		case nil:
			return ""
		case *Goodbye:
			return m.Reason
		}
	}
}

func patternBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// sameBytes compares byte slices and reports the first difference only
// (a diff of a megabyte helps nobody).
func sameBytes(t *testing.T, want, got []byte, msg string) bool {
	t.Helper()
	if len(want) != len(got) {
		return assert.Fail(t, fmt.Sprintf("%s: %d bytes, want %d", msg, len(got), len(want)))
	}
	for i := range want {
		if want[i] != got[i] {
			return assert.Fail(t, fmt.Sprintf("%s: first difference at byte %d: %#02x, want %#02x", msg, i, got[i], want[i]))
		}
	}
	return true
}
