package client_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/nbd"
	"github.com/twinblock/twinblock/nbd/client"
	"github.com/twinblock/twinblock/pkg/disk"
)

func serve(t *testing.T, network, addr string, exports ...*nbd.Export) string {
	t.Helper()
	srv, err := nbd.NewServer(nbd.Options{Catalog: nbd.NewStaticCatalog(exports...)})
	require.NoError(t, err)
	l, err := net.Listen(network, addr)
	require.NoError(t, err)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	if network == "unix" {
		return "unix:" + addr
	}
	return l.Addr().String()
}

func TestClientModes(t *testing.T) {
	mem := disk.NewMem(1<<20, disk.MemOptions{})
	ro := &nbd.Export{Name: "ro", Device: disk.NewMem(4096, disk.MemOptions{}), ReadOnly: true}
	tcp := serve(t, "tcp", "127.0.0.1:0", &nbd.Export{Name: "e", Device: mem}, ro)
	unix := serve(t, "unix", filepath.Join(t.TempDir(), "nbd.sock"), &nbd.Export{Name: "e", Device: mem})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, tc := range []struct {
		name string
		addr string
		opts client.Options
	}{
		{"GO, simple replies", tcp, client.Options{Export: "e"}},
		{"GO, structured replies", tcp, client.Options{Export: "e", Structured: true}},
		{"EXPORT_NAME", tcp, client.Options{Export: "e", ExportName: true}},
		{"unix socket", unix, client.Options{Export: "e", Structured: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.Dial(ctx, tc.addr, tc.opts)
			require.NoError(t, err)
			assert.Equal(t, int64(1<<20), c.Size())
			assert.NotZero(t, c.Flags()&nbd.FlagSendFlush)
			assert.Equal(t, tc.opts.Structured, c.Structured())
			if !tc.opts.ExportName {
				minB, pref, maxB := c.BlockSizes()
				assert.Equal(t, []uint32{1, 4096, 32 << 20}, []uint32{minB, pref, maxB})
			}
			p := []byte("twinblock client")
			require.NoError(t, c.WriteAt(p, 100, true))
			got := make([]byte, len(p))
			require.NoError(t, c.ReadAt(got, 100))
			assert.Equal(t, p, got)
			require.NoError(t, c.WriteZeroes(100, 4, true, false))
			require.NoError(t, c.Trim(4096, 4096, false))
			require.NoError(t, c.Flush())
			require.NoError(t, c.ReadAt(got, 100))
			assert.Equal(t, append(make([]byte, 4), p[4:]...), got)

			err = c.ReadAt(make([]byte, 10), 1<<20)
			var nerr *client.Error
			require.True(t, errors.As(err, &nerr), "error %v", err)
			assert.Equal(t, nbd.EINVAL, nerr.Errno)
			if tc.opts.Structured {
				assert.Contains(t, nerr.Message, "beyond the export size")
			}
			require.NoError(t, c.Close())
			assert.ErrorIs(t, c.Flush(), client.ErrClosed)
		})
	}

	names, err := client.List(ctx, tcp)
	require.NoError(t, err)
	assert.Equal(t, []string{"e", "ro"}, names)

	_, err = client.Dial(ctx, tcp, client.Options{Export: "missing"})
	var oerr *client.OptionError
	require.True(t, errors.As(err, &oerr), "error %v", err)
	assert.Contains(t, oerr.Message, `no export named "missing"`)

	c, err := client.Dial(ctx, tcp, client.Options{Export: "ro"})
	require.NoError(t, err)
	assert.NotZero(t, c.Flags()&nbd.FlagReadOnly)
	var nerr *client.Error
	require.True(t, errors.As(c.WriteAt([]byte{1}, 0, false), &nerr))
	assert.Equal(t, nbd.EPERM, nerr.Errno)
	require.NoError(t, c.Close())
}

func TestClientServerGoesAway(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, err := nbd.NewServer(nbd.Options{Catalog: nbd.NewStaticCatalog(&nbd.Export{Name: "e", Device: disk.NewMem(4096, disk.MemOptions{})})})
	require.NoError(t, err)
	go func() { _ = srv.Serve(l) }()
	c, err := client.Dial(context.Background(), l.Addr().String(), client.Options{Export: "e"})
	require.NoError(t, err)
	require.NoError(t, srv.Close())
	assert.Error(t, c.ReadAt(make([]byte, 512), 0), "requests fail once the server is gone")
}
