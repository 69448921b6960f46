package node

import (
	"context"
	"net"
	"time"

	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/disk"
)

// Env is a resource's environment: how it opens its disks, reaches the
// network and reads time (pebble's commitEnv pattern). The zero value
// is the real one: files with advisory locks, TCP, the system clock.
// Tests put crashable disks, an in-memory network (pkg/netsim) and a
// fake clock in its place and drive faults through them.
type Env struct {
	// OpenDisk opens a backing disk or an external meta device by its
	// configured path; nil means disk.OpenFile, with the advisory lock
	// that keeps the metadata verbs off an attached disk.
	OpenDisk func(path string) (disk.Disk, error)
	// Net carries the peer link and the NBD export; nil means TCP (and
	// unix sockets for an nbd-listen unix:PATH).
	Net Network
	// Clock drives the state machine's ticks and the resync engine;
	// nil means the system clock.
	Clock clock.Clock
	// Quorum, if set, is the resource's quorum group (options { quorum
	// majority; }; the daemon passes its raftnode.Node): a promotion is
	// then its committed entry, and the links fence by epoch. Nil: no
	// quorum, as DRBD 8.4.
	Quorum QuorumService
}

// Network is the stream layer under the peer link and the NBD export
// (hashicorp/raft's StreamLayer, with the dialer's local address).
type Network interface {
	Listen(network, addr string) (net.Listener, error)
	// Dial connects to remote from local (a host:port whose host is
	// this node's address, or ""); ctx bounds the attempt.
	Dial(ctx context.Context, network, local, remote string) (net.Conn, error)
}

// dialTimeout bounds one connection attempt to the peer.
const dialTimeout = 5 * time.Second

// TCP is the real Network.
type TCP struct{}

// Listen implements Network.
func (TCP) Listen(network, addr string) (net.Listener, error) { return net.Listen(network, addr) }

// Dial implements Network: from local's host (any port), within 5 s.
func (TCP) Dial(ctx context.Context, network, local, remote string) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	if h, _, err := net.SplitHostPort(local); err == nil {
		if ip := net.ParseIP(h); ip != nil {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	return d.DialContext(ctx, network, remote)
}

func (e Env) withDefaults() Env {
	if e.Net == nil {
		e.Net = TCP{}
	}
	if e.Clock == nil {
		e.Clock = clock.Real{}
	}
	return e
}
