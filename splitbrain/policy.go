package splitbrain

import (
	"fmt"
	"strings"

	"github.com/twinblock/twinblock/pkg/genid"
)

// Policy is a value of after-sb-0pri, after-sb-1pri or after-sb-2pri:
// how a split brain is resolved without an operator (DRBD's enum
// drbd_after_sb_p). Which values each keyword allows is checked by
// ParsePolicy; Recover never sees a value its keyword forbids.
type Policy int

// The policies.
const (
	Disconnect            Policy = iota // no automatic resolution (the default)
	DiscardYoungerPrimary               // the node that became Primary after the split loses
	DiscardOlderPrimary                 // the node that was Primary before the split loses
	DiscardZeroChanges                  // the node that changed nothing loses; both changed: disconnect
	DiscardLeastChanges                 // the node with fewer changed blocks loses
	DiscardLocal                        // discard-node-NAME, NAME being this node
	DiscardRemote                       // discard-node-NAME, NAME being the peer
	Consensus                           // 1pri: the 0pri verdict, if it discards the Secondary
	DiscardSecondary                    // 1pri: the Secondary loses
	CallPriLost                         // call-pri-lost-after-sb: the 0pri verdict; a losing Primary demotes or runs pri-lost-after-sb
	ViolentlyAs0p                       // the 0pri verdict, even against a Primary
)

var policyNames = map[Policy]string{
	Disconnect: "disconnect", DiscardYoungerPrimary: "discard-younger-primary",
	DiscardOlderPrimary: "discard-older-primary", DiscardZeroChanges: "discard-zero-changes",
	DiscardLeastChanges: "discard-least-changes", DiscardLocal: "discard-local",
	DiscardRemote: "discard-remote", Consensus: "consensus", DiscardSecondary: "discard-secondary",
	CallPriLost: "call-pri-lost-after-sb", ViolentlyAs0p: "violently-as0p",
}

func (p Policy) String() string {
	if s, ok := policyNames[p]; ok {
		return s
	}
	return fmt.Sprintf("policy(%d)", int(p))
}

// allowed lists the values each keyword takes (drbdsetup's).
var allowed = map[string][]Policy{
	"after-sb-0pri": {Disconnect, DiscardYoungerPrimary, DiscardOlderPrimary, DiscardZeroChanges,
		DiscardLeastChanges, DiscardLocal, DiscardRemote},
	"after-sb-1pri": {Disconnect, Consensus, ViolentlyAs0p, DiscardSecondary, CallPriLost},
	"after-sb-2pri": {Disconnect, ViolentlyAs0p, CallPriLost},
}

// ParsePolicy reads the value of keyword (after-sb-0pri, -1pri or
// -2pri) as this node (self) sees it: discard-node-NAME becomes
// DiscardLocal on the node called NAME and DiscardRemote on its peer,
// as drbdadm translates it. An empty value is the default, disconnect.
func ParsePolicy(keyword, value, self, peer string) (Policy, error) {
	values, ok := allowed[keyword]
	if !ok {
		return 0, fmt.Errorf("splitbrain: %s is not an after-sb keyword", keyword)
	}
	if value == "" {
		return Disconnect, nil
	}
	if name, ok := strings.CutPrefix(value, "discard-node-"); ok && keyword == "after-sb-0pri" {
		switch name {
		case self:
			return DiscardLocal, nil
		case peer:
			return DiscardRemote, nil
		}
		return 0, fmt.Errorf("splitbrain: %s %s: %q is neither %s nor %s", keyword, value, name, self, peer)
	}
	for _, p := range values {
		if p.String() == value && p != DiscardLocal && p != DiscardRemote {
			return p, nil
		}
	}
	return 0, fmt.Errorf("splitbrain: %s %s: not a value of %s", keyword, value, keyword)
}

// RRConflict is rr-conflict: what a Primary with consistent data does
// when the handshake makes it the sync target.
type RRConflict int

// The rr-conflict values.
const (
	RRDisconnect  RRConflict = iota // refuse the connection (the default)
	RRCallPriLost                   // run the pri-lost handler, then refuse
	RRViolently                     // become sync target anyway
)

func (r RRConflict) String() string {
	switch r {
	case RRDisconnect:
		return "disconnect"
	case RRCallPriLost:
		return "call-pri-lost"
	case RRViolently:
		return "violently"
	}
	return fmt.Sprintf("rr-conflict(%d)", int(r))
}

// ParseRRConflict reads rr-conflict's value ("" is the default).
func ParseRRConflict(value string) (RRConflict, error) {
	switch value {
	case "", "disconnect":
		return RRDisconnect, nil
	case "call-pri-lost":
		return RRCallPriLost, nil
	case "violently":
		return RRViolently, nil
	}
	return 0, fmt.Errorf("splitbrain: rr-conflict %s: not disconnect, call-pri-lost or violently", value)
}

// Policies is a resource's split-brain configuration (net section).
type Policies struct {
	After0p, After1p, After2p Policy
	// AlwaysASBP: apply the policies also when the generation
	// identifiers are ambiguous (rule 100, or 41), with a full resync.
	AlwaysASBP bool
	RRConflict RRConflict
}

// Mirror returns the policies as the peer sees them: discard-node-NAME
// is DiscardLocal on one node and DiscardRemote on the other.
func (ps Policies) Mirror() Policies {
	switch ps.After0p {
	case DiscardLocal:
		ps.After0p = DiscardRemote
	case DiscardRemote:
		ps.After0p = DiscardLocal
	}
	return ps
}

// Encode packs the policies for the wire (replication.State.AfterSB):
// bits 0–3, 4–7, 8–11 the three after-sb values, 12–13 rr-conflict, 14
// always-asbp, 15 always set (0 means "none sent").
func (ps Policies) Encode() uint16 {
	v := uint16(ps.After0p) | uint16(ps.After1p)<<4 | uint16(ps.After2p)<<8 | uint16(ps.RRConflict)<<12 | 1<<15
	if ps.AlwaysASBP {
		v |= 1 << 14
	}
	return v
}

// DecodePolicies reverses Encode; ok is false for 0 (none sent) or a
// value Encode cannot produce.
func DecodePolicies(v uint16) (ps Policies, ok bool) {
	if v&(1<<15) == 0 {
		return ps, false
	}
	ps = Policies{After0p: Policy(v & 15), After1p: Policy(v >> 4 & 15), After2p: Policy(v >> 8 & 15),
		RRConflict: RRConflict(v >> 12 & 3), AlwaysASBP: v&(1<<14) != 0}
	if ps.After0p > ViolentlyAs0p || ps.After1p > ViolentlyAs0p || ps.After2p > ViolentlyAs0p || ps.RRConflict > RRViolently {
		return Policies{}, false
	}
	return ps, true
}

// Incompatible compares this node's policies with the peer's (as the
// peer sent them) and names the first setting that differs, "" if they
// agree; DRBD refuses such a peer ("incompatible after-sb-0pri settings").
func (ps Policies) Incompatible(peer Policies) string {
	peer = peer.Mirror()
	switch {
	case ps.After0p != peer.After0p:
		return "after-sb-0pri"
	case ps.After1p != peer.After1p:
		return "after-sb-1pri"
	case ps.After2p != peer.After2p:
		return "after-sb-2pri"
	case ps.RRConflict != peer.RRConflict:
		return "rr-conflict"
	case ps.AlwaysASBP != peer.AlwaysASBP:
		return "always-asbp"
	}
	return ""
}

// Verdict is what an after-sb policy decided for this node.
type Verdict struct {
	// Decision is SourceBitmap or TargetBitmap when the policy resolved
	// the split brain, SplitBrainDrop when it did not.
	Decision Decision
	// Demote: call-pri-lost-after-sb chose this node, a Primary, as the
	// one whose changes are discarded: it must become Secondary first.
	// If it cannot (the device is in use), the pri-lost-after-sb handler
	// runs and the split brain stays unresolved.
	Demote bool
	// Why explains the verdict for the log and explain.
	Why string
}

// Recover applies the policy for the number of Primaries (DRBD's
// drbd_asb_recover_0p/1p/2p). self and peer are the two sides as in
// Compare, with Changed (bits set in each bitmap) filled in;
// resolveConflicts is the tie-break that the peer sees inverted.
//
// Recover is antisymmetric: when it resolves, the peer, calling it with
// the sides swapped and resolveConflicts inverted, gets the opposite
// decision (property-tested), so both nodes agree on the direction.
func (ps Policies) Recover(self, peer Side, resolveConflicts bool) Verdict {
	switch primaries(self, peer) {
	case 0:
		return recover0p(ps.After0p, self, peer, resolveConflicts, "after-sb-0pri")
	case 1:
		return ps.recover1p(self, peer, resolveConflicts)
	default:
		return ps.recover2p(self, peer, resolveConflicts)
	}
}

func primaries(self, peer Side) int {
	n := 0
	if self.Primary {
		n++
	}
	if peer.Primary {
		n++
	}
	return n
}

func unresolved(why string) Verdict { return Verdict{Decision: SplitBrainDrop, Why: why} }

// recover0p is drbd_asb_recover_0p: the verdict of p, as keyword's value.
func recover0p(p Policy, self, peer Side, resolveConflicts bool, keyword string) Verdict {
	name := keyword + " " + p.String()
	if p == DiscardLocal || p == DiscardRemote {
		name = keyword + " discard-node-" + map[Policy]string{DiscardLocal: "SELF", DiscardRemote: "PEER"}[p]
	}
	loses := func(selfLoses bool, why string) Verdict {
		if selfLoses {
			return Verdict{Decision: TargetBitmap, Why: name + ": " + why}
		}
		return Verdict{Decision: SourceBitmap, Why: name + ": " + why}
	}
	tie := func(why string) Verdict {
		// DRBD: the node holding RESOLVE_CONFLICTS is discarded.
		return loses(resolveConflicts, why+", tie broken by node name")
	}
	// Bit 0 of the bitmap UUID: the node was Primary when it started
	// the generation it diverged from, i.e. before the split.
	selfOld := self.GI[genid.Bitmap]&genid.UUIDPrimaryBit != 0
	peerOld := peer.GI[genid.Bitmap]&genid.UUIDPrimaryBit != 0
	switch p {
	case Disconnect:
		return unresolved(name)
	case DiscardLocal:
		return loses(true, "this node is named")
	case DiscardRemote:
		return loses(false, "the peer is named")
	case DiscardYoungerPrimary, DiscardOlderPrimary:
		if selfOld != peerOld {
			if p == DiscardYoungerPrimary {
				return loses(peerOld, "the younger Primary loses")
			}
			return loses(selfOld, "the older Primary loses")
		}
		name += " (no Primary before the split told apart; discard-least-changes)"
		return leastChanges(self, peer, tie, loses)
	case DiscardZeroChanges:
		switch {
		case self.Changed == 0 && peer.Changed == 0:
			return tie("neither node changed a block")
		case peer.Changed == 0:
			return loses(false, "the peer changed no block")
		case self.Changed == 0:
			return loses(true, "this node changed no block")
		}
		return unresolved(fmt.Sprintf("%s: both nodes changed blocks (%d here, %d on the peer)", name, self.Changed, peer.Changed))
	case DiscardLeastChanges:
		return leastChanges(self, peer, tie, loses)
	}
	// Not a 0pri value: Recover's callers pass only allowed ones.
	return unresolved(name + ": not a value of after-sb-0pri")
}

func leastChanges(self, peer Side, tie func(string) Verdict, loses func(bool, string) Verdict) Verdict {
	switch {
	case self.Changed < peer.Changed:
		return loses(true, fmt.Sprintf("fewer changed blocks here (%d < %d)", self.Changed, peer.Changed))
	case self.Changed > peer.Changed:
		return loses(false, fmt.Sprintf("fewer changed blocks on the peer (%d < %d)", peer.Changed, self.Changed))
	}
	return tie(fmt.Sprintf("both changed %d blocks", self.Changed))
}

// recover1p is drbd_asb_recover_1p.
func (ps Policies) recover1p(self, peer Side, rc bool) Verdict {
	name := "after-sb-1pri " + ps.After1p.String()
	v0 := func() Verdict {
		v := recover0p(ps.After0p, self, peer, rc, "after-sb-0pri")
		v.Why = name + ", by " + v.Why
		return v
	}
	switch ps.After1p {
	case Consensus:
		v := v0()
		if (v.Decision == TargetBitmap && !self.Primary) || (v.Decision == SourceBitmap && self.Primary) {
			return v
		}
		return unresolved(v.Why + "; no consensus: it would discard the Primary")
	case ViolentlyAs0p:
		return v0()
	case DiscardSecondary:
		if self.Primary {
			return Verdict{Decision: SourceBitmap, Why: name + ": the peer is Secondary"}
		}
		return Verdict{Decision: TargetBitmap, Why: name + ": this node is Secondary"}
	case CallPriLost:
		v := v0()
		v.Demote = v.Decision == TargetBitmap && self.Primary
		return v
	}
	return unresolved(name)
}

// recover2p is drbd_asb_recover_2p.
func (ps Policies) recover2p(self, peer Side, rc bool) Verdict {
	name := "after-sb-2pri " + ps.After2p.String()
	switch ps.After2p {
	case ViolentlyAs0p, CallPriLost:
		v := recover0p(ps.After0p, self, peer, rc, "after-sb-0pri")
		v.Why = name + ", by " + v.Why
		v.Demote = ps.After2p == CallPriLost && v.Decision == TargetBitmap
		return v
	}
	return unresolved(name)
}
