package raftnode

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/quorum"
)

// tcpNet is the real network, dialing from the member's own loopback
// address.
type tcpNet struct{}

func (tcpNet) Listen(network, addr string) (net.Listener, error) { return net.Listen(network, addr) }

func (tcpNet) Dial(ctx context.Context, network, local, remote string) (net.Conn, error) {
	d := net.Dialer{}
	if h, _, err := net.SplitHostPort(local); err == nil {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(h)}
	}
	return d.DialContext(ctx, network, remote)
}

// startTCPGroup starts three members on 127.0.0.1, .2 and .3 over
// TCP, each with its auth.
func startTCPGroup(t *testing.T, auths map[quorum.NodeID]Auth) map[quorum.NodeID]*Node {
	members := map[quorum.NodeID]raft.ServerAddress{}
	lns := map[quorum.NodeID]net.Listener{}
	for i, id := range ids {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0."+string(rune('1'+i)), "0"))
		require.NoError(t, err)
		lns[id], members[id] = ln, raft.ServerAddress(ln.Addr().String())
	}
	nodes := map[quorum.NodeID]*Node{}
	for _, id := range ids {
		n, err := New(Config{ID: id, Members: members, Resources: map[string][2]quorum.NodeID{"r0": {"alpha", "beta"}},
			Network: tcpNet{}, Listener: lns[id], Auth: auths[id]})
		require.NoError(t, err)
		nodes[id] = n
		t.Cleanup(func() { _ = n.Close() })
	}
	return nodes
}

// TestFollowerForwardsOverTCP: on real sockets with cram-hmac, any
// member's Submit reaches the leader, and a refusal keeps its sentinel
// across the wire.
func TestFollowerForwardsOverTCP(t *testing.T) {
	auth := Auth{Alg: "sha256", Secret: "quorum-secret"}
	nodes := startTCPGroup(t, map[quorum.NodeID]Auth{"alpha": auth, "beta": auth, "gamma": auth})
	var leader quorum.NodeID
	require.Eventually(t, func() bool {
		leader = nodes["alpha"].Leader()
		for _, n := range nodes {
			if n.Leader() != leader {
				return false // a follower that knows no leader yet cannot forward
			}
		}
		return leader != ""
	}, 20*time.Second, 10*time.Millisecond)
	var follower *Node
	for id, n := range nodes {
		if id != leader {
			follower = n
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []quorum.NodeID{"alpha", "beta"} {
		res, err := follower.Submit(ctx, report(id))
		require.NoError(t, err)
		require.NoError(t, res.Err)
	}
	res, err := follower.Submit(ctx, quorum.Command{Op: quorum.OpPromote, Resource: "r0", Node: "beta"})
	require.NoError(t, err)
	require.NoError(t, res.Err)
	require.Equal(t, quorum.NodeID("beta"), res.After.Primary)

	res, err = follower.Submit(ctx, quorum.Command{Op: quorum.OpPromote, Resource: "r0", Node: "alpha", Takeover: true})
	require.NoError(t, err)
	require.ErrorIs(t, res.Err, quorum.ErrStaleEpoch, "the refusal's sentinel crosses the wire")
	require.Equal(t, uint64(1), res.After.Epoch)
}

// TestPreambleAuthenticates: the connection preamble, both sides, over
// a socket pair.
func TestPreambleAuthenticates(t *testing.T) {
	good := Auth{Alg: "sha256", Secret: "s3cret"}
	for _, tc := range []struct {
		name           string
		dialer, server Auth
		wantErr        string
	}{
		{name: "no secret on either side"},
		{name: "the same secret", dialer: good, server: good},
		{name: "another secret", dialer: good, server: Auth{Alg: "sha256", Secret: "other"}, wantErr: "shared-secret"},
		{name: "another algorithm", dialer: good, server: Auth{Alg: "sha1", Secret: "s3cret"}, wantErr: "shared-secret"},
		{name: "a secret against none", dialer: good, wantErr: "has a shared-secret, gamma none"},
		{name: "none against a secret", server: good, wantErr: "has no shared-secret, gamma has one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			type acc struct {
				kind byte
				from quorum.NodeID
				err  error
			}
			done := make(chan acc, 1)
			go func() {
				k, f, err := accept(b, "gamma", tc.server)
				if err != nil {
					_ = b.Close()
				}
				done <- acc{k, f, err}
			}()
			err := dial(a, "alpha", "gamma", tc.dialer, kindRaft)
			if err != nil {
				_ = a.Close()
			}
			got := <-done
			if tc.wantErr == "" {
				require.NoError(t, err)
				require.NoError(t, got.err)
				require.Equal(t, byte(kindRaft), got.kind)
				require.Equal(t, quorum.NodeID("alpha"), got.from)
				return
			}
			require.ErrorIs(t, err, ErrAuth, "the dialer is refused")
			require.Error(t, got.err, "the listener refuses")
			require.Contains(t, err.Error()+" | "+got.err.Error(), tc.wantErr)
		})
	}
}

// TestPreambleRefusesStrangers: anything but a member's preamble is
// refused with a reason, never routed.
func TestPreambleRefusesStrangers(t *testing.T) {
	for _, in := range []string{"GET / HTTP/1.1\r\n", "TBQ1X\x00\x05alpha"} {
		a, b := net.Pipe()
		go func() { _, _ = a.Write([]byte(in)); _, _ = a.Read(make([]byte, 512)); _ = a.Close() }()
		_, _, err := accept(b, "gamma", Auth{})
		require.ErrorIs(t, err, ErrAuth, "%q", in)
		_ = b.Close()
	}
}
