// Package nbd is twinblock's Network Block Device server: the front end that
// the kernel's nbd-client, qemu, libnbd (nbdinfo, nbdcopy, nbdfuse) and fio
// talk to. It implements the protocol of NetworkBlockDevice/nbd doc/proto.md
// itself, taking only wire constants from go-nbd, because go-nbd's server is
// serial and has no FLUSH, FUA, TRIM, WRITE_ZEROES or per-request errors.
//
// Handshake: fixed newstyle with NBD_FLAG_NO_ZEROES; NBD_OPT_EXPORT_NAME,
// NBD_OPT_INFO and NBD_OPT_GO (export, name, description and block-size
// information), NBD_OPT_LIST, NBD_OPT_ABORT and NBD_OPT_STRUCTURED_REPLY.
// Every other option gets NBD_REP_ERR_UNSUP after its data has been read,
// so the stream stays in sync.
//
// Transmission: READ, WRITE (with FUA), FLUSH, TRIM, WRITE_ZEROES (with
// NO_HOLE) and DISC. Transmission flags: HAS_FLAGS, SEND_FLUSH,
// CAN_MULTI_CONN and, for writable exports, SEND_FUA, SEND_TRIM and
// SEND_WRITE_ZEROES; READ_ONLY for read-only exports; SEND_DF with
// structured replies.
//
// Invariants (each has a test in server_test.go):
//   - A reply is sent only after the device operation returned. A FLUSH
//     reply follows Device.Flush, which covers every write completed before
//     it on any connection; this is why CAN_MULTI_CONN is advertised.
//   - Two requests of one connection that overlap, where at least one of
//     them mutates the export, execute in the order they arrived. Others
//     run concurrently and their replies may leave out of order.
//   - Memory and goroutines per connection are bounded by
//     Options.MaxInflight and Options.MaxInflightBytes: when full, the
//     server stops reading the socket. Requests run on the reader or on
//     worker goroutines that, once done, wait for the next request; at
//     most MaxInflight wait, and all end with the connection.
//   - A request that is malformed but framed (bad range, alignment, flags,
//     size, unknown command, write to a read-only export) gets an error
//     reply and the connection goes on; a WRITE's payload is consumed even
//     when refused. Only a bad magic, which loses the framing, closes the
//     connection. No input panics the server.
//   - At NBD_CMD_DISC, at shutdown and when the client goes away, the
//     requests already read complete, and an export that was written is
//     flushed before the connection closes.
package nbd
