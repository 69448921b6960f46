package node

import (
	"fmt"
	"strings"
	"time"

	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/genid"
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
	e := r.explain
	r.mu.Unlock()
	var b strings.Builder
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
