package fsm

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/genid"
)

// TestIOModeNeedsUpToDateData: a Primary reads from, and mirrors to
// (acknowledging on), a peer without a disk of its own only when the
// peer's disk is UpToDate. An Inconsistent sync target holds stale
// blocks: with no usable local disk, no data is accessible (DRBD's
// on-no-data-accessible io-error), and every request fails.
func TestIOModeNeedsUpToDateData(t *testing.T) {
	tests := []struct {
		name                 string
		disk, peerDisk       DiskState
		conn                 ConnState
		mirror, peerReads    bool
		peerUpToDate, dirtyR bool
	}{
		{name: "diskless, peer UpToDate", disk: Diskless, peerDisk: UpToDate, conn: Connected, mirror: true, peerReads: true, peerUpToDate: true},
		{name: "diskless, peer Inconsistent", disk: Diskless, peerDisk: Inconsistent, conn: Connected},
		{name: "diskless, peer Outdated", disk: Diskless, peerDisk: Outdated, conn: Connected},
		{name: "sync source, peer Inconsistent", disk: UpToDate, peerDisk: Inconsistent, conn: SyncSource, mirror: true},
		{name: "sync target", disk: Inconsistent, peerDisk: UpToDate, conn: SyncTarget, mirror: true, peerUpToDate: true, dirtyR: true},
		{name: "in sync", disk: UpToDate, peerDisk: UpToDate, conn: Connected, mirror: true, peerUpToDate: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := New(Config{Name: "r0", Self: "a", Peer: "b", Protocol: 'C', NewUUID: func() uint64 { return 0x100 }})
			n.role, n.peerRole = Primary, Secondary
			n.disk, n.peerDisk, n.conn = tc.disk, tc.peerDisk, tc.conn
			m := n.IOMode()
			require.True(t, m.Serve)
			require.Equal(t, tc.mirror, m.Mirror, "mirror")
			require.Equal(t, tc.peerReads, m.PeerReads, "peer reads")
			require.Equal(t, tc.peerUpToDate, m.PeerUpToDate, "peer UpToDate")
			require.Equal(t, tc.dirtyR, m.ReadDirtyFromPeer, "dirty reads from peer")
		})
	}
}

// TestSupersededDemotesAnOpenDevice: a Primary the quorum replaced
// demotes although clients hold the device open (a Demote would be
// refused), stops serving, and clears the primary bit of its current
// UUID; on a Secondary it changes nothing.
func TestSupersededDemotesAnOpenDevice(t *testing.T) {
	n := New(Config{Name: "r0", Self: "a", Peer: "b", Protocol: 'C', NewUUID: func() uint64 { return 0x100 }})
	n.role, n.disk, n.conn = Primary, UpToDate, WFConnection
	n.gi.SetPrimary(true)
	require.NoError(t, n.Step(OpenCount{N: 2}))
	require.ErrorIs(t, n.Step(Demote{}), ErrDeviceInUse)
	require.True(t, n.IOMode().Serve)

	require.NoError(t, n.Step(Superseded{}))
	require.Equal(t, Secondary, n.State().Role)
	require.False(t, n.IOMode().Serve, "a replaced Primary still serves")
	require.Zero(t, n.GI()[genid.Current]&genid.UUIDPrimaryBit, "the current UUID still says Primary")

	before := n.State()
	require.NoError(t, n.Step(Superseded{}))
	require.Equal(t, before, n.State())
}

// TestForcedDemotion: secondary --force demotes a Primary whose device
// is open (a plain Demote is refused), and it stops serving.
func TestForcedDemotion(t *testing.T) {
	n := New(Config{Name: "r0", Self: "a", Peer: "b", Protocol: 'C', NewUUID: func() uint64 { return 0x100 }})
	n.role, n.disk, n.conn = Primary, UpToDate, WFConnection
	n.gi.SetPrimary(true)
	require.NoError(t, n.Step(OpenCount{N: 1}))
	require.ErrorIs(t, n.Step(Demote{}), ErrDeviceInUse)
	require.NoError(t, n.Step(Demote{Force: true}))
	require.Equal(t, Secondary, n.State().Role)
	require.False(t, n.IOMode().Serve)
	require.Zero(t, n.GI()[genid.Current]&genid.UUIDPrimaryBit)
}

// TestOutdate: drbdadm outdate marks consistent data Outdated, with the
// metadata flags that keep it so after a restart; it is refused while
// connected (-17) or Primary (-2) and on a node without a disk (-11),
// and leaves Inconsistent data alone.
func TestOutdate(t *testing.T) {
	for _, tc := range []struct {
		name string
		role Role
		disk DiskState
		conn ConnState
		err  error
		want DiskState
	}{
		{"secondary alone", Secondary, UpToDate, WFConnection, nil, Outdated},
		{"standalone", Secondary, UpToDate, StandAlone, nil, Outdated},
		{"consistent", Secondary, Consistent, StandAlone, nil, Outdated},
		{"already", Secondary, Outdated, StandAlone, nil, Outdated},
		{"inconsistent", Secondary, Inconsistent, StandAlone, nil, Inconsistent},
		{"connected", Secondary, UpToDate, Connected, ErrConnectedOutdates, UpToDate},
		{"primary", Primary, UpToDate, WFConnection, ErrNoUpToDateDisk, UpToDate},
		{"diskless", Secondary, Diskless, StandAlone, ErrIsDiskless, Diskless},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(Config{Name: "r0", Self: "a", Peer: "b", Protocol: 'C', NewUUID: func() uint64 { return 0x100 }})
			n.role, n.disk, n.conn = tc.role, tc.disk, tc.conn
			err := n.Step(Outdate{})
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.want, n.State().Disk)
			if tc.want == Outdated {
				f := n.flags()
				require.NotZero(t, f&genid.FlagConsistent)
				require.Zero(t, f&genid.FlagWasUpToDate, "a restart would find it UpToDate")
			}
		})
	}
}
