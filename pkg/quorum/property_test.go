package quorum

import (
	"flag"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/fsm"
)

var propSeed = flag.Uint64("quorum.seed", 0, "replay TestRandomCommandsKeepInvariants with this seed")

// TestRandomCommandsKeepInvariants applies random commands, stale ones
// and retries included, from every node and the witness, and checks the
// package's invariants after each: on a failure it prints the seed
// (-quorum.seed replays it).
func TestRandomCommandsKeepInvariants(t *testing.T) {
	seeds := []uint64{*propSeed}
	if *propSeed == 0 {
		seeds = nil
		for i := range 200 {
			seeds = append(seeds, uint64(i+1))
		}
	}
	for _, seed := range seeds {
		if !runRandomCommands(t, seed) {
			t.Fatalf("replay with: go test ./pkg/quorum -run TestRandomCommandsKeepInvariants -quorum.seed=%d", seed)
		}
	}
}

func runRandomCommands(t *testing.T, seed uint64) bool {
	rng := rand.New(rand.NewPCG(seed, seed^0x51))
	s := newTestState(t)
	nodes := []NodeID{"alpha", "beta", "gamma"} // gamma: the witness
	disks := []fsm.DiskState{fsm.UpToDate, fsm.UpToDate, fsm.Inconsistent, fsm.Outdated, fsm.Diskless}
	ops := []Op{OpReport, OpPromote, OpPromote, OpDemote, OpOutdatePeer, OpPeerUpToDate, OpLeave}
	// outdatedAt[n] = the epoch at which n's peer outdated it (and
	// nothing cleared it since); -1: not Outdated by a command.
	outdatedAt := map[NodeID]int64{"alpha": -1, "beta": -1}
	var history []Command
	ok := true
	for step := range 300 {
		r := s.Resources["r0"]
		c := Command{Op: ops[rng.IntN(len(ops))], Resource: "r0", Node: nodes[rng.IntN(len(nodes))]}
		c.Expect = r.Epoch
		if rng.IntN(4) == 0 && r.Epoch > 0 {
			c.Expect = uint64(rng.IntN(int(r.Epoch) + 1)) // stale, or current
		}
		switch c.Op {
		case OpReport:
			c.Disk, c.Current = disks[rng.IntN(len(disks))], rng.Uint64()
		case OpPromote:
			c.Force = rng.IntN(10) == 0
			c.Takeover = rng.IntN(3) == 0
		}
		if rng.IntN(8) == 0 && len(history) > 0 {
			c = history[rng.IntN(len(history))] // a retry of an earlier command
		}
		before := s.Clone()
		rb := before.Resources["r0"]
		res := s.Apply(c)
		after := s.Resources["r0"]
		fail := func(format string, args ...any) {
			t.Errorf("seed %d step %d: %s: "+format, append([]any{seed, step, c}, args...)...)
			ok = false
		}
		if err := s.Check(); err != nil {
			fail("%v", err)
		}
		if after.Epoch < rb.Epoch {
			fail("epoch went back from %d to %d", rb.Epoch, after.Epoch)
		}
		if after.Primary == "gamma" {
			fail("the witness is Primary")
		}
		if res.Err != nil {
			if !equalState(before, s) {
				fail("refused (%v), yet the state changed", res.Err)
			}
			continue
		}
		history = append(history, c)
		if !Granted(c, res.After) {
			fail("granted, but Granted does not see it in %+v", res.After)
		}
		raised := after.Epoch != rb.Epoch
		if raised && (c.Op != OpPromote || after.Epoch != rb.Epoch+1) {
			fail("the epoch moved from %d to %d", rb.Epoch, after.Epoch)
		}
		if c.Op == OpPromote && raised && !c.Force {
			n := rb.Nodes[c.Node]
			if n.Outdated || n.Disk != fsm.UpToDate {
				fail("promoted a node that was Outdated (%v) or %s", n.Outdated, n.Disk)
			}
			if at := outdatedAt[c.Node]; at >= 0 && uint64(at) == c.Expect {
				fail("promoted at epoch %d the node its Primary outdated at that epoch", at)
			}
		}
		if c.Op == OpPromote && raised && rb.Primary != "" && rb.Primary != c.Node && !c.Takeover {
			fail("replaced Primary %s without a takeover", rb.Primary)
		}
		// Track who was outdated by a command, and when.
		for id, n := range after.Nodes {
			switch {
			case n.Outdated && !rb.Nodes[id].Outdated:
				outdatedAt[id] = int64(rb.Epoch)
			case !n.Outdated:
				outdatedAt[id] = -1
			}
		}
		if !ok {
			return false
		}
	}
	// The snapshot format keeps everything.
	b, err := s.Marshal()
	require.NoError(t, err)
	back, err := Unmarshal(b)
	require.NoError(t, err)
	require.True(t, equalState(s, back), "snapshot round trip")
	return ok
}

func equalState(a, b *State) bool {
	if len(a.Resources) != len(b.Resources) {
		return false
	}
	for name, ra := range a.Resources {
		rb := b.Resources[name]
		if rb == nil || ra.Epoch != rb.Epoch || ra.Primary != rb.Primary || len(ra.Nodes) != len(rb.Nodes) {
			return false
		}
		for id, na := range ra.Nodes {
			if nb := rb.Nodes[id]; nb == nil || *na != *nb {
				return false
			}
		}
	}
	return true
}

// TestSnapshotRefusesBrokenState: a snapshot that breaks an invariant is
// an error naming it, not a state.
func TestSnapshotRefusesBrokenState(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"not JSON", `{`, "snapshot"},
		{"the witness Primary", `{"resources":{"r0":{"epoch":1,"primary":"gamma","nodes":{"alpha":{},"beta":{}}}}}`, "not a data node"},
		{"one data node", `{"resources":{"r0":{"epoch":0,"nodes":{"alpha":{}}}}}`, "1 data nodes"},
		{"Primary at epoch 0", `{"resources":{"r0":{"epoch":0,"primary":"alpha","nodes":{"alpha":{},"beta":{}}}}}`, "epoch 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unmarshal([]byte(tc.in))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// FuzzUnmarshal: any bytes give a checked state or an error.
func FuzzUnmarshal(f *testing.F) {
	s, _ := NewState(map[string][2]NodeID{"r0": {"alpha", "beta"}})
	b, _ := s.Marshal()
	f.Add(b)
	c, _ := Command{Op: OpPromote, Resource: "r0", Node: "alpha"}.Marshal()
	f.Add(c)
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := Unmarshal(b); err == nil {
			require.NoError(t, s.Check())
		}
		if c, err := UnmarshalCommand(b); err == nil {
			_ = c.String()
		}
	})
}
