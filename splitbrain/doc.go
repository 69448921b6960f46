// Package splitbrain decides, when two nodes connect, whether their data
// is in sync, which one must resync from the other, or whether they
// diverged (split brain) or never shared data. It is DRBD 8.4's
// drbd_uuid_compare as a pure function of the two generation-identifier
// tuples, the crashed-primary flags and the roles (reference:
// drbd-facts.md §1.3). The after-sb recovery policies arrive with the
// split-brain issue; today a split brain always ends the connection.
//
// The rules that repair a lost "resync finished" or a lost sync UUID
// (DRBD's r34–r37, r51 and r71) are not implemented: such a pair falls
// through to the later rules, which at worst ask for a full resync or
// report split brain, never a silent no-sync.
package splitbrain
