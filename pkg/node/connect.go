package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// connector is the peer link's transport, over the stream layer
// (Env.Net): it accepts the peer's connections on this node's address
// and dials the peer, and hands each new stream to the loop, which runs
// the handshake over it. The Ready loop calls it for the state
// machine's ActStartConnecting, ActStopConnecting and ActDial.
type connector interface {
	// Listen starts accepting, if not already; an error means the
	// connection cannot come up.
	Listen() error
	// Stop stops accepting.
	Stop()
	// Dial makes one connection attempt in the background.
	Dial()
}

// streamConnector is the real connector. Its goroutines report through
// onConn (a stream to set up) and onDialFailed (an attempt that failed);
// both must not block.
type streamConnector struct {
	name       string
	self, peer string // the two hosts' addresses
	net        Network
	log        *slog.Logger
	ctx        context.Context // the resource's: its end stops everything
	wg         *sync.WaitGroup // the resource's

	onConn       func(net.Conn)
	onDialFailed func(error)

	ln net.Listener // nil: not accepting
}

// Listen implements connector. The accept loop takes only connections
// from the peer's host; it retries a transient failure with a backoff.
func (c *streamConnector) Listen() error {
	if c.ln != nil {
		return nil
	}
	ln, err := c.net.Listen("tcp", c.self)
	if err != nil {
		return fmt.Errorf("%s: cannot listen for the peer on %s: %w", c.name, c.self, err)
	}
	c.ln = ln
	peerHost, _, _ := net.SplitHostPort(c.peer)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		backoff := time.Duration(0)
		for {
			nc, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) || c.ctx.Err() != nil {
					return // Stop or shutdown
				}
				// A transient failure (EMFILE, ECONNABORTED): back off
				// from 5 ms to 1 s, as hashicorp/raft's accept loop.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				c.log.Warn("accepting the peer's connection failed; retrying", "in", backoff, "err", err)
				select {
				case <-time.After(backoff):
					continue
				case <-c.ctx.Done():
					return
				}
			}
			backoff = 0
			host, _, _ := net.SplitHostPort(nc.RemoteAddr().String())
			if !sameHost(host, peerHost) {
				c.log.Warn("refusing a connection from an address that is not the peer's", "from", nc.RemoteAddr(), "peer", c.peer)
				_ = nc.Close()
				continue
			}
			c.onConn(nc)
		}
	}()
	return nil
}

func sameHost(a, b string) bool {
	ia, ib := net.ParseIP(a), net.ParseIP(b)
	if ia != nil && ib != nil {
		return ia.Equal(ib)
	}
	return strings.EqualFold(a, b)
}

// Stop implements connector.
func (c *streamConnector) Stop() {
	if c.ln != nil {
		_ = c.ln.Close()
		c.ln = nil
	}
}

// Dial implements connector: from this node's address, bounded by
// dialTimeout.
func (c *streamConnector) Dial() {
	ctx, cancel := context.WithTimeout(c.ctx, dialTimeout)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		nc, err := c.net.Dial(ctx, "tcp", c.self, c.peer)
		if err != nil {
			c.onDialFailed(fmt.Errorf("connect to %s: %w", c.peer, err))
			return
		}
		c.onConn(nc)
	}()
}
