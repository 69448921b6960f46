// Package node runs one resource on one node: it owns the state machine
// (pkg/fsm) in a single goroutine, carries out what its Ready says (the
// metadata updates, the disk, the peer link, the NBD export), and feeds
// it what happens (commands, connections, disk errors, ticks).
//
// The data path is device: the nbd.Device a Primary exports. It writes
// to the local disk and sends to the peer in parallel and acknowledges a
// write only as its invariant (see device) allows. It reads the IOMode
// the state machine published and never calls into the state machine;
// mode changes wait for the requests in flight.
package node
