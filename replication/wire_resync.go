package replication

import "fmt"

// The resync group (0x05): the bitmap exchange, the sync UUID, resync
// requests and their answers, and online verify. docs/wire-protocol.md
// ("Resync") has the conversation; these are the messages.

// Fixed sizes of the resync payloads (bytes after the header).
const (
	syncUUIDSize       = 8
	resyncRequestFixed = 24 // before the checksum
	resyncReplyFixed   = 16
	resyncAckSize      = 24
	verifyRequestFixed = 24 // before the digests
	verifyReplyFixed   = 16
	// MaxDigestSize is the largest digest of a DigestAlg (sha256).
	MaxDigestSize = 32
	minDigestSize = 4 // crc32c
	// maxVerifyDigests and maxVerifyMask bound a VerifyRequest's digests
	// and a VerifyReply's mismatch bits: one per 4 KiB block of a
	// MaxPayloadSize range.
	maxVerifyBlocks  = MaxPayloadSize / BlockSize
	maxVerifyDigests = maxVerifyBlocks * MaxDigestSize
	maxVerifyMask    = maxVerifyBlocks / 8
)

// BlockSize is the 4 KiB block of checksums and verify digests: a
// VerifyRequest carries one digest per block, a VerifyReply one bit.
const BlockSize = 4096

// blocksOf is the number of BlockSize blocks of n bytes, the last one
// possibly short.
func blocksOf(n int64) int64 { return (n + BlockSize - 1) / BlockSize }

// DigestAlg is a csums-alg or verify-alg on the wire.
type DigestAlg uint8

// The digest algorithms. DigestNone is valid only in a ResyncRequest (no
// checksum: send the data).
const (
	DigestNone   DigestAlg = 0
	DigestCRC32C DigestAlg = 1 // 4 bytes, big-endian
	DigestMD5    DigestAlg = 2 // 16 bytes
	DigestSHA1   DigestAlg = 3 // 20 bytes
	DigestSHA256 DigestAlg = 4 // 32 bytes

	lastDigestAlg = DigestSHA256
)

// String returns the algorithm's configuration name ("crc32c").
func (a DigestAlg) String() string {
	if a <= lastDigestAlg {
		return digestAlgs[a].name
	}
	return fmt.Sprintf("DigestAlg(%d)", uint8(a))
}

// Size is the digest's size in bytes (0 for DigestNone and unknown ones).
func (a DigestAlg) Size() int {
	if a <= lastDigestAlg {
		return digestAlgs[a].size
	}
	return 0
}

// Codec is a payload compression on the wire.
type Codec uint8

// The codecs.
const (
	CodecNone Codec = 0
	CodecS2   Codec = 1 // one s2 block (github.com/klauspost/compress/s2)
	CodecZstd Codec = 2 // zstd frames (github.com/klauspost/compress/zstd)

	lastCodec = CodecZstd
)

// String returns the codec's configuration name ("s2").
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecS2:
		return "s2"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("Codec(%d)", uint8(c))
}

// SyncStatus is the outcome a ResyncReply or VerifyReply carries.
type SyncStatus uint8

// The statuses.
const (
	// StatusOK: the answer follows (ResyncReply: the data, maybe
	// compressed; VerifyReply: the mismatch bits).
	StatusOK SyncStatus = 0
	// StatusInSync (ResyncReply): the checksum matched; no data.
	StatusInSync SyncStatus = 1
	// StatusZero (ResyncReply): the range is all zeroes; no data.
	StatusZero SyncStatus = 2
	// StatusError: the range could not be read; Errno says why.
	StatusError SyncStatus = 3
	// StatusAlgMismatch: the request's algorithm is not the one the
	// answering node uses (csums-alg, verify-alg differ).
	StatusAlgMismatch SyncStatus = 4

	lastSyncStatus = StatusAlgMismatch
)

// String returns the status's name.
func (s SyncStatus) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusInSync:
		return "in-sync"
	case StatusZero:
		return "zero"
	case StatusError:
		return "error"
	case StatusAlgMismatch:
		return "alg-mismatch"
	}
	return fmt.Sprintf("SyncStatus(%d)", uint8(s))
}

// Bitmap is one chunk of a node's dirty bitmap (bitmap.EncodeRLE
// output), sent when a resync is decided. The chunks of one bitmap are
// consecutive pieces of its encoding, the last with Last set; the
// receiver concatenates them.
type Bitmap struct {
	Offset uint64 // where the chunk starts in the sender's encoded bitmap, in bytes
	Last   bool   // the sender's last chunk
	RLE    []byte // 0..MaxPayloadSize bytes
}

func (*Bitmap) Type() Type { return TypeBitmap }

func (m *Bitmap) check() error {
	if len(m.RLE) > MaxPayloadSize {
		return violation(TypeBitmap, "%d bytes, max %d", len(m.RLE), MaxPayloadSize)
	}
	return nil
}

func (m *Bitmap) appendFixed(dst []byte) []byte {
	return appendBool(be.AppendUint64(dst, m.Offset), m.Last)
}
func (m *Bitmap) bulk() []byte { return m.RLE }
func (m *Bitmap) parse(b, bulk []byte) error {
	last, err := parseBool(TypeBitmap, "last", b[8])
	if err != nil {
		return err
	}
	m.Offset, m.Last, m.RLE = be.Uint64(b), last, nilIfEmpty(bulk)
	return nil
}

// SyncUUID carries the sync UUID the sync source chose at resync start
// (DRBD's P_SYNC_UUID): the target takes it as its bitmap UUID.
type SyncUUID struct{ UUID uint64 }

func (*SyncUUID) Type() Type                      { return TypeSyncUUID }
func (*SyncUUID) check() error                    { return nil }
func (m *SyncUUID) appendFixed(dst []byte) []byte { return be.AppendUint64(dst, m.UUID) }
func (*SyncUUID) bulk() []byte                    { return nil }
func (m *SyncUUID) parse(b, _ []byte) error       { m.UUID = be.Uint64(b); return nil }

// ResyncRequest asks the sync source for a range (DRBD's P_RS_DATA_REQUEST,
// or P_CSUM_RS_REQUEST with a checksum). ID is the requester's own
// sequence, separate from the write path's and from reads'.
type ResyncRequest struct {
	ID     uint64
	Offset uint64
	Length uint32    // 1..MaxPayloadSize
	Alg    DigestAlg // DigestNone, or the algorithm of Csum
	Csum   []byte    // the digest of the requester's copy of the range: exactly Alg.Size() bytes
}

func (*ResyncRequest) Type() Type { return TypeResyncRequest }

func (m *ResyncRequest) check() error {
	if err := checkRange(TypeResyncRequest, m.Offset, uint64(m.Length), MaxPayloadSize); err != nil {
		return err
	}
	if m.Alg > lastDigestAlg {
		return violation(TypeResyncRequest, "unknown checksum algorithm %d", uint8(m.Alg))
	}
	if len(m.Csum) != m.Alg.Size() {
		return violation(TypeResyncRequest, "%s checksum of %d bytes, want %d", m.Alg, len(m.Csum), m.Alg.Size())
	}
	return nil
}

func (m *ResyncRequest) appendFixed(dst []byte) []byte {
	dst = be.AppendUint64(dst, m.ID)
	dst = be.AppendUint64(dst, m.Offset)
	dst = be.AppendUint32(dst, m.Length)
	dst = append(dst, byte(m.Alg), 0, 0, 0)
	return append(dst, m.Csum...)
}
func (*ResyncRequest) bulk() []byte { return nil }
func (m *ResyncRequest) parse(b, _ []byte) error {
	if err := checkReserved(TypeResyncRequest, b[21:24]); err != nil {
		return err
	}
	m.ID, m.Offset, m.Length = be.Uint64(b), be.Uint64(b[8:]), be.Uint32(b[16:])
	m.Alg, m.Csum = DigestAlg(b[20]), nilIfEmpty(b[resyncRequestFixed:])
	return nil
}

// ResyncReply answers a ResyncRequest (DRBD's P_RS_DATA_REPLY,
// P_RS_IS_IN_SYNC, P_RS_DEALLOCATED, P_NEG_RS_DREPLY).
type ResyncReply struct {
	ID     uint64
	Status SyncStatus // StatusOK: Payload holds the range; InSync, Zero, Error, AlgMismatch: no payload
	Codec  Codec      // StatusOK only: the payload's compression
	Errno  uint32     // StatusError only, never 0 then
	// Payload is the range (StatusOK), 1..MaxPayloadSize bytes; with a
	// Codec it is compressed and decodes to the requested length.
	Payload []byte
}

func (*ResyncReply) Type() Type { return TypeResyncReply }

func (m *ResyncReply) check() error {
	switch {
	case m.Status > lastSyncStatus:
		return violation(TypeResyncReply, "unknown status %d", uint8(m.Status))
	case m.Codec > lastCodec:
		return violation(TypeResyncReply, "unknown codec %d", uint8(m.Codec))
	case m.Status != StatusOK && m.Codec != CodecNone:
		return violation(TypeResyncReply, "status %v with codec %v", m.Status, m.Codec)
	case (m.Status == StatusError) != (m.Errno != 0):
		return violation(TypeResyncReply, "status %v with errno %d", m.Status, m.Errno)
	case m.Status == StatusOK && len(m.Payload) == 0:
		return violation(TypeResyncReply, "status ok without data")
	case m.Status != StatusOK && len(m.Payload) != 0:
		return violation(TypeResyncReply, "status %v with %d bytes of data", m.Status, len(m.Payload))
	case len(m.Payload) > MaxPayloadSize:
		return violation(TypeResyncReply, "%d bytes of data, max %d", len(m.Payload), MaxPayloadSize)
	}
	return nil
}

func (m *ResyncReply) appendFixed(dst []byte) []byte {
	dst = be.AppendUint64(dst, m.ID)
	dst = append(dst, byte(m.Status), byte(m.Codec), 0, 0)
	return be.AppendUint32(dst, m.Errno)
}
func (m *ResyncReply) bulk() []byte { return m.Payload }
func (m *ResyncReply) parse(b, bulk []byte) error {
	if err := checkReserved(TypeResyncReply, b[10:12]); err != nil {
		return err
	}
	m.ID, m.Status, m.Codec, m.Errno = be.Uint64(b), SyncStatus(b[8]), Codec(b[9]), be.Uint32(b[12:])
	m.Payload = nilIfEmpty(bulk)
	return nil
}

// ResyncAck tells the sync source that the target is done with a range
// it asked for (DRBD's P_RS_WRITE_ACK / P_NEG_ACK): written, or found in
// sync (Errno 0), or failed to write (Errno). It repeats the request's
// ID, Offset and Length.
type ResyncAck struct {
	ID     uint64
	Offset uint64
	Length uint32
	Errno  uint32
}

func (*ResyncAck) Type() Type { return TypeResyncAck }

func (m *ResyncAck) check() error {
	return checkRange(TypeResyncAck, m.Offset, uint64(m.Length), MaxPayloadSize)
}

func (m *ResyncAck) appendFixed(dst []byte) []byte {
	dst = be.AppendUint64(dst, m.ID)
	dst = be.AppendUint64(dst, m.Offset)
	dst = be.AppendUint32(dst, m.Length)
	return be.AppendUint32(dst, m.Errno)
}
func (*ResyncAck) bulk() []byte { return nil }
func (m *ResyncAck) parse(b, _ []byte) error {
	m.ID, m.Offset, m.Length, m.Errno = be.Uint64(b), be.Uint64(b[8:]), be.Uint32(b[16:]), be.Uint32(b[20:])
	return nil
}

// VerifyRequest carries the digests of a range of the sender's disk, one
// per 4 KiB block (DRBD's P_OV_REQUEST + P_OV_REPLY folded into one
// message): the peer compares them with its own.
type VerifyRequest struct {
	ID      uint64
	Offset  uint64
	Length  uint32    // 1..MaxPayloadSize
	Alg     DigestAlg // not DigestNone
	Digests []byte    // ceil(Length/BlockSize) digests of Alg.Size() bytes, the last block's over its short length
}

func (*VerifyRequest) Type() Type { return TypeVerifyRequest }

func (m *VerifyRequest) check() error {
	if err := checkRange(TypeVerifyRequest, m.Offset, uint64(m.Length), MaxPayloadSize); err != nil {
		return err
	}
	if m.Alg == DigestNone || m.Alg > lastDigestAlg {
		return violation(TypeVerifyRequest, "unknown digest algorithm %d", uint8(m.Alg))
	}
	if want := int(blocksOf(int64(m.Length))) * m.Alg.Size(); len(m.Digests) != want {
		return violation(TypeVerifyRequest, "%d bytes of %s digests for %d bytes, want %d", len(m.Digests), m.Alg, m.Length, want)
	}
	return nil
}

func (m *VerifyRequest) appendFixed(dst []byte) []byte {
	dst = be.AppendUint64(dst, m.ID)
	dst = be.AppendUint64(dst, m.Offset)
	dst = be.AppendUint32(dst, m.Length)
	return append(dst, byte(m.Alg), 0, 0, 0)
}
func (m *VerifyRequest) bulk() []byte { return m.Digests }
func (m *VerifyRequest) parse(b, bulk []byte) error {
	if err := checkReserved(TypeVerifyRequest, b[21:24]); err != nil {
		return err
	}
	m.ID, m.Offset, m.Length, m.Alg = be.Uint64(b), be.Uint64(b[8:]), be.Uint32(b[16:]), DigestAlg(b[20])
	m.Digests = nilIfEmpty(bulk)
	return nil
}

// VerifyReply answers a VerifyRequest with one bit per block: set where
// the digests differ.
type VerifyReply struct {
	ID     uint64
	Status SyncStatus // StatusOK, StatusError or StatusAlgMismatch
	Errno  uint32     // StatusError only, never 0 then
	// Mismatch (StatusOK): bit i (LSB first in byte i/8) is block i of
	// the range; ceil(blocks/8) bytes, the bits past the last block 0.
	Mismatch []byte
}

func (*VerifyReply) Type() Type { return TypeVerifyReply }

func (m *VerifyReply) check() error {
	switch {
	case m.Status != StatusOK && m.Status != StatusError && m.Status != StatusAlgMismatch:
		return violation(TypeVerifyReply, "status %v", m.Status)
	case (m.Status == StatusError) != (m.Errno != 0):
		return violation(TypeVerifyReply, "status %v with errno %d", m.Status, m.Errno)
	case m.Status == StatusOK && len(m.Mismatch) == 0:
		return violation(TypeVerifyReply, "status ok without mismatch bits")
	case m.Status != StatusOK && len(m.Mismatch) != 0:
		return violation(TypeVerifyReply, "status %v with %d bytes of mismatch bits", m.Status, len(m.Mismatch))
	case len(m.Mismatch) > maxVerifyMask:
		return violation(TypeVerifyReply, "%d bytes of mismatch bits, max %d", len(m.Mismatch), maxVerifyMask)
	}
	return nil
}

func (m *VerifyReply) appendFixed(dst []byte) []byte {
	dst = be.AppendUint64(dst, m.ID)
	dst = append(dst, byte(m.Status), 0, 0, 0)
	return be.AppendUint32(dst, m.Errno)
}
func (m *VerifyReply) bulk() []byte { return m.Mismatch }
func (m *VerifyReply) parse(b, bulk []byte) error {
	if err := checkReserved(TypeVerifyReply, b[9:12]); err != nil {
		return err
	}
	m.ID, m.Status, m.Errno, m.Mismatch = be.Uint64(b), SyncStatus(b[8]), be.Uint32(b[12:]), nilIfEmpty(bulk)
	return nil
}

// checkReserved requires reserved bytes to be zero.
func checkReserved(t Type, b []byte) error {
	for _, c := range b {
		if c != 0 {
			return violation(t, "reserved bytes %x", b)
		}
	}
	return nil
}
