package splitbrain

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/genid"
)

// TestNoSyncNeverHidesMarkedBlocks: the handshake connects without a
// resync only if neither bitmap marks a block (or both disks are fresh,
// rule 10, or both Inconsistent, with no data to give). Whatever else
// the two sides say, under every policy: a node that marked blocks its
// peer may lack always resyncs them.
//
// This is the trap of LINBIT/drbd#145 (DRBD 9.3.3): a survivor that had
// kept writing through a diskless tiebreaker met its peer, back from a
// clean shutdown, and its handshake chose "no-sync by rule lost-quorum",
// clearing its own non-empty bitmap; both said UpToDate with different
// data. twinblock's quorum feeds nothing into this decision; this test
// keeps it so.
func TestNoSyncNeverHidesMarkedBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(145, 145))
	// A small pool, so that equal current and bitmap UUIDs are common.
	pool := []uint64{0, genid.UUIDJustCreated, 0x100, 0x200, 0x300, 0x100 | genid.UUIDPrimaryBit}
	gi := func() genid.GI {
		var g genid.GI
		for i := range g {
			g[i] = pool[rng.IntN(len(pool))]
		}
		return g
	}
	side := func() Side {
		return Side{GI: gi(), CrashedPrimary: rng.IntN(4) == 0, Primary: rng.IntN(3) == 0,
			Inconsistent: rng.IntN(4) == 0, Changed: uint64(rng.IntN(3)) * 16,
			DiscardMyData: rng.IntN(6) == 0, InUse: rng.IntN(4) == 0}
	}
	policies := []Policy{Disconnect, DiscardYoungerPrimary, DiscardOlderPrimary, DiscardZeroChanges,
		DiscardLeastChanges, DiscardLocal, DiscardRemote, Consensus, DiscardSecondary, CallPriLost, ViolentlyAs0p}
	for i := range 200000 {
		self, peer := side(), side()
		ps := Policies{After0p: policies[rng.IntN(len(policies))], After1p: policies[rng.IntN(len(policies))],
			After2p: policies[rng.IntN(len(policies))], AlwaysASBP: rng.IntN(2) == 0, RRConflict: RRConflict(rng.IntN(3))}
		o := Negotiate(self, peer, ps, rng.IntN(2) == 0)
		if o.Decision != NoSync {
			continue
		}
		fresh := o.Rule == 10
		noData := self.Inconsistent && peer.Inconsistent
		require.True(t, fresh || noData || (self.Changed == 0 && peer.Changed == 0),
			"case %d: no resync although a bitmap marks blocks: self %+v, peer %+v, policies %+v: %v", i, self, peer, ps, o.Log)
	}
}
