// Package quorum is the replicated state that decides who may be Primary
// when a resource runs with a quorum (options { quorum majority; }): the
// two data nodes and a diskless witness agree on it through
// hashicorp/raft (pkg/quorum/raftnode), and this package is the pure
// core that every member applies, in log order, to the same result. It
// has no I/O, no clock and no goroutines, so the rules are tested alone.
//
// Per resource it holds the epoch, the Primary, and for each data node
// its last reported disk state and current generation identifier, and
// whether it is Outdated. Every command but Report is a compare-and-set
// on the epoch the issuer saw (Command.Expect): a retry after raft's
// ErrLeadershipLost, whose first attempt may or may not have committed,
// is refused by the CAS if the first one did, and changes nothing.
//
// Invariants (State.Check, and TestRandomCommandsKeepInvariants):
//
//   - the epoch of a resource never decreases; every granted promotion
//     raises it by one, and nothing else does;
//   - the Primary is a data node of the resource, never the witness;
//   - a node is granted a promotion only if it is not Outdated and
//     reported an UpToDate disk, unless the promotion is forced;
//   - OutdatePeer (twinblock's fence-peer) is granted only to the
//     Primary of the current epoch, and after it the peer cannot be
//     promoted at that epoch: the Primary that acknowledges writes alone
//     and the peer that would take over exclude each other by the CAS,
//     with no clock involved.
//
// Raft leadership is not Primaryship: the witness may lead the raft
// group, but it is never named Primary.
package quorum
