// Package netsim is an in-memory network for tests: listeners and
// connections between named hosts ("127.0.0.1:7789"), with faults on
// command (hashicorp/raft's InmemTransport is the model). Cut resets
// every connection between two hosts, Partition black-holes them (data
// written is dropped, new dials fail) until Heal, and SetDelay slows
// every write. Connections honour deadlines, Close and CloseWrite, so
// the peer link's framing runs over it unchanged.
//
// It is safe for concurrent use. Writes never block: each direction is
// an unbounded buffer, so a test's memory bounds what is in flight.
package netsim
