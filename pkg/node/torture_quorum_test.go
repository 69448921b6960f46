package node

import (
	"context"
	"errors"
	"flag"
	"sync"
	"sync/atomic"

	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/quorum"
)

var tortureQuorum = flag.Bool("torture.quorum", false,
	"run every episode with a quorum group in memory: promotions are its grants, a Primary going on alone waits for its fence-peer, and the faults add quorum loss and the takeover of an isolated Primary")

// tortureGroup is the quorum group of a torture episode: pkg/quorum's
// state, each command decided at once (the raft underneath is
// raftnode's to test), one member per data node that the harness can
// cut off (not quorate: its commands fail with their outcome open, as
// a member that reaches no leader), and the leader's judgement that a
// Primary is gone, which the harness sets for a node it isolated or
// that lost power (then a promotion replaces it: a takeover).
type tortureGroup struct {
	mu    sync.Mutex
	state *quorum.State
	cut   [2]atomic.Bool
	gone  [2]atomic.Bool
}

var tortureIDs = [2]quorum.NodeID{"a", "b"}

func newTortureGroup() *tortureGroup {
	s, err := quorum.NewState(map[string][2]quorum.NodeID{"r0": tortureIDs})
	if err != nil {
		panic(err)
	}
	return &tortureGroup{state: s}
}

// down marks node i cut off and gone (isolated, or without power); up
// brings it back.
func (g *tortureGroup) down(i int) { g.cut[i].Store(true); g.gone[i].Store(true) }
func (g *tortureGroup) up(i int)   { g.cut[i].Store(false); g.gone[i].Store(false) }

// outdated reports whether the group holds either node Outdated.
func (g *tortureGroup) outdated() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, n := range g.state.Resources["r0"].Nodes {
		if n.Outdated {
			return true
		}
	}
	return false
}

// tortureMember is node i's member of a tortureGroup (Env.Quorum).
type tortureMember struct {
	g *tortureGroup
	i int
}

var errTortureNoLeader = errors.New("torture: this member reaches no leader")

func (m tortureMember) Submit(_ context.Context, c quorum.Command) (quorum.Result, error) {
	if m.g.cut[m.i].Load() {
		return quorum.Result{}, errTortureNoLeader
	}
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	if r := m.g.state.Resources[c.Resource]; c.Op == quorum.OpPromote && r != nil && r.Primary != "" && r.Primary != c.Node {
		for j, id := range tortureIDs {
			if id == r.Primary && m.g.gone[j].Load() {
				c.Takeover = true // the leader counts the Primary gone
			}
		}
	}
	res := m.g.state.Apply(c)
	if res.Err != nil && errors.Is(res.Err, quorum.ErrStaleEpoch) && quorum.Granted(c, res.After) {
		res.Err = nil // as raftnode: a retry of a committed command
	}
	return res, nil
}

func (m tortureMember) Quorate() bool         { return !m.g.cut[m.i].Load() }
func (m tortureMember) Leader() quorum.NodeID { return "w" }

func (m tortureMember) View(resource string) (quorum.Resource, bool) {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	r := m.g.state.Resources[resource]
	if r == nil {
		return quorum.Resource{}, false
	}
	return *r.Clone(), true
}

// quorumFault is one of the faults only a quorum resource has (step, in
// -torture.quorum episodes):
//   - no-quorum: the Primary is cut off from the group in the middle of
//     a batch (on-no-quorum io-error: what it has not started fails;
//     what it has either completes on both disks or fails), and comes
//     back;
//   - takeover: the Primary is isolated from its peer and the group in
//     the middle of a batch while it runs on; the group counts it gone
//     and promotes the peer, which serves every acknowledged write and
//     takes writes of its own. Healed, the old Primary meets the new
//     epoch and demotes itself; a split brain its unacknowledged writes
//     may leave is resolved as an administrator does, discarding its
//     data.
func (tt *torture) quorumFault() {
	p := tt.primary
	if p < 0 {
		return
	}
	o := 1 - p
	g := tt.group
	if tt.rng.IntN(2) == 0 {
		tt.st.fault("no-quorum")
		tt.batchWith(func() {
			tt.logf("%s cut off from the group (mid-batch)", tt.nodes[p].name)
			g.cut[p].Store(true)
		})
		g.cut[p].Store(false)
		tt.logf("%s back in the group", tt.nodes[p].name)
		tt.settle(600, tt.synced)
		return
	}
	if !tt.synced() {
		return
	}
	tt.st.fault("takeover")
	tt.batchWith(func() {
		tt.logf("%s isolated from its peer and the group (mid-batch)", tt.nodes[p].name)
		tt.net.Partition(tt.nodes[p].host, tt.nodes[o].host)
		g.down(p)
	})
	tt.settle(300, func() bool { return !linkUp(tt.status(o)) })
	if err := tt.do(o, fsm.Promote{}); err != nil {
		// The group refuses a node that may lack acknowledged writes
		// (Outdated): safe, and the old Primary serves again once healed.
		tt.logf("takeover by %s refused (%s): %v", tt.nodes[o].name, line(tt.status(o)), err)
	} else {
		tt.primary = o
		tt.logf("takeover: %s promoted by the group", tt.nodes[o].name)
		tt.checkReads("lost")
		if tt.failed {
			return
		}
		tt.batch()
	}
	g.up(p)
	tt.net.Heal(tt.nodes[p].host, tt.nodes[o].host)
	tt.logf("healed")
	if tt.primary == o {
		if !tt.settle(600, func() bool { return tt.status(p).Role != "Primary" }) {
			tt.fail("dishonest", "the replaced Primary %s did not demote: %s", tt.nodes[p].name, line(tt.status(p)))
			return
		}
	}
	if !tt.settle(600, tt.synced) && (tt.status(0).SplitBrain || tt.status(1).SplitBrain) {
		tt.st.fault("split-brain")
		v := 1 - max(tt.primary, 0)
		tt.logf("split brain after the takeover: %s discards its data", tt.nodes[v].name)
		_ = tt.do(v, fsm.Disconnect{})
		if err := tt.do(v, fsm.Connect{DiscardMyData: true}); err != nil {
			tt.logf("connect --discard-my-data %s: %v", tt.nodes[v].name, err)
		}
		if tt.status(1-v).Conn == "StandAlone" {
			_ = tt.do(1-v, fsm.Connect{})
		}
		tt.settle(1200, tt.synced)
	}
}
