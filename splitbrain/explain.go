package splitbrain

import (
	"fmt"
	"io"
	"strings"

	"github.com/twinblock/twinblock/pkg/genid"
)

// Report is what Explain needs: a handshake as one node saw it.
type Report struct {
	Resource         string
	Self, Peer       string // node names
	SelfSide         Side
	PeerSide         Side
	Policies         Policies
	ResolveConflicts bool
	Outcome          Outcome
	BlockSize        int64  // bytes per bitmap bit
	When             string // when the handshake ran, for the header
}

// ruleText says in words what each rule of Compare found.
var ruleText = map[int]string{
	10:   "both disks have fresh metadata: nothing to sync",
	20:   "this node's metadata is fresh: it needs all of the peer's data",
	30:   "the peer's metadata is fresh: it needs all of this node's data",
	34:   "this node was sync source and missed the end of the resync: repaired, it resyncs what is left",
	35:   "the peer was sync source and missed the end of the resync: repaired, it resyncs what is left",
	36:   "this node was sync source of a resync the peer never finished",
	37:   "the peer was sync source of a resync this node never finished",
	40:   "both hold the same data generation",
	41:   "the same data generation, but a node crashed as Primary: its activity log's extents are resynced",
	42:   "the same data generation, but blocks are marked out of sync: they are resynced from the Primary, else from the node that marked them (twinblock's rule)",
	50:   "the peer went on without this node from this node's generation: this node needs the blocks in the bitmaps",
	51:   "the peer started a resync to this node whose sync UUID never arrived: undone, resync from the bitmaps",
	60:   "this node's generation is in the peer's history: this node is too far behind for a bitmap, it needs all of the peer's data",
	70:   "this node went on without the peer from the peer's generation: the peer needs the blocks in the bitmaps",
	71:   "this node started a resync to the peer whose sync UUID never arrived: undone, resync from the bitmaps",
	80:   "the peer's generation is in this node's history: the peer needs all of this node's data",
	90:   "both nodes started a new data generation from the same one: both wrote while apart (split brain)",
	100:  "the nodes share only an older generation in their history: both diverged (split brain), and the bitmaps do not cover everything since",
	1000: "the two disks share no data generation: unrelated data (metadata created separately)",
}

// Explain writes, for people, what a handshake found and what to do:
// both tuples, the rule, the outcome, and for a split brain the
// commands that resolve it either way with what each would resync.
func Explain(w io.Writer, r Report) error {
	var b strings.Builder
	pf := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	o := r.Outcome
	pf("%s: last handshake with %s%s\n\n", r.Resource, r.Peer, r.When)
	pf("  %-16s %-16s %-16s %-33s %s\n", "", "current", "bitmap", "history", "changed")
	row := func(name string, s Side) {
		g := s.GI
		var notes []string
		if s.Primary {
			notes = append(notes, "Primary")
		} else {
			notes = append(notes, "Secondary")
		}
		if s.Inconsistent {
			notes = append(notes, "Inconsistent")
		}
		if s.CrashedPrimary {
			notes = append(notes, "crashed as Primary")
		}
		if s.DiscardMyData {
			notes = append(notes, "--discard-my-data")
		}
		pf("  %-16s %016X %016X %016X %016X %-10s %s\n", name, g[genid.Current], g[genid.Bitmap],
			g[genid.HistoryStart], g[genid.HistoryEnd], r.blocks(s.Changed), strings.Join(notes, ", "))
	}
	row(r.Self+" (this node)", r.SelfSide)
	row(r.Peer+" (peer)", r.PeerSide)
	pf("\n  (bit 0 of a UUID: the node was Primary when that generation began)\n\n")
	pf("uuid_compare()=%d by rule %d (%s):\n  %s.\n\n", int(o.Compare), o.Rule, o.Compare, ruleText[o.Rule])
	pf("Result: %s\n", r.result(o))
	if o.SplitBrain && o.Decision == SplitBrainDrop {
		r.howToResolve(pf)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r Report) blocks(n uint64) string {
	if n == 1 {
		return "1 block"
	}
	return fmt.Sprintf("%d blocks", n)
}

func (r Report) result(o Outcome) string {
	switch {
	case o.Decision == Unrelated:
		return "the connection is refused: " + o.Refuse + ".\n  If one disk is meant to become a copy of the other, run `twinblock create-md " +
			r.Resource + "` on it (its data is then fully resynced), or `twinblock invalidate " + r.Resource + "` once connected."
	case o.Decision == SplitBrainDrop:
		return "split brain, not resolved (" + policyFor(r.SelfSide, r.PeerSide, r.Policies) +
			"): both nodes dropped the connection and went StandAlone. No data moved."
	case o.Refuse != "":
		return fmt.Sprintf("%s would %s, but the connection is refused: %s.", r.Self, direction(o.Decision), o.Refuse)
	}
	s := fmt.Sprintf("%s %s.", r.Self, direction(o.Decision))
	if o.Resolution != "" {
		s += "\n  The split brain was resolved by " + o.Resolution + "."
	}
	return s
}

func direction(d Decision) string {
	switch {
	case d == NoSync:
		return "needs no resync"
	case d == TargetFull:
		return "becomes SyncTarget of a full resync (every block)"
	case d == TargetBitmap:
		return "becomes SyncTarget of a bitmap-based resync"
	case d == SourceFull:
		return "becomes SyncSource of a full resync (every block)"
	case d == SourceBitmap:
		return "becomes SyncSource of a bitmap-based resync"
	}
	return d.String()
}

// policyFor names the policy that applied to the number of Primaries.
func policyFor(self, peer Side, ps Policies) string {
	switch primaries(self, peer) {
	case 0:
		return "after-sb-0pri " + ps.After0p.String()
	case 1:
		return "after-sb-1pri " + ps.After1p.String()
	}
	return "after-sb-2pri " + ps.After2p.String()
}

// howToResolve prints DRBD's manual procedure for each choice of
// victim, with what Negotiate would then decide.
func (r Report) howToResolve(pf func(string, ...any)) {
	pf("\nChoose the victim: the node whose changes since the split are thrown away.\n")
	for _, victimIsSelf := range []bool{false, true} {
		survivor, victim := r.Self, r.Peer
		self, peer := r.SelfSide, r.PeerSide
		if victimIsSelf {
			survivor, victim = r.Peer, r.Self
			self.DiscardMyData, self.Primary = true, false
			peer.DiscardMyData = false
		} else {
			peer.DiscardMyData, peer.Primary = true, false
			self.DiscardMyData = false
		}
		o := Negotiate(self, peer, r.Policies, r.ResolveConflicts)
		pf("\n  Keep %s's data (%s is the victim):\n", survivor, victim)
		pf("    on %s:  twinblock secondary %s\n", victim, r.Resource)
		pf("    on %s:  twinblock disconnect %s\n", victim, r.Resource)
		pf("    on %s:  twinblock connect --discard-my-data %s\n", victim, r.Resource)
		pf("    on %s:  twinblock connect %s\n", survivor, r.Resource)
		switch {
		case o.Refuse != "":
			pf("    -> still refused: %s\n", o.Refuse)
		case o.Decision.Full():
			pf("    -> %s becomes SyncTarget of a full resync from %s (the generations share no bitmap base)\n", victim, survivor)
		default:
			union := r.SelfSide.Changed + r.PeerSide.Changed
			pf("    -> %s becomes SyncTarget of %s, bitmap-based: the blocks either node changed since the split,\n", victim, survivor)
			pf("       at most %s (%s here + %s on %s, %s)\n", r.blocks(union), r.blocks(r.SelfSide.Changed),
				r.blocks(r.PeerSide.Changed), r.Peer, bytesText(int64(union)*r.BlockSize))
		}
	}
	pf("\n  With net { backup-discarded yes; } the victim first saves the blocks it is about to lose\n")
	pf("  (see the admin guide, \"Undo a discard\").\n")
	pf("  Automatic resolution: the after-sb-0pri/1pri/2pri policies in the net section.\n")
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
