// Package torture is the real-process torture suite (`make torture-real`,
// a short run in `make test`): two `twinblock daemon` processes on
// loopback, a ledger writer over NBD, and a nemesis that kills, stops,
// cuts, delays, black-holes, resets and fails disks, one fault per
// episode, with a heal and a check after each.
//
// The pieces, one per file:
//
//   - block.go: the self-describing 4 KiB block (magic, block number,
//     write id, run nonce, filler, CRC-32C), so that any block read back
//     names the write it came from, or shows that it is torn or foreign.
//   - ledger.go: the model. Every request is registered with a sequence
//     number before it is sent and another when its reply arrives; a
//     block may read back only a write that no acknowledged write issued
//     after its completion superseded (an unacknowledged one is "maybe
//     written"). A check at a quiescent point establishes what each block
//     holds, so uncertainty never accumulates.
//   - writer.go: the ledger writer, several workers pipelining every NBD
//     request type and size (4 KiB to 32 MiB writes, FUA, FLUSH, TRIM,
//     WRITE_ZEROES, reads checked as they complete) on one connection
//     to whichever node serves, reconnecting on its own; it measures the
//     longest time without service.
//   - nemesis.go: the fault kinds and the episode that drives each.
//   - suite.go: setup, the episode loop, the checks and the report.
//
// The daemons, their configs, status files and verbs, the peer link's
// TCP proxy (cut, reset, black hole, delay) and the disks that start
// failing with EIO on command are internal/harness's, which the other
// integration tests and `make demo` use too.
//
// The test (torture_test.go, TestRealTorture) is skipped unless one of its
// -torture.* flags or TWINBLOCK_TORTURE_REAL=1 asks for it; docs/torture.md
// describes the rules it checks and what it found.
package torture
