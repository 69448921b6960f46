package netsim

import (
	"context"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func connect(t *testing.T, n *Network) (client, server net.Conn) {
	t.Helper()
	ln, err := n.Listen("tcp", "127.0.0.2:7789")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := n.Dial(context.Background(), "tcp", "127.0.0.1", "127.0.0.2:7789")
	require.NoError(t, err)
	return c, <-accepted
}

func TestNetsim(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, n *Network, c, s net.Conn)
	}{
		{"bytes in order, then EOF after CloseWrite", func(t *testing.T, n *Network, c, s net.Conn) {
			_, err := c.Write([]byte("hello "))
			require.NoError(t, err)
			_, err = c.Write([]byte("world"))
			require.NoError(t, err)
			require.NoError(t, c.(*Conn).CloseWrite())
			got, err := io.ReadAll(s)
			require.NoError(t, err)
			require.Equal(t, "hello world", string(got))
			require.Equal(t, "127.0.0.1", host(s.RemoteAddr().String()))
		}},
		{"cut resets both ends", func(t *testing.T, n *Network, c, s net.Conn) {
			n.Cut("127.0.0.2", "127.0.0.1")
			_, err := s.Read(make([]byte, 1))
			require.ErrorIs(t, err, syscall.ECONNRESET)
			_, err = c.Write([]byte("x"))
			require.ErrorIs(t, err, syscall.ECONNRESET)
		}},
		{"partition drops data and refuses dials until healed", func(t *testing.T, n *Network, c, s net.Conn) {
			n.Partition("127.0.0.1", "127.0.0.2")
			_, err := c.Write([]byte("lost"))
			require.NoError(t, err, "a black hole accepts the write")
			require.NoError(t, s.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
			_, err = s.Read(make([]byte, 4))
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			_, err = n.Dial(context.Background(), "tcp", "127.0.0.1", "127.0.0.2:7789")
			require.ErrorIs(t, err, syscall.ETIMEDOUT)
			n.Heal("127.0.0.1", "127.0.0.2")
			require.NoError(t, s.SetReadDeadline(time.Time{}))
			_, err = c.Write([]byte("back"))
			require.NoError(t, err)
			b := make([]byte, 4)
			_, err = io.ReadFull(s, b)
			require.NoError(t, err)
			require.Equal(t, "back", string(b))
		}},
		{"close unblocks the reader", func(t *testing.T, n *Network, c, s net.Conn) {
			errc := make(chan error, 1)
			go func() { _, err := s.Read(make([]byte, 1)); errc <- err }()
			require.NoError(t, s.Close())
			require.ErrorIs(t, <-errc, net.ErrClosed)
			_, err := c.Read(make([]byte, 1))
			require.ErrorIs(t, err, io.EOF, "the other end sees the close")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := New()
			c, s := connect(t, n)
			tt.run(t, n, c, s)
		})
	}
}

func TestDialRefused(t *testing.T) {
	_, err := New().Dial(context.Background(), "tcp", "127.0.0.1", "127.0.0.2:1")
	require.True(t, ErrRefused(err))
}
