// Package harness runs twinblock as real processes on loopback: two
// `twinblock daemon` nodes on 127.0.0.1 and 127.0.0.2 with their disks,
// configs, control sockets, status files and logs (cluster.go), the
// verbs run as each node, waits for a state, the status file parsed,
// SIGKILL, SIGSTOP and SIGTERM; a TCP proxy on the peer link that cuts,
// resets, black-holes and delays it (proxy.go); and disks that start
// failing with EIO on command (faultydisk.go, nbdkit's error filter
// mounted with nbdfuse).
//
// It is the one harness of the integration tests (integration/), the
// real-process torture suite (integration/torture) and `make demo`
// (pkg/cli), so that the demo shows what the tests check.
package harness
