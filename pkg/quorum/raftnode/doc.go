// Package raftnode runs pkg/quorum's replicated state on
// hashicorp/raft: one Node per member of a quorum group (the two data
// nodes and the diskless witness, all voters), with a durable log and
// stable store (raft-boltdb/v2 over go.etcd.io/bbolt: one fsync'd file,
// crash-safe by bbolt's copy-on-write pages, and HashiCorp's own default
// for Consul and Nomad) and file snapshots.
//
// Invariants:
//
//   - a command is decided only by a leader that has run raft's Barrier
//     in its current term, so it sees every entry an earlier leader
//     committed (Submit);
//   - every command but a report is a compare-and-set on the epoch
//     (pkg/quorum), so Submit's retry after ErrLeadershipLost applies
//     it at most once, and quorum.Granted tells whether the first try
//     took effect;
//   - Quorate is false on a node that can no longer reach a majority
//     within a bound: the leader steps down within LeaderLeaseTimeout of
//     losing its majority (raft's lease check), and a follower counts
//     itself quorate only while it heard from a leader within
//     Timing.Quorate;
//   - a promotion replaces a Primary (quorum.Command.Takeover) only if
//     the leader has been out of contact with it for longer than that
//     bound plus a heartbeat (gone), so the old Primary has stopped
//     serving before the new one starts. Write safety does not rest on
//     it: the epoch fence and the fence-peer commit do.
//
// pkg/daemon runs one Node per quorum resource (the witness too), and
// pkg/node asks it for promotions, fence-peer and quorum.
package raftnode
