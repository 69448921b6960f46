// Package splitbrain decides, when two nodes connect, whether their data
// is in sync, which one must resync from the other, or whether they
// diverged (split brain) or never shared data, and how a split brain is
// resolved. It is pure: no I/O, no clock.
//
//   - Compare is DRBD 8.4's drbd_uuid_compare over the two
//     generation-identifier tuples, the crashed-primary flags and the
//     roles, with every rule (10–100, the 34–37 and 51/71 repairs of an
//     interrupted resync start or end), and Correct applies those repairs.
//   - Policies.Recover is drbd_asb_recover_0p/1p/2p: the after-sb-0pri,
//     after-sb-1pri and after-sb-2pri policies.
//   - Negotiate is drbd_sync_handshake: the comparison, the disk states,
//     the policies, --discard-my-data, rr-conflict, and the handlers to
//     run, in DRBD's order.
//   - Explain renders a handshake for people: both tuples, the rule, what
//     happens, and which commands resolve a split brain.
//
// Invariant (property-tested): the two nodes, each running Negotiate
// with the sides swapped, either both end the connection or agree on
// the direction of the resync.
//
// Reference: drbd-facts.md §1.3.
package splitbrain
