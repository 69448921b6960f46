package splitbrain

import (
	"fmt"

	"github.com/twinblock/twinblock/pkg/genid"
)

// Side is what the comparison needs to know about one node.
type Side struct {
	GI             genid.GI
	CrashedPrimary bool // MDF_CRASHED_PRIMARY: it crashed while Primary
	Primary        bool // it is Primary now

	// What Negotiate needs beyond Compare:

	Inconsistent  bool   // its disk is Inconsistent
	Changed       uint64 // blocks set in its bitmap when the connection came up
	DiscardMyData bool   // connect --discard-my-data
	InUse         bool   // a Primary whose device is open: it cannot demote
}

// Decision is drbd_uuid_compare's result, from the point of view of self.
type Decision int

// The decisions, with DRBD's numbers.
const (
	Unrelated         Decision = -1000 // no common history
	SplitBrainDrop    Decision = -100  // diverged; no automatic recovery possible
	TargetFull        Decision = -2    // self is sync target of a full sync
	TargetBitmap      Decision = -1    // self is sync target, bitmap-based
	NoSync            Decision = 0
	SourceBitmap      Decision = 1   // self is sync source, bitmap-based
	SourceFull        Decision = 2   // self is sync source of a full sync
	SplitBrainAutoRec Decision = 100 // diverged; after-sb policies may resolve it
)

// String names the decision as twinblock's logs do.
func (d Decision) String() string {
	switch d {
	case Unrelated:
		return "unrelated-data"
	case SplitBrainDrop:
		return "split-brain-disconnect"
	case TargetFull:
		return "target-set-bitmap"
	case TargetBitmap:
		return "target-use-bitmap"
	case NoSync:
		return "no-sync"
	case SourceBitmap:
		return "source-use-bitmap"
	case SourceFull:
		return "source-set-bitmap"
	case SplitBrainAutoRec:
		return "split-brain-auto-recover"
	}
	return fmt.Sprintf("decision(%d)", int(d))
}

// SplitBrain reports the two split-brain results.
func (d Decision) SplitBrain() bool { return d == SplitBrainDrop || d == SplitBrainAutoRec }

// Resync reports a resync in either direction.
func (d Decision) Resync() bool { return d >= TargetFull && d <= SourceFull && d != NoSync }

// Full reports a full resync.
func (d Decision) Full() bool { return d == TargetFull || d == SourceFull }

// Compare is drbd_uuid_compare: it returns the decision and the number
// of the rule that made it (DRBD's numbering, for the log line
// "uuid_compare()=D by rule R"). resolveConflicts breaks the tie when
// both crashed as Primary with equal current UUIDs: the side that has it
// becomes the source (DRBD: the node with RESOLVE_CONFLICTS set, decided
// by comparing node names).
//
// Compare is antisymmetric where DRBD's is: Compare(a, b) == -Compare(b, a)
// for every result but Unrelated, SplitBrainDrop and SplitBrainAutoRec,
// which both sides see alike (property-tested).
func Compare(self, peer Side, resolveConflicts bool) (Decision, int) {
	s, p := self.GI, peer.GI
	const mask = ^genid.UUIDPrimaryBit
	sc, pc := s[genid.Current]&mask, p[genid.Current]&mask

	if sc == genid.UUIDJustCreated && pc == genid.UUIDJustCreated {
		return NoSync, 10
	}
	if sc == genid.UUIDJustCreated || sc == 0 {
		return TargetFull, 20
	}
	if pc == genid.UUIDJustCreated || pc == 0 {
		return SourceFull, 30
	}
	if sc == pc {
		sb, pb := s[genid.Bitmap]&mask, p[genid.Bitmap]&mask
		if pb == 0 && sb != 0 {
			// This node was sync source and still carries the bitmap
			// UUID of that resync: the target finished (it adopted
			// our current UUID) but we missed the end.
			if sb == p[genid.HistoryStart]&mask && s[genid.HistoryStart]&mask == p[genid.HistoryEnd]&mask {
				return SourceBitmap, 34 // Correct rotates our tuple
			}
			return SourceBitmap, 36
		}
		if sb == 0 && pb != 0 {
			if pb == s[genid.HistoryStart]&mask && p[genid.HistoryStart]&mask == s[genid.HistoryEnd]&mask {
				return TargetBitmap, 35 // Correct rotates the peer's tuple
			}
			return TargetBitmap, 37
		}
		if !self.CrashedPrimary && !peer.CrashedPrimary {
			if self.Changed == 0 && peer.Changed == 0 {
				return NoSync, 40
			}
			// twinblock's rule 42: the same generation, but a bitmap
			// marks blocks the peer may lack (a node that lost the link
			// after it demoted marks its writes the peer never covered
			// with a BarrierAck, without a new generation). DRBD
			// connects in sync here, with the marks standing beside
			// UpToDate/UpToDate; twinblock resyncs them, from the
			// Primary, else from the side that marked.
			switch {
			case self.Primary != peer.Primary:
				if self.Primary {
					return SourceBitmap, 42
				}
				return TargetBitmap, 42
			case (self.Changed > 0) != (peer.Changed > 0):
				if self.Changed > 0 {
					return SourceBitmap, 42
				}
				return TargetBitmap, 42
			case resolveConflicts:
				return SourceBitmap, 42
			default:
				return TargetBitmap, 42
			}
		}
		// One of them crashed as Primary: its activity log's extents
		// may hold writes the other never saw (rule 41 onwards).
		switch {
		case self.Primary && peer.Primary:
			return SplitBrainDrop, 41
		case self.Primary:
			return SourceBitmap, 41
		case peer.Primary:
			return TargetBitmap, 41
		case self.CrashedPrimary && peer.CrashedPrimary:
			if resolveConflicts {
				return SourceBitmap, 40
			}
			return TargetBitmap, 40
		case self.CrashedPrimary:
			return SourceBitmap, 40
		default:
			return TargetBitmap, 40
		}
	}
	if pb := p[genid.Bitmap] & mask; pb != 0 && sc == pb {
		return TargetBitmap, 50
	}
	if ph := p[genid.HistoryStart] & mask; ph != 0 && sc == ph && ph+genid.UUIDNewBMOffset == p[genid.Bitmap]&mask {
		// The peer started a resync as source (its bitmap UUID is the
		// rotated one) but our node never got the sync UUID: undo the
		// peer's rotation (Correct) and resync from its bitmap.
		return TargetBitmap, 51
	}
	for _, h := range p[genid.HistoryStart:] {
		if h&mask != 0 && sc == h&mask {
			return TargetFull, 60
		}
	}
	if sb := s[genid.Bitmap] & mask; sb != 0 && sb == pc {
		return SourceBitmap, 70
	}
	if sh := s[genid.HistoryStart] & mask; sh != 0 && sh == pc && sh+genid.UUIDNewBMOffset == s[genid.Bitmap]&mask {
		return SourceBitmap, 71 // Correct undoes our own rotation
	}
	for _, h := range s[genid.HistoryStart:] {
		if h&mask != 0 && pc == h&mask {
			return SourceFull, 80
		}
	}
	if sb, pb := s[genid.Bitmap]&mask, p[genid.Bitmap]&mask; sb != 0 && sb == pb {
		return SplitBrainAutoRec, 90
	}
	for _, a := range s[genid.HistoryStart:] {
		for _, b := range p[genid.HistoryStart:] {
			if a&mask != 0 && a&mask == b&mask {
				return SplitBrainDrop, 100
			}
		}
	}
	return Unrelated, 1000
}

// Correct applies the repairs DRBD makes to the tuples when a rule found
// an interrupted resync start or end (drbd_uuid_compare's "corrected
// myself" and "corrected peer" cases), and returns them:
//   - 34: self was sync source and missed the end: its bitmap UUID moves
//     into the history (as at a resync end);
//   - 35: the mirror, applied to the peer's tuple;
//   - 51: the peer's rotation at resync start never reached self (the
//     sync UUID was lost): the peer's bitmap UUID goes back to its
//     history start, and the history shifts back;
//   - 71: the mirror, applied to self's tuple.
//
// Other rules return both tuples unchanged. Only self's tuple is this
// node's to persist; the peer's is the view this node keeps of it.
func Correct(rule int, self, peer genid.GI) (genid.GI, genid.GI) {
	switch rule {
	case 34:
		self.FinishResyncSource()
	case 35:
		peer.FinishResyncSource()
	case 51:
		peer = undoStart(peer)
	case 71:
		self = undoStart(self)
	}
	return self, peer
}

// undoStart reverses StartResyncSource's rotation.
func undoStart(g genid.GI) genid.GI {
	g[genid.Bitmap] = g[genid.HistoryStart]
	g[genid.HistoryStart] = g[genid.HistoryEnd]
	return g
}
