package fsm

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/genid"
)

// TestLinkUpDecidesOnWhatWasSent: the peer decides on the State this
// node's handshake sent, so a node whose state changed since drops the
// new connection instead of deciding on its current state (finding 13:
// a promotion between the two, with its new current UUID, made the peer
// connect in sync while this node became sync source).
func TestLinkUpDecidesOnWhatWasSent(t *testing.T) {
	gen := genid.GI{0x5eed000}
	tests := []struct {
		name   string
		change func(sent *PeerInfo)
		oos    uint64
		drops  bool
	}{
		{"nothing changed", func(*PeerInfo) {}, 0, false},
		{"promoted since", func(s *PeerInfo) { s.Role = Secondary }, 0, true},
		{"new current UUID since", func(s *PeerInfo) { s.GI = genid.GI{0x777000} }, 0, true},
		{"disk changed since", func(s *PeerInfo) { s.Disk = Outdated }, 0, true},
		{"first marks since", func(*PeerInfo) {}, 3, true},
		{"more marks since", func(s *PeerInfo) { s.OutOfSync = 1 }, 3, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := New(Config{Name: "r0", Self: "a", Peer: "b", NewUUID: func() uint64 { return 0x100 }})
			require.NoError(t, n.Step(AttachBegin{}))
			require.NoError(t, n.Step(Attached{GI: gen, Flags: genid.FlagConsistent | genid.FlagWasUpToDate}))
			require.NoError(t, n.Step(Connect{}))
			require.NoError(t, n.Step(Promote{}))
			n.Advance()
			sent := PeerInfo{Role: Primary, Disk: UpToDate, GI: n.GI()}
			tc.change(&sent)
			peer := PeerInfo{Role: Secondary, Disk: UpToDate, GI: gen}
			require.NoError(t, n.Step(LinkUp{Peer: peer, Sent: sent, OutOfSync: tc.oos}))
			var closed bool
			for _, a := range n.Ready().Actions {
				closed = closed || a.Kind == ActCloseLink
			}
			require.Equal(t, tc.drops, closed)
			if tc.drops {
				require.Equal(t, WFConnection, n.State().Conn, "connects again")
				require.Nil(t, n.LastHandshake(), "no decision on a state the peer never saw")
			} else {
				require.NotEqual(t, WFConnection, n.State().Conn)
			}
		})
	}
}

// TestMarkedWhileInSyncRenegotiates: blocks marked while the pair says
// it is in sync drop the connection (the handshake that follows resyncs
// them); in any other state the event changes nothing.
func TestMarkedWhileInSyncRenegotiates(t *testing.T) {
	gen := genid.GI{0x5eed000}
	for _, tc := range []struct {
		name     string
		peerDisk DiskState
		drops    bool
	}{
		{"in sync", UpToDate, true},
		{"peer Inconsistent (a resync)", Inconsistent, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := uint64(0)
			n := New(Config{Name: "r0", Self: "a", Peer: "b", NewUUID: func() uint64 { u += 0x100; return u }})
			require.NoError(t, n.Step(AttachBegin{}))
			require.NoError(t, n.Step(Attached{GI: gen, Flags: genid.FlagConsistent | genid.FlagWasUpToDate}))
			require.NoError(t, n.Step(Connect{}))
			require.NoError(t, n.Step(Promote{}))
			sent := PeerInfo{Role: Primary, Disk: UpToDate, GI: n.GI()}
			require.NoError(t, n.Step(LinkUp{Peer: PeerInfo{Role: Secondary, Disk: UpToDate, GI: n.GI()}, Sent: sent}))
			require.Equal(t, Connected, n.State().Conn)
			if tc.peerDisk != UpToDate {
				require.NoError(t, n.Step(PeerChanged{Peer: PeerInfo{Role: Secondary, Disk: tc.peerDisk, GI: n.GI()}}))
			}
			n.Advance()
			require.NoError(t, n.Step(MarkedWhileInSync{Blocks: 3}))
			var closed bool
			for _, a := range n.Ready().Actions {
				closed = closed || a.Kind == ActCloseLink
			}
			require.Equal(t, tc.drops, closed)
			if tc.drops {
				require.Equal(t, WFConnection, n.State().Conn)
				require.Contains(t, n.Ready().Log, "r0: 3 blocks marked out of sync while connected in sync: renegotiating")
			}
		})
	}
}
