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
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	defer open()
	dev := disk.NewFaulty(disk.NewMem(1<<20, disk.MemOptions{}), func(op disk.Op) error {
		if op.Kind == disk.OpWrite {
			entered <- struct{}{}
			<-release
		}
		return nil
	})
	srv, addr, _ := serveTCP(t, dev, nbd.Options{})
	c, err := client.Dial(context.Background(), addr, client.Options{Export: "e"})
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- c.WriteAt(make([]byte, 4096), 0, false) }()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the write never reached the device")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	// A graceful shutdown waits for the held write and answers it, so the
	// client can only fail while the device still holds the write if the
	// expired ctx made Shutdown abort the connection.
	select {
	case err := <-errc:
		assert.Error(t, err, "the connection was aborted before the reply")
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not aborted when the shutdown's ctx expired")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while the device still held a write", err)
	default:
	}
	open() // the device returns only now; Shutdown waits for it
	assert.ErrorIs(t, <-shut, context.DeadlineExceeded)
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
