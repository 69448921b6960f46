// Package fsm is the state machine of one resource on one node: its role
// (Primary, Secondary), its connection to the peer (StandAlone,
// WFConnection, Connected, …) and its disk (Diskless, Inconsistent,
// UpToDate, …), with DRBD 8.4's names and rules, plus the generation
// identifiers it persists.
//
// It is a pure core in the shape of etcd-io/raft's RawNode: no I/O, no
// clock, no goroutines. The driver (pkg/node) feeds it events with Step
// (administrator commands, connections made and lost, disk errors) and
// the passing of time with Tick (one tick = 100 ms, DRBD's unit for
// ping-int, ping-timeout, timeout and connect-int), and acts on what
// Ready returns, in the order Ready's doc comment states, before calling
// Advance. docs/state-machine.md draws the states and transitions.
//
// The two-node stories in testdata/*.txt (run by TestScenarios; rewrite
// the expected traces with -update) are the executable specification.
package fsm
