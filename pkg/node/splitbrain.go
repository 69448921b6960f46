package node

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/pkg/quorum"
	"github.com/twinblock/twinblock/splitbrain"
)

// splitBrainPolicies reads the net section's after-sb-0pri/1pri/2pri,
// always-asbp and rr-conflict for the node self (discard-node-NAME is
// "this node" on NAME and "the peer" on the other).
func splitBrainPolicies(cfg *config.Resource, self, peer string) (splitbrain.Policies, error) {
	var ps splitbrain.Policies
	for _, k := range []struct {
		keyword string
		dst     *splitbrain.Policy
	}{{"after-sb-0pri", &ps.After0p}, {"after-sb-1pri", &ps.After1p}, {"after-sb-2pri", &ps.After2p}} {
		p, err := splitbrain.ParsePolicy(k.keyword, cfg.Net.String(k.keyword), self, peer)
		if err != nil {
			return ps, fmt.Errorf("%s: resource %s: %w", posOf(cfg, k.keyword), cfg.Name, err)
		}
		*k.dst = p
	}
	rr, err := splitbrain.ParseRRConflict(cfg.Net.String("rr-conflict"))
	if err != nil {
		return ps, fmt.Errorf("%s: resource %s: %w", posOf(cfg, "rr-conflict"), cfg.Name, err)
	}
	ps.RRConflict = rr
	ps.AlwaysASBP = cfg.Net.Bool("always-asbp")
	return ps, nil
}

// posOf is where the net keyword was set, or the resource's position.
func posOf(cfg *config.Resource, keyword string) fmt.Stringer {
	if p, ok := cfg.Net.Pos(keyword); ok {
		return p
	}
	return cfg.Pos
}

// Explain tells, for people, what the last sync handshake with the peer
// found and how to resolve a split brain (twinblock explain).
func (r *Resource) Explain() string {
	r.mu.Lock()
	e, refusal := r.explain, r.refusal
	r.mu.Unlock()
	var b strings.Builder
	if q := r.env.Quorum; q != nil {
		explainQuorum(&b, r.name, quorum.NodeID(r.self.Name), q, refusal.err, refusal.at)
	}
	if e.hs == nil {
		g := e.gi
		fmt.Fprintf(&b, "%s: no handshake with %s since the daemon started.\n", r.name, r.peer.Name)
		fmt.Fprintf(&b, "  this node (%s): current %016X bitmap %016X history %016X %016X, %d blocks out of sync\n",
			r.self.Name, g[genid.Current], g[genid.Bitmap], g[genid.HistoryStart], g[genid.HistoryEnd], e.oos)
		fmt.Fprintf(&b, "  Run `twinblock connect %s` on both nodes: the handshake compares the two nodes' generations;\n", r.name)
		fmt.Fprintf(&b, "  a split brain is detected again without moving any data, and then explained here.\n")
		return b.String()
	}
	gran := e.gran
	if gran == 0 {
		gran = 4096
	}
	_ = splitbrain.Explain(&b, splitbrain.Report{
		Resource: r.name, Self: r.self.Name, Peer: r.peer.Name,
		SelfSide: e.hs.Self, PeerSide: e.hs.Peer, Policies: e.hs.Policies, ResolveConflicts: e.hs.ResolveConflicts,
		Outcome: e.hs.Outcome, BlockSize: gran,
		When: fmt.Sprintf(", %s (%s ago)", e.at.Format(time.DateTime), time.Since(e.at).Round(time.Second)),
	})
	return b.String()
}

// explainQuorum tells what the quorum group holds of a resource, as this
// member sees it, and why it last refused to promote this node.
func explainQuorum(b *strings.Builder, name string, self quorum.NodeID, q QuorumService, refused error, at time.Time) {
	v, _ := q.View(name)
	have := "yes"
	if !q.Quorate() {
		have = "no: this node is not in a majority of the group, and a Primary here holds or fails every request (on-no-quorum)"
	}
	primary := string(v.Primary)
	if primary == "" {
		primary = "none"
	}
	fmt.Fprintf(b, "%s: quorum %s; epoch %d, Primary %s, raft leader %q.\n", name, have, v.Epoch, primary, q.Leader())
	for _, id := range slices.Sorted(maps.Keys(v.Nodes)) {
		n := v.Nodes[id]
		out := ""
		if n.Outdated {
			out = ", Outdated: it may lack acknowledged writes, and is promoted only after a resync or with --force"
		}
		fmt.Fprintf(b, "  %s: reported %s, current %016X%s\n", id, n.Disk, n.Current, out)
	}
	if refused != nil {
		fmt.Fprintf(b, "  The last promotion of %s was refused (%s): %v\n", self, at.Format(time.DateTime), refused)
	}
}
