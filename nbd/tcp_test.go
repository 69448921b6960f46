package nbd_test

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/nbd"
	"github.com/twinblock/twinblock/nbd/client"
	"github.com/twinblock/twinblock/pkg/disk"
)

// These tests run over real loopback TCP, where the server reads with
// poll(2) (pollread.go) rather than through the netpoller.

func serveTCP(t *testing.T, dev nbd.Device, opts nbd.Options) (*nbd.Server, string, <-chan error) {
	t.Helper()
	opts.Catalog = nbd.NewStaticCatalog(&nbd.Export{Name: "e", Device: dev})
	srv, err := nbd.NewServer(opts)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	return srv, l.Addr().String(), done
}

func TestTCPConcurrentClientsAndShutdown(t *testing.T) {
	mem := disk.NewMem(8<<20, disk.MemOptions{})
	srv, addr, done := serveTCP(t, mem, nbd.Options{})
	ctx := context.Background()

	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		c, err := client.Dial(ctx, addr, client.Options{Export: "e", Structured: i%2 == 0})
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := int64(i) << 21
			var inner sync.WaitGroup
			for j := 0; j < 64; j++ {
				inner.Add(1)
				go func() {
					defer inner.Done()
					p := bytes.Repeat([]byte{byte(i*64 + j)}, 16<<10)
					assert.NoError(t, c.WriteAt(p, base+int64(j)*(16<<10), j%8 == 0))
					got := make([]byte, len(p))
					assert.NoError(t, c.ReadAt(got, base+int64(j)*(16<<10)))
					assert.Equal(t, p, got)
				}()
			}
			inner.Wait()
			assert.NoError(t, c.Flush())
			assert.NoError(t, c.Close())
		}()
	}
	wg.Wait()

	// An idle connection does not hold up shutdown: the reader blocked in
	// poll(2) notices within a poll slice.
	idle, err := client.Dial(ctx, addr, client.Options{Export: "e"})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return srv.Sessions("e") == 1 }, 2*time.Second, time.Millisecond)
	start := time.Now()
	require.NoError(t, srv.Shutdown(ctx))
	assert.Less(t, time.Since(start), time.Second)
	assert.ErrorIs(t, <-done, nbd.ErrServerClosed)
	assert.Error(t, idle.ReadAt(make([]byte, 512), 0), "the server closed the idle connection")
}

func TestTCPShutdownTimeoutAbortsBlockedConnection(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	defer open()
	dev := disk.NewFaulty(disk.NewMem(1<<20, disk.MemOptions{}), func(op disk.Op) error {
		if op.Kind == disk.OpWrite {
			<-release
		}
		return nil
	})
	srv, addr, _ := serveTCP(t, dev, nbd.Options{})
	c, err := client.Dial(context.Background(), addr, client.Options{Export: "e"})
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- c.WriteAt(make([]byte, 4096), 0, false) }()
	time.Sleep(50 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	time.Sleep(400 * time.Millisecond)
	open() // the device returns only now; Shutdown waits for it
	assert.ErrorIs(t, <-shut, context.DeadlineExceeded)
	assert.Error(t, <-errc, "the connection was aborted before the reply")
}

func TestTCPClientGoneMidRequest(t *testing.T) {
	mem := disk.NewMem(1<<20, disk.MemOptions{})
	srv, addr, _ := serveTCP(t, mem, nbd.Options{})
	c, err := client.Dial(context.Background(), addr, client.Options{Export: "e"})
	require.NoError(t, err)
	require.NoError(t, c.WriteAt([]byte("hello"), 0, false))
	// A connection that vanishes during the handshake.
	raw, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	raw.Close()
	require.NoError(t, c.Close())
	require.Eventually(t, func() bool { return srv.Sessions("e") == 0 }, 2*time.Second, time.Millisecond)
	require.NoError(t, srv.Close())
	assert.Equal(t, []byte("hello"), mem.Bytes()[:5])
	assert.GreaterOrEqual(t, mem.Stats().Flushes, int64(1), "a written export is flushed when its client leaves")
}
