package node

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/replication"
)

// TestPeerlessDiskMarksWhilePeerHasNoData: the writes a Diskless peer
// makes through this node are marked out of sync (and only those), and
// the mark survives a crash because the activity log covers it.
func TestPeerlessDiskMarksWhilePeerHasNoData(t *testing.T) {
	md, data := attachedMem(t, 8<<20)

	pd := &peerlessDisk{Disk: data, md: func() *meta.Meta { return md }}
	buf := make([]byte, 8192)
	steps := []struct {
		peer  fsm.DiskState
		write func() error
		marks uint64 // blocks marked after the step
	}{
		{fsm.UpToDate, func() error { return pd.WriteAt(buf, 0, false) }, 0},
		{fsm.Inconsistent, func() error { return pd.Trim(4096, 4096, false) }, 0},
		{fsm.Diskless, func() error { return pd.WriteAt(buf, 1<<20, false) }, 2},
		{fsm.Failed, func() error { return pd.WriteZeroes(2<<20, 4096, false, false) }, 3},
		{fsm.Attaching, func() error { return pd.Trim(3<<20, 4096, true) }, 4},
		{fsm.UpToDate, func() error { return pd.WriteAt(buf, 4<<20, true) }, 4},
	}
	for _, s := range steps {
		pd.setPeer(replication.State{Disk: byte(s.peer)})
		require.NoError(t, s.write(), "peer %s", s.peer)
		require.Equal(t, s.marks, md.OutOfSync(), "after a write with the peer %s", s.peer)
	}
	// The marked writes (1..3 MiB, extent 0) went through the activity
	// log, which replays their extents as out of sync after a crash; the
	// others did not touch it.
	require.Equal(t, []uint32{0}, md.Active())
}
