// Package replication is the peer link of a resource: today, the codec of
// the peer protocol, the byte-level conversation between the two nodes
// (docs/wire-protocol.md has every message byte by byte).
//
// What exists:
//   - the messages, one Go type each (Hello, AuthChallenge, AuthResponse,
//     AuthResult, State, Data, Trim, WriteZeroes, Barrier, BarrierAck,
//     RecvAck, WriteAck, NegAck, ReadRequest, ReadReply, Bitmap, Ping,
//     PingAck, Goodbye), all implementing Message;
//   - the framing: Append and AppendSplit encode a message into a reusable
//     buffer, a Decoder reads frames from a stream;
//   - DRBD's cram-hmac authentication: ChallengeResponse, VerifyResponse,
//     NewNonce.
//
// Invariants (tested in wire_test.go and by FuzzDecode):
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
// Ownership: a message returned by Decoder.Next, and the byte slices in
// it, are valid until the next call of Next, unless SetPayloadBuffer
// placed the payload in the caller's own buffer.
//
// Planned, and not here yet: the connection (dialling, the handshake
// sequence, timeouts, protocols A, B and C on the write path), the
// replicated device that implements nbd.Device so the NBD front end serves
// it unchanged (issue 4); resync, online verify, compression and payload
// integrity (issue 5). Nothing imports this package yet.
package replication
