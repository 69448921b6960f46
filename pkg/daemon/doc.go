// Package daemon is `twinblock daemon`: it hosts every resource of the
// configuration that has an `on` section for this node (pkg/node), serves
// the control socket the admin verbs talk to, and keeps the status file
// (DRBD 8.4's /proc/drbd format, pkg/status) current.
//
// The control socket is a unix socket of mode 0600; one request per
// connection, one JSON object each way (Request, Response). A second
// daemon on the same socket is refused: the daemon holds an exclusive
// flock on PATH.lock for its lifetime, and only the holder removes a
// stale socket file. The socket is served until the daemon closes: a
// failing Accept (EMFILE, ECONNABORTED) is logged and retried with a
// backoff from 5 ms doubling to 1 s.
//
// The status file is rewritten atomically (temporary file, fsync,
// rename) on every state change and at least once a second.
//
// On SIGTERM (context cancellation) every resource goes down cleanly:
// the NBD export stops after the requests in flight, the peer hears a
// Goodbye, the metadata is closed clean (activity log empty).
package daemon
