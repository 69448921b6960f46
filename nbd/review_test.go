package nbd

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
)

// listenTCP serves dev as export "e" on a loopback port; the server is
// closed when the test ends.
func listenTCP(t *testing.T, dev Device) (*Server, string) {
	t.Helper()
	srv, err := NewServer(Options{Catalog: NewStaticCatalog(&Export{Name: "e", Device: dev})})
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return srv, l.Addr().String()
}

// dialTCP connects a raw client to export "e" in the transmission phase.
func dialTCP(t *testing.T, addr string) (net.Conn, *raw) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	r := &raw{t: t, c: nc, br: bufio.NewReader(nc)}
	r.goExport("e", false)
	return nc, r
}

// TestShutdownDeliversEveryExecutedReply: when the server shuts down with
// requests still unread in its socket, closing outright would make the
// kernel reset the connection and drop replies already written. The client
// here sends a burst and reads only after the shutdown: it must still get
// the reply of every request the server executed, then EOF.
func TestShutdownDeliversEveryExecutedReply(t *testing.T) {
	mem := disk.NewMem(16<<20, disk.MemOptions{})
	var one sync.Mutex // a slow disk that does one write at a time
	slow := disk.NewFaulty(mem, func(op disk.Op) error {
		if op.Kind == disk.OpWrite {
			one.Lock()
			time.Sleep(200 * time.Microsecond)
			one.Unlock()
		}
		return nil
	})
	srv, addr := listenTCP(t, slow)
	nc, r := dialTCP(t, addr)

	var burst []byte
	for i := uint64(0); i < 2000; i++ {
		burst = AppendRequestHeader(burst, RequestHeader{Type: CmdWrite, Cookie: i, Offset: i * 4096, Length: 4096})
		burst = append(burst, make([]byte, 4096)...)
	}
	go func() { _, _ = nc.Write(burst) }() // may block once the server stops reading
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, srv.Shutdown(context.Background()))

	got := int64(0)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, simpleReplyHeaderSize)
	var rerr error
	for {
		if _, rerr = io.ReadFull(r.br, hdr); rerr != nil {
			break
		}
		got++
	}
	executed := mem.Stats().Writes
	require.Greater(t, executed, int64(0))
	require.Less(t, executed, int64(2000), "the test needs requests left unread at shutdown")
	assert.Equal(t, executed, got, "every executed write was answered")
	assert.ErrorIs(t, rerr, io.EOF, "the server closed cleanly, without a reset")
}

// TestCorkedRepliesDoNotWaitForAStalledInlineRequest: a reply that is
// ready leaves within the cork bound even while the reader is stuck in an
// inline device call it expected to be fast.
func TestCorkedRepliesDoNotWaitForAStalledInlineRequest(t *testing.T) {
	var hold atomic.Bool
	release := make(chan struct{})
	dev := disk.NewFaulty(disk.NewMem(1<<20, disk.MemOptions{}), func(op disk.Op) error {
		if op.Kind == disk.OpWrite && hold.Load() {
			<-release
		}
		return nil
	})
	_, addr := listenTCP(t, dev)
	defer close(release) // runs before the server's cleanup, which waits for the held write
	nc, r := dialTCP(t, addr)

	// Teach the connection that writes are fast, so the next runs inline.
	for i := 0; i < 32; i++ {
		r.request(CmdWrite, 0, uint64(i), 0, 4096, make([]byte, 4096))
		r.readReply(0)
	}
	hold.Store(true)
	// FLUSH (own goroutine), WRITE (inline, stalls), READ: one segment, so
	// the reader is corked while it runs the WRITE.
	var b []byte
	b = AppendRequestHeader(b, RequestHeader{Type: CmdFlush, Cookie: 100})
	b = AppendRequestHeader(b, RequestHeader{Type: CmdWrite, Cookie: 101, Offset: 8192, Length: 4096})
	b = append(b, make([]byte, 4096)...)
	b = AppendRequestHeader(b, RequestHeader{Type: CmdRead, Cookie: 102, Offset: 65536, Length: 512})
	_, err := nc.Write(b)
	require.NoError(t, err)
	_ = nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	rep := r.readReplyFor(func(uint64) int { return 0 })
	assert.Equal(t, uint64(100), rep.cookie, "the FLUSH reply left while the WRITE was stalled")
}

// TestIdleConnectionsDoNotEachHoldAThread: beyond maxPollers, idle
// connections wait in the netpoller instead of holding a thread in
// poll(2), and they still work.
func TestIdleConnectionsDoNotEachHoldAThread(t *testing.T) {
	srv, addr := listenTCP(t, disk.NewMem(1<<20, disk.MemOptions{}))
	const n = maxPollers + 36
	conns := make([]*raw, n)
	for i := range conns {
		_, conns[i] = dialTCP(t, addr)
	}
	require.Eventually(t, func() bool { return srv.pollers.Load() == maxPollers }, 5*time.Second, time.Millisecond,
		"the first %d idle readers sit in poll(2)", maxPollers)
	for i := 0; i < 100; i++ { // pollers leave and re-enter every poll slice
		require.LessOrEqual(t, srv.pollers.Load(), int32(maxPollers))
		time.Sleep(time.Millisecond)
	}
	for i, r := range conns {
		r.request(CmdRead, 0, uint64(i), 0, 512, nil)
		assert.Equal(t, uint64(i), r.readReply(512).cookie)
	}
}
