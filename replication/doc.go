// Package replication is the peer link of a resource: the codec of the
// peer protocol, the byte-level conversation between the two nodes
// (docs/wire-protocol.md has every message byte by byte), and the runtime
// of one connection on top of it.
//
// What exists:
//   - the messages, one Go type each (Hello, AuthChallenge, AuthResponse,
//     AuthResult, State, Data, Trim, WriteZeroes, Barrier, BarrierAck,
//     RecvAck, WriteAck, NegAck, ReadRequest, ReadReply, Bitmap,
//     SyncUUID, ResyncRequest, ResyncReply, ResyncAck, VerifyRequest,
//     VerifyReply, Ping, PingAck, Goodbye), all implementing Message;
//   - the framing: Append and AppendSplit encode a message into a reusable
//     buffer, a Decoder reads frames from a stream;
//   - DRBD's cram-hmac authentication: ChallengeResponse, VerifyResponse,
//     NewNonce;
//   - Handshake (handshake.go): Hello, cram-hmac and State both ways on a
//     net.Conn, with a Goodbye naming the reason on every refusal;
//   - Link, the running connection (link.go, link_send.go, link_recv.go):
//     Submit/Wait of replicated writes, trims, write-zeroes and flushes
//     under protocol A, B or C, ReadAt through the peer, states, pings,
//     Close; and the receive side (apply.go), which applies the peer's
//     writes and serves its reads on the local disk. Its sub-protocols
//     are parts of their own, one file each, under the Link's one mutex
//     (they share its send queue): transferLog (link_tl.go), readClient
//     (link_reads.go), syncClient (sync_client.go), syncServer
//     (sync_server.go);
//   - resync and online verify on a Link (resync.go): SendBitmap and
//     OnBitmap, SendSyncUUID and OnSyncUUID, Resync (the target pulls a
//     range, optionally with a checksum: csums-alg) with OnResyncAck on
//     the source, Verify (digests of 4 KiB blocks: verify-alg) with
//     OnVerifyMismatch on the peer; Digest, the checksums both use
//     (digest.go);
//   - payload compression (compress.go): s2 or zstd for resync replies,
//     and for Data with CompressReplication, each payload on its own,
//     raw when it does not shrink by an eighth; all-zero Data as its
//     length.
//
// Invariants of the codec (tested in wire_test.go and by FuzzDecode):
//   - Append and Decoder.Next apply the same validation (each message's
//     check), so every message one accepts the other accepts, and the
//     encoding is canonical: a decoded frame re-encodes to the same bytes.
//   - The decoder checks a frame's header (magic, CRC32C, length limit,
//     type, flags, the type's size bounds) before it reads a payload byte,
//     and never holds a payload buffer bigger than its frame limit; it
//     grows that buffer as bytes arrive, not as a header announces them.
//   - Every protocol violation wraps ErrProtocol; after an error a Decoder
//     returns it again forever.
//   - On the hot path (Append into a buffer with room, Next of Data and
//     the acks) nothing is allocated in steady state.
//
// Invariants of the connection (tested in handshake_test.go and
// link_test.go, the allocation one without -race):
//   - Nothing but Hello, authentication, State and Goodbye crosses before
//     authentication succeeded, and until then the decoder accepts frames
//     of MaxFixed bytes only.
//   - Every Request completes exactly once. One submitted before or
//     concurrently with Close, or with the connection breaking, completes
//     with an error wrapping ErrLinkClosed unless its ack (under protocol
//     A: its write to the socket) came first; Submit after the end fails.
//     A completed write that no BarrierAck covered when the link ends, and
//     under A or B a write the peer NegAcked after it completed, go to
//     LinkConfig.OnOutOfSync. So a node that marks the bitmap on every
//     error from Wait and on OnOutOfSync never believes the peer holds data
//     it may not hold.
//   - A Request completes only after the sender is done with its frame:
//     Request.Data is never read after Wait returned.
//   - On the receive side, overlapping writes land in arrival order, a
//     read sees the writes that arrived before it, and a BarrierAck leaves
//     only after every earlier write completed and the disk was flushed,
//     in ID order, after the acks of those writes.
//   - No lock is held across network or disk I/O. The receiver waits only
//     for local disk progress (64 operations, max-buffers of payload), never
//     for the peer to read, so two nodes cannot deadlock each other; every
//     queue is bounded.
//   - Every goroutine of a link is waited for before OnClose runs, which
//     happens exactly once, before Done is closed.
//   - The write path (Submit, send, receive, apply, ack, Wait) allocates
//     nothing in steady state, on either node, when Data is not
//     compressed (compression costs one branch there when it is off).
//
// Invariants of resync and verify (tested in resync_test.go):
//   - Every Resync and Verify that returned nil calls its done exactly
//     once: with the answer, or with an error wrapping ErrLinkClosed when
//     the link ended first (before OnClose).
//   - The source reads a range to answer under LockRange and queues the
//     answer on the send queue of Data before it unlocks: an application
//     write to the range is wholly before the read (its Data ahead of the
//     answer) or wholly after (behind it).
//   - The target applies an answer in arrival order with the peer's
//     writes (after every earlier overlapping one, before every later
//     one), queues its ResyncAck after the write completed and before it
//     frees the request's slot, then calls done; so the ack leaves after
//     the acks of earlier overlapping writes and before those of later
//     ones, and before the target's next request.
//   - Resync writes belong to no epoch: Barriers neither wait for nor
//     cover them.
//   - The source never blocks the receiver on the disk or on LockRange
//     (its workers read), and the peer's resync and verify requests take
//     at most half of its operations, so the receiver keeps going (and
//     the acks LockRange may wait for keep arriving).
//   - Both sides bound the outstanding resync and verify requests the
//     same way (32, max(16 MiB, MaxPayload)); a peer over them, one that
//     answers what was not asked, sends a bitmap that is not contiguous or
//     too big, or a compressed payload that does not decode to exactly the
//     announced length (never more than the receiver's limit: decoding
//     writes only into a buffer of that length), is in violation.
//
// Ownership: a message returned by Decoder.Next, and the byte slices in
// it, are valid until the next call of Next, unless SetPayloadBuffer
// placed the payload in the caller's own buffer. A Link owns its net.Conn
// from Handshake on; cfg.Disk stays the caller's (the link never closes
// it, and stops using it when Close returns).
//
// Not here: dialling, accepting and reconnecting, and the timers
// (ping-int, ping-timeout, timeout, ko-count), which the node drives with
// Ping, Received, Pending and Close; the replicated device that
// implements nbd.Device (pkg/node); which ranges to resync, in what
// order and at what rate, and the bitmap merge (pkg/resync, pkg/node);
// payload integrity (data-integrity-alg).
package replication
