package splitbrain

import (
	"fmt"

	"github.com/twinblock/twinblock/pkg/genid"
)

// Handler names that Negotiate asks to run.
const (
	HandlerInitialSplitBrain = "initial-split-brain"
	HandlerSplitBrain        = "split-brain"
	HandlerPriLostAfterSB    = "pri-lost-after-sb"
	HandlerPriLost           = "pri-lost"
)

// Handlers lists every name Negotiate may put in Outcome.Handlers, no
// more (TestNegotiate checks both ways). The node runs the ones the
// handshake asks for; its keyword test counts these as read.
var Handlers = []string{HandlerInitialSplitBrain, HandlerSplitBrain, HandlerPriLostAfterSB, HandlerPriLost}

// Outcome is the sync handshake's result for one node.
type Outcome struct {
	Compare Decision // drbd_uuid_compare's result
	Rule    int      // the rule that made it
	// Decision is the final one: NoSync, a resync direction, or
	// Unrelated / SplitBrainDrop when the connection must end.
	Decision Decision
	// SplitBrain: the data diverged (|uuid_compare| was 100 after the
	// disk states were applied), resolved or not.
	SplitBrain bool
	// Resolution says how a split brain was resolved: the policy and its
	// reason, or --discard-my-data. Empty if it was not.
	Resolution string
	// Demote: this node, a Primary, gives up the role before it becomes
	// the sync target (call-pri-lost-after-sb).
	Demote bool
	// PeerDemotes: the same, for the peer (its Negotiate says Demote).
	PeerDemotes bool
	// Refuse is why the connection must end (StandAlone), the line to
	// log; empty if it goes on.
	Refuse string
	// Handlers to run, in order.
	Handlers []string
	// Log holds DRBD's lines for the handshake.
	Log []string
}

// Negotiate is drbd_sync_handshake for one node: the generation
// identifiers compared (Compare), then, in DRBD's order,
//
//  1. the disk states override them (an Inconsistent side against a
//     consistent one is the target);
//  2. a split brain (|result| = 100) runs the initial-split-brain
//     handler;
//  3. a split brain with a possible automatic recovery (rule 90; any
//     with always-asbp) is given to the after-sb policy for the number
//     of Primaries; if the generation identifiers were ambiguous the
//     resync is a full one;
//  4. one still unresolved is resolved by --discard-my-data when
//     exactly one side has it;
//  5. one still unresolved ends the connection and runs the
//     split-brain handler;
//  6. a Primary with consistent data that would become sync target is
//     subject to rr-conflict.
//
// Both nodes run Negotiate with the sides swapped and resolveConflicts
// inverted; for the same configuration they reach opposite directions
// or both end the connection (property-tested).
//
// Two deviations from DRBD, both toward safety: a split brain that rule
// 100 found (the bitmaps do not start from a common generation) is
// resolved by --discard-my-data with a full resync, not a bitmap-based
// one; and two Primaries are never connected (allow-two-primaries is
// not supported): unless a policy demotes one, the connection ends.
func Negotiate(self, peer Side, ps Policies, resolveConflicts bool) Outcome {
	var o Outcome
	logf := func(format string, args ...any) { o.Log = append(o.Log, fmt.Sprintf(format, args...)) }
	d, rule := Compare(self, peer, resolveConflicts)
	o.Compare, o.Rule = d, rule
	logf("drbd_sync_handshake:")
	logf("self %s bits:%d flags:%d", tuple(self.GI), self.Changed, sideFlags(self))
	logf("peer %s bits:%d flags:%d", tuple(peer.GI), peer.Changed, sideFlags(peer))
	logf("uuid_compare()=%d by rule %d (%s)", int(d), rule, d)
	if d == Unrelated {
		logf("Unrelated data, aborting!")
		o.Decision = Unrelated
		o.Refuse = "unrelated data: the two disks share no data generation (different metadata); aborting"
		return o
	}

	// 1. Disk states.
	switch {
	case self.Inconsistent && peer.Inconsistent:
		d = NoSync // neither has data to give
	case self.Inconsistent || peer.Inconsistent:
		full := d.SplitBrain() || d.Full()
		d = SourceBitmap
		if self.Inconsistent {
			d = TargetBitmap
		}
		if full {
			d *= 2
		}
		logf("Becoming sync %s due to disk states.", map[bool]string{true: "target", false: "source"}[d < 0])
	}

	// 2.
	if d.SplitBrain() {
		o.SplitBrain = true
		o.Handlers = append(o.Handlers, HandlerInitialSplitBrain)
	}

	// 3. The after-sb policies.
	if d == SplitBrainAutoRec || (d == SplitBrainDrop && ps.AlwaysASBP) {
		forced := d == SplitBrainDrop
		v := ps.Recover(self, peer, resolveConflicts)
		if v.Demote && self.InUse {
			logf("%s: this node shall give up the Primary role, but its device is in use", v.Why)
			o.Handlers = append(o.Handlers, HandlerPriLostAfterSB)
			v = unresolved(v.Why + "; the Primary could not be demoted")
		}
		o.PeerDemotes = ps.Mirror().Recover(peer, self, !resolveConflicts).Demote
		d = v.Decision
		if d != SplitBrainDrop {
			o.Demote = v.Demote
			if o.Demote {
				logf("Successfully gave up primary role.")
				self.Primary = false
			}
			o.Resolution = v.Why
			logf("Split-Brain detected, %d primaries, automatically solved. Sync from %s node (%s)",
				primaries(self, peer)+boolInt(o.Demote), fromNode(d), v.Why)
			if forced {
				logf("Doing a full sync, since UUIDs where ambiguous.")
				d *= 2
			}
		} else {
			logf("Split-Brain not resolved by %s", v.Why)
		}
	}

	// 4. --discard-my-data.
	if d == SplitBrainDrop {
		switch {
		case self.DiscardMyData && !peer.DiscardMyData:
			d = TargetBitmap
			o.Resolution = "--discard-my-data on this node"
		case !self.DiscardMyData && peer.DiscardMyData:
			d = SourceBitmap
			o.Resolution = "--discard-my-data on the peer"
		}
		if d != SplitBrainDrop {
			if o.Rule == 100 {
				d *= 2 // the bitmaps share no base generation
			}
			logf("Split-Brain detected, manually solved. Sync from %s node", fromNode(d))
		}
	}

	// 5.
	if d == SplitBrainDrop {
		if self.DiscardMyData && peer.DiscardMyData {
			logf("both nodes connected with --discard-my-data: only the victim may")
		}
		o.Handlers = append(o.Handlers, HandlerSplitBrain)
		o.Decision = SplitBrainDrop
		o.Refuse = "Split-Brain detected but unresolved, dropping connection!"
		return o
	}
	o.Decision = d

	// 6. The direction against the roles.
	switch {
	case d > 0 && self.Inconsistent:
		o.Refuse = "I shall become SyncSource, but I am inconsistent!"
	case d < 0 && self.Primary && !self.Inconsistent:
		switch ps.RRConflict {
		case RRCallPriLost:
			o.Handlers = append(o.Handlers, HandlerPriLost)
			o.Refuse = "I shall become SyncTarget, but I am primary! (rr-conflict call-pri-lost)"
		case RRViolently:
			logf("Becoming SyncTarget, violating the stable-data assumption (rr-conflict violently)")
		default:
			o.Refuse = "I shall become SyncTarget, but I am primary! (rr-conflict disconnect)"
		}
	case d > 0 && peer.Primary && !peer.Inconsistent && !o.PeerDemotes && ps.RRConflict != RRViolently:
		// The peer refuses (step 6 there); say why here too.
		o.Refuse = fmt.Sprintf("the peer shall become SyncTarget, but it is primary (rr-conflict %s)", ps.RRConflict)
	}
	if o.Refuse == "" && self.Primary && peer.Primary && !o.PeerDemotes {
		o.Refuse = "both nodes are Primary (twinblock allows one Primary at a time)"
	}
	return o
}

func fromNode(d Decision) string {
	if d < 0 {
		return "peer"
	}
	return "this"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// tuple prints a generation-identifier tuple as DRBD's drbd_uuid_dump:
// current:bitmap:history-start:history-end in hex.
func tuple(g genid.GI) string {
	return fmt.Sprintf("%016X:%016X:%016X:%016X", g[genid.Current], g[genid.Bitmap], g[genid.HistoryStart], g[genid.HistoryEnd])
}

// sideFlags are DRBD's handshake uuid flags: 1 discard-my-data,
// 2 crashed primary, 4 inconsistent.
func sideFlags(s Side) int {
	f := 0
	if s.DiscardMyData {
		f |= 1
	}
	if s.CrashedPrimary {
		f |= 2
	}
	if s.Inconsistent {
		f |= 4
	}
	return f
}
