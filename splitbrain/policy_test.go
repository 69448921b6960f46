package splitbrain

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/genid"
)

// The split-brain scenario of every policy test: both nodes went on
// from generation 0x100 (rule 90). old marks the node that was Primary
// before the split (bit 0 of its bitmap UUID).
func sbSides(selfPri, peerPri bool, selfCh, peerCh uint64, selfOld bool) (Side, Side) {
	self := Side{GI: genid.GI{0x301, 0x100}, Primary: selfPri, Changed: selfCh}
	peer := Side{GI: genid.GI{0x401, 0x100}, Primary: peerPri, Changed: peerCh}
	if selfOld {
		self.GI[genid.Bitmap] |= genid.UUIDPrimaryBit
	} else {
		peer.GI[genid.Bitmap] |= genid.UUIDPrimaryBit
	}
	return self, peer
}

const (
	src  = SourceBitmap
	tgt  = TargetBitmap
	drop = SplitBrainDrop
)

func TestRecover(t *testing.T) {
	type pol = Policies
	tests := []struct {
		name             string
		ps               Policies
		selfPri, peerPri bool
		selfCh, peerCh   uint64
		selfOld          bool // self was Primary before the split
		rc               bool // self holds the tie-break (and is discarded on a draw)
		want             Decision
		demote           bool
	}{
		// after-sb-0pri: no Primary now.
		{"0pri disconnect", pol{After0p: Disconnect}, false, false, 5, 0, true, false, drop, false},
		{"0pri younger primary: peer is younger", pol{After0p: DiscardYoungerPrimary}, false, false, 5, 9, true, false, src, false},
		{"0pri younger primary: self is younger", pol{After0p: DiscardYoungerPrimary}, false, false, 9, 5, false, false, tgt, false},
		{"0pri older primary: self is older", pol{After0p: DiscardOlderPrimary}, false, false, 5, 9, true, false, tgt, false},
		{"0pri older primary: peer is older", pol{After0p: DiscardOlderPrimary}, false, false, 5, 9, false, false, src, false},
		{"0pri zero changes: self changed nothing", pol{After0p: DiscardZeroChanges}, false, false, 0, 7, true, false, tgt, false},
		{"0pri zero changes: peer changed nothing", pol{After0p: DiscardZeroChanges}, false, false, 7, 0, true, false, src, false},
		{"0pri zero changes: neither changed, tie-break holder loses", pol{After0p: DiscardZeroChanges}, false, false, 0, 0, true, true, tgt, false},
		{"0pri zero changes: neither changed, other side", pol{After0p: DiscardZeroChanges}, false, false, 0, 0, true, false, src, false},
		{"0pri zero changes: both changed", pol{After0p: DiscardZeroChanges}, false, false, 3, 7, true, false, drop, false},
		{"0pri least changes: self fewer", pol{After0p: DiscardLeastChanges}, false, false, 3, 7, true, false, tgt, false},
		{"0pri least changes: peer fewer", pol{After0p: DiscardLeastChanges}, false, false, 7, 3, true, false, src, false},
		{"0pri least changes: zero here", pol{After0p: DiscardLeastChanges}, false, false, 0, 3, true, false, tgt, false},
		{"0pri least changes: draw", pol{After0p: DiscardLeastChanges}, false, false, 4, 4, true, true, tgt, false},
		{"0pri discard-node self", pol{After0p: DiscardLocal}, false, false, 0, 9, true, false, tgt, false},
		{"0pri discard-node peer", pol{After0p: DiscardRemote}, false, false, 9, 0, true, false, src, false},
		// after-sb-1pri: one Primary now.
		{"1pri disconnect", pol{After0p: DiscardZeroChanges, After1p: Disconnect}, true, false, 5, 0, true, false, drop, false},
		{"1pri consensus: discards the Secondary peer", pol{After0p: DiscardZeroChanges, After1p: Consensus}, true, false, 5, 0, true, false, src, false},
		{"1pri consensus: discards this Secondary", pol{After0p: DiscardZeroChanges, After1p: Consensus}, false, true, 0, 5, true, false, tgt, false},
		{"1pri consensus: would discard the Primary", pol{After0p: DiscardZeroChanges, After1p: Consensus}, true, false, 0, 5, true, false, drop, false},
		{"1pri consensus: 0pri disconnects", pol{After0p: Disconnect, After1p: Consensus}, true, false, 0, 5, true, false, drop, false},
		{"1pri discard-secondary: self Primary", pol{After1p: DiscardSecondary}, true, false, 0, 5, true, false, src, false},
		{"1pri discard-secondary: self Secondary", pol{After1p: DiscardSecondary}, false, true, 5, 0, true, false, tgt, false},
		{"1pri violently: discards the Primary", pol{After0p: DiscardZeroChanges, After1p: ViolentlyAs0p}, true, false, 0, 5, true, false, tgt, false},
		{"1pri violently: 0pri disconnects", pol{After0p: Disconnect, After1p: ViolentlyAs0p}, true, false, 0, 5, true, false, drop, false},
		{"1pri call-pri-lost: Primary loses, demotes", pol{After0p: DiscardZeroChanges, After1p: CallPriLost}, true, false, 0, 5, true, false, tgt, true},
		{"1pri call-pri-lost: Secondary loses", pol{After0p: DiscardZeroChanges, After1p: CallPriLost}, true, false, 5, 0, true, false, src, false},
		{"1pri call-pri-lost: this Secondary loses", pol{After0p: DiscardZeroChanges, After1p: CallPriLost}, false, true, 0, 5, true, false, tgt, false},
		{"1pri call-pri-lost: 0pri disconnects", pol{After0p: Disconnect, After1p: CallPriLost}, true, false, 0, 5, true, false, drop, false},
		// after-sb-2pri: both Primary now.
		{"2pri disconnect", pol{After0p: DiscardZeroChanges, After2p: Disconnect}, true, true, 0, 5, true, false, drop, false},
		{"2pri violently: self loses", pol{After0p: DiscardZeroChanges, After2p: ViolentlyAs0p}, true, true, 0, 5, true, false, tgt, false},
		{"2pri violently: peer loses", pol{After0p: DiscardLeastChanges, After2p: ViolentlyAs0p}, true, true, 9, 5, true, false, src, false},
		{"2pri call-pri-lost: self loses, demotes", pol{After0p: DiscardYoungerPrimary, After2p: CallPriLost}, true, true, 9, 5, false, false, tgt, true},
		{"2pri call-pri-lost: peer loses", pol{After0p: DiscardYoungerPrimary, After2p: CallPriLost}, true, true, 9, 5, true, false, src, false},
		{"2pri call-pri-lost: 0pri disconnects", pol{After0p: Disconnect, After2p: CallPriLost}, true, true, 0, 5, true, false, drop, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			self, peer := sbSides(tt.selfPri, tt.peerPri, tt.selfCh, tt.peerCh, tt.selfOld)
			v := tt.ps.Recover(self, peer, tt.rc)
			require.Equal(t, tt.want, v.Decision, v.Why)
			require.Equal(t, tt.demote, v.Demote, v.Why)
			require.NotEmpty(t, v.Why)
			// The peer, with the same policies, reaches the mirror verdict.
			back := tt.ps.Mirror().Recover(peer, self, !tt.rc)
			if tt.want == drop {
				require.Equal(t, drop, back.Decision, back.Why)
			} else {
				require.Equal(t, -tt.want, back.Decision, back.Why)
			}
		})
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		keyword, value string
		want           Policy
		err            bool
	}{
		{"after-sb-0pri", "", Disconnect, false},
		{"after-sb-0pri", "disconnect", Disconnect, false},
		{"after-sb-0pri", "discard-younger-primary", DiscardYoungerPrimary, false},
		{"after-sb-0pri", "discard-older-primary", DiscardOlderPrimary, false},
		{"after-sb-0pri", "discard-zero-changes", DiscardZeroChanges, false},
		{"after-sb-0pri", "discard-least-changes", DiscardLeastChanges, false},
		{"after-sb-0pri", "discard-node-alpha", DiscardLocal, false},
		{"after-sb-0pri", "discard-node-beta", DiscardRemote, false},
		{"after-sb-0pri", "discard-node-gamma", 0, true},
		{"after-sb-0pri", "consensus", 0, true},
		{"after-sb-0pri", "discard-local", 0, true},
		{"after-sb-1pri", "consensus", Consensus, false},
		{"after-sb-1pri", "discard-secondary", DiscardSecondary, false},
		{"after-sb-1pri", "call-pri-lost-after-sb", CallPriLost, false},
		{"after-sb-1pri", "violently-as0p", ViolentlyAs0p, false},
		{"after-sb-1pri", "discard-zero-changes", 0, true},
		{"after-sb-1pri", "discard-node-alpha", 0, true},
		{"after-sb-2pri", "violently-as0p", ViolentlyAs0p, false},
		{"after-sb-2pri", "call-pri-lost-after-sb", CallPriLost, false},
		{"after-sb-2pri", "discard-secondary", 0, true},
		{"after-sb-3pri", "disconnect", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.keyword+" "+tt.value, func(t *testing.T) {
			p, err := ParsePolicy(tt.keyword, tt.value, "alpha", "beta")
			if tt.err {
				require.Error(t, err)
				require.Contains(t, err.Error(), tt.keyword)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, p)
		})
	}
	rr, err := ParseRRConflict("violently")
	require.NoError(t, err)
	require.Equal(t, RRViolently, rr)
	_, err = ParseRRConflict("sometimes")
	require.Error(t, err)
}

func TestNegotiate(t *testing.T) {
	diverged := func() (Side, Side) { return sbSides(false, false, 4, 6, true) }
	tests := []struct {
		name     string
		ps       Policies
		edit     func(self, peer *Side)
		want     Decision
		sb       bool
		refuse   string
		handlers []string
		resolved string
	}{
		{name: "split brain, default policies: dropped, handlers run",
			want: drop, sb: true, refuse: "Split-Brain detected but unresolved", handlers: []string{HandlerInitialSplitBrain, HandlerSplitBrain}},
		{name: "discard-my-data here: bitmap-based target",
			edit: func(s, p *Side) { s.DiscardMyData = true }, want: tgt, sb: true, handlers: []string{HandlerInitialSplitBrain}, resolved: "--discard-my-data on this node"},
		{name: "discard-my-data on the peer: source",
			edit: func(s, p *Side) { p.DiscardMyData = true }, want: src, sb: true, handlers: []string{HandlerInitialSplitBrain}, resolved: "--discard-my-data on the peer"},
		{name: "discard-my-data on both: dropped",
			edit: func(s, p *Side) { s.DiscardMyData, p.DiscardMyData = true, true },
			want: drop, sb: true, refuse: "unresolved", handlers: []string{HandlerInitialSplitBrain, HandlerSplitBrain}},
		{name: "discard-my-data, survivor Primary: source",
			edit: func(s, p *Side) { s.Primary, p.DiscardMyData = true, true }, want: src, sb: true, handlers: []string{HandlerInitialSplitBrain}},
		{name: "discard-my-data on a Primary victim: rr-conflict disconnect",
			edit: func(s, p *Side) { s.Primary, s.DiscardMyData = true, true }, want: tgt, sb: true, refuse: "I shall become SyncTarget, but I am primary!", handlers: []string{HandlerInitialSplitBrain}},
		{name: "discard-my-data on a Primary victim: rr-conflict call-pri-lost",
			ps:   Policies{RRConflict: RRCallPriLost},
			edit: func(s, p *Side) { s.Primary, s.DiscardMyData = true, true }, want: tgt, sb: true, refuse: "call-pri-lost", handlers: []string{HandlerInitialSplitBrain, HandlerPriLost}},
		{name: "discard-my-data on a Primary victim: rr-conflict violently",
			ps:   Policies{RRConflict: RRViolently},
			edit: func(s, p *Side) { s.Primary, s.DiscardMyData = true, true }, want: tgt, sb: true, handlers: []string{HandlerInitialSplitBrain}},
		{name: "the Primary peer would be the target: this side refuses too",
			edit: func(s, p *Side) { p.Primary, p.DiscardMyData = true, true }, want: src, sb: true, refuse: "the peer shall become SyncTarget", handlers: []string{HandlerInitialSplitBrain}},
		{name: "policy resolves",
			ps: Policies{After0p: DiscardLeastChanges}, want: tgt, sb: true, handlers: []string{HandlerInitialSplitBrain}, resolved: "after-sb-0pri discard-least-changes"},
		{name: "rule 100 with discard-my-data: full",
			edit: func(s, p *Side) {
				s.GI, p.GI = genid.GI{0x301, 0x200, 0x100}, genid.GI{0x401, 0x500, 0x100}
				s.DiscardMyData = true
			}, want: TargetFull, sb: true, handlers: []string{HandlerInitialSplitBrain}},
		{name: "rule 100 is not given to the policies",
			ps: Policies{After0p: DiscardLeastChanges},
			edit: func(s, p *Side) {
				s.GI, p.GI = genid.GI{0x301, 0x200, 0x100}, genid.GI{0x401, 0x500, 0x100}
			}, want: drop, sb: true, refuse: "unresolved", handlers: []string{HandlerInitialSplitBrain, HandlerSplitBrain}},
		{name: "rule 100 with always-asbp: policy, full sync",
			ps: Policies{After0p: DiscardLeastChanges, AlwaysASBP: true},
			edit: func(s, p *Side) {
				s.GI, p.GI = genid.GI{0x301, 0x200, 0x100}, genid.GI{0x401, 0x500, 0x100}
			}, want: TargetFull, sb: true, handlers: []string{HandlerInitialSplitBrain}},
		{name: "both Primary: after-sb-2pri disconnect",
			ps:   Policies{After0p: DiscardLeastChanges},
			edit: func(s, p *Side) { s.Primary, p.Primary = true, true }, want: drop, sb: true, refuse: "unresolved", handlers: []string{HandlerInitialSplitBrain, HandlerSplitBrain}},
		{name: "both Primary: call-pri-lost-after-sb demotes the loser",
			ps:   Policies{After0p: DiscardLeastChanges, After2p: CallPriLost},
			edit: func(s, p *Side) { s.Primary, p.Primary = true, true }, want: tgt, sb: true, handlers: []string{HandlerInitialSplitBrain}},
		{name: "both Primary: call-pri-lost-after-sb, loser in use",
			ps:   Policies{After0p: DiscardLeastChanges, After2p: CallPriLost},
			edit: func(s, p *Side) { s.Primary, p.Primary, s.InUse = true, true, true }, want: drop, sb: true, refuse: "unresolved",
			handlers: []string{HandlerInitialSplitBrain, HandlerPriLostAfterSB, HandlerSplitBrain}},
		{name: "both Primary: violently-as0p still cannot connect two Primaries",
			ps:   Policies{After0p: DiscardLeastChanges, After2p: ViolentlyAs0p, RRConflict: RRViolently},
			edit: func(s, p *Side) { s.Primary, p.Primary = true, true }, want: tgt, sb: true, refuse: "both nodes are Primary", handlers: []string{HandlerInitialSplitBrain}},
		{name: "unrelated",
			edit: func(s, p *Side) { s.GI, p.GI = genid.GI{0x301, 0x200}, genid.GI{0x401, 0x500} }, want: Unrelated, refuse: "unrelated data"},
		{name: "this side Inconsistent: target, full after a split brain",
			edit: func(s, p *Side) { s.Inconsistent = true }, want: TargetFull},
		{name: "no split brain: discard-my-data is ignored",
			edit: func(s, p *Side) { s.GI, p.GI, s.DiscardMyData = genid.GI{0x100}, genid.GI{0x201, 0x100}, true }, want: tgt},
	}
	emitted := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			self, peer := diverged()
			if tt.edit != nil {
				tt.edit(&self, &peer)
			}
			o := Negotiate(self, peer, tt.ps, false)
			for _, h := range o.Handlers {
				emitted[h] = true
			}
			require.Equal(t, tt.want, o.Decision, "%q", o.Log)
			require.Equal(t, tt.sb, o.SplitBrain)
			if tt.refuse == "" {
				require.Empty(t, o.Refuse, "%q", o.Log)
			} else {
				require.Contains(t, o.Refuse, tt.refuse)
			}
			require.Equal(t, tt.handlers, o.Handlers)
			if tt.resolved != "" {
				require.Contains(t, o.Resolution, tt.resolved)
			}
		})
	}
	// Handlers is what Negotiate asks for: each of them, no other.
	var names []string
	for h := range emitted {
		names = append(names, h)
	}
	require.ElementsMatch(t, Handlers, names)
}

// TestNegotiateAgrees: for random pairs of sides and random policies,
// either both nodes end the connection or neither does, and then they
// never both become source or both target.
func TestNegotiateAgrees(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	next := uint64(0x1000)
	// Tuples as real histories make them: a common base generation,
	// then on each side new generations (a Primary alone) and resync
	// ends (the bitmap UUID moving into the history); sometimes an
	// unrelated base, or fresh metadata.
	gi := func() genid.GI {
		g := genid.GI{0x100, 0, 0x80, 0x40}
		switch r.IntN(10) {
		case 0:
			return genid.GI{genid.UUIDJustCreated}
		case 1:
			next += 0x100
			g = genid.GI{next}
		}
		for range r.IntN(3) {
			next += 0x100
			g.NewCurrent(next, r.IntN(2) == 0)
			if r.IntN(3) == 0 {
				g.FinishResyncSource()
			}
		}
		return g
	}
	side := func() Side {
		return Side{GI: gi(), Primary: r.IntN(2) == 0, CrashedPrimary: r.IntN(4) == 0, Inconsistent: r.IntN(5) == 0,
			Changed: uint64(r.IntN(3)), DiscardMyData: r.IntN(3) == 0}
	}
	p0 := allowed["after-sb-0pri"]
	p1 := allowed["after-sb-1pri"]
	p2 := allowed["after-sb-2pri"]
	for i := range 20000 {
		a, b := side(), side()
		ps := Policies{After0p: p0[r.IntN(len(p0))], After1p: p1[r.IntN(len(p1))], After2p: p2[r.IntN(len(p2))],
			AlwaysASBP: r.IntN(2) == 0, RRConflict: RRConflict(r.IntN(3))}
		psB := ps.Mirror()
		oa := Negotiate(a, b, ps, true)
		ob := Negotiate(b, a, psB, false)
		require.Subset(t, Handlers, oa.Handlers, "case %d", i)
		require.Subset(t, Handlers, ob.Handlers, "case %d", i)
		require.Equal(t, oa.Refuse == "", ob.Refuse == "", "case %d: one node goes on, the other refuses: %+v %+v %+v\n%q\n%q", i, a, b, ps, oa.Log, ob.Log)
		if oa.Refuse != "" {
			continue
		}
		// The direction must agree. Full against bitmap-based may
		// differ on tuples no real history produces; the bitmap
		// exchange (a union) then makes both full.
		sign := func(d Decision) int { return max(-1, min(1, int(d))) }
		require.Equal(t, -sign(oa.Decision), sign(ob.Decision), "case %d: %+v %+v %+v\n%q\n%q", i, a, b, ps, oa.Log, ob.Log)
	}
}

func TestExplain(t *testing.T) {
	self, peer := sbSides(true, false, 3, 2, true)
	ps := Policies{}
	o := Negotiate(self, peer, ps, true)
	var b strings.Builder
	require.NoError(t, Explain(&b, Report{Resource: "r0", Self: "alpha", Peer: "beta", SelfSide: self, PeerSide: peer,
		Policies: ps, ResolveConflicts: true, Outcome: o, BlockSize: 4096, When: " (3s ago)"}))
	out := b.String()
	for _, want := range []string{
		"r0: last handshake with beta (3s ago)",
		"alpha (this node) 0000000000000301 0000000000000101",
		"uuid_compare()=100 by rule 90 (split-brain-auto-recover)",
		"both wrote while apart (split brain)",
		"split brain, not resolved (after-sb-1pri disconnect)",
		"Keep alpha's data (beta is the victim):",
		"on beta:  twinblock connect --discard-my-data r0",
		"on alpha:  twinblock connect r0",
		"-> beta becomes SyncTarget of alpha, bitmap-based",
		"at most 5 blocks (3 blocks here + 2 blocks on beta, 20 KiB)",
		"Keep beta's data (alpha is the victim):",
		"on alpha:  twinblock secondary r0",
	} {
		require.Contains(t, out, want)
	}

	// Rule 100: the manual resolution is a full resync.
	self.GI, peer.GI = genid.GI{0x301, 0x200, 0x100}, genid.GI{0x401, 0x500, 0x100}
	o = Negotiate(self, peer, ps, true)
	b.Reset()
	require.NoError(t, Explain(&b, Report{Resource: "r0", Self: "alpha", Peer: "beta", SelfSide: self, PeerSide: peer,
		Policies: ps, Outcome: o, BlockSize: 4096}))
	require.Contains(t, b.String(), "becomes SyncTarget of a full resync from alpha")

	// Unrelated data says how to make one a copy of the other.
	self.GI, peer.GI = genid.GI{0x301, 0x200}, genid.GI{0x401, 0x500}
	o = Negotiate(self, peer, ps, true)
	b.Reset()
	require.NoError(t, Explain(&b, Report{Resource: "r0", Self: "alpha", Peer: "beta", SelfSide: self, PeerSide: peer, Outcome: o, BlockSize: 4096}))
	require.Contains(t, b.String(), "unrelated data")
	require.Contains(t, b.String(), "twinblock create-md r0")
}

func TestPoliciesOnTheWire(t *testing.T) {
	tests := []struct {
		name       string
		a, b       Policies
		mismatched string
	}{
		{"defaults", Policies{}, Policies{}, ""},
		{"discard-node names the same node", Policies{After0p: DiscardLocal}, Policies{After0p: DiscardRemote}, ""},
		{"discard-node names different nodes", Policies{After0p: DiscardLocal}, Policies{After0p: DiscardLocal}, "after-sb-0pri"},
		{"1pri differs", Policies{After1p: Consensus}, Policies{After1p: DiscardSecondary}, "after-sb-1pri"},
		{"2pri differs", Policies{After2p: CallPriLost}, Policies{}, "after-sb-2pri"},
		{"rr-conflict differs", Policies{RRConflict: RRViolently}, Policies{}, "rr-conflict"},
		{"always-asbp differs", Policies{AlwaysASBP: true}, Policies{}, "always-asbp"},
		{"all set alike", Policies{After0p: DiscardZeroChanges, After1p: CallPriLost, After2p: ViolentlyAs0p, RRConflict: RRCallPriLost, AlwaysASBP: true},
			Policies{After0p: DiscardZeroChanges, After1p: CallPriLost, After2p: ViolentlyAs0p, RRConflict: RRCallPriLost, AlwaysASBP: true}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := DecodePolicies(tt.b.Encode())
			require.True(t, ok)
			require.Equal(t, tt.b, got)
			require.Equal(t, tt.mismatched, tt.a.Incompatible(got))
		})
	}
	_, ok := DecodePolicies(0)
	require.False(t, ok)
	_, ok = DecodePolicies(1<<15 | 15)
	require.False(t, ok)
}
