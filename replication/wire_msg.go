package replication

import (
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/twinblock/twinblock/internal/flagset"
)

// Type is the type of a frame. Types are grouped by their high byte, with
// room in every group: 0x01 connection setup, 0x02 state, 0x03 the write
// path, 0x04 reads through the peer, 0x05 resync, 0x0f liveness and
// teardown. Zero is never a valid type.
type Type uint16

// The message types.
const (
	TypeHello         Type = 0x0100
	TypeAuthChallenge Type = 0x0101
	TypeAuthResponse  Type = 0x0102
	TypeAuthResult    Type = 0x0103

	TypeState Type = 0x0200

	TypeData        Type = 0x0300
	TypeTrim        Type = 0x0301
	TypeWriteZeroes Type = 0x0302
	TypeBarrier     Type = 0x0310
	TypeBarrierAck  Type = 0x0311
	TypeRecvAck     Type = 0x0320
	TypeWriteAck    Type = 0x0321
	TypeNegAck      Type = 0x0322

	TypeReadRequest Type = 0x0400
	TypeReadReply   Type = 0x0401

	TypeBitmap        Type = 0x0500
	TypeSyncUUID      Type = 0x0501
	TypeResyncRequest Type = 0x0510
	TypeResyncReply   Type = 0x0511
	TypeResyncAck     Type = 0x0512
	TypeVerifyRequest Type = 0x0520
	TypeVerifyReply   Type = 0x0521

	TypePing    Type = 0x0f00
	TypePingAck Type = 0x0f01
	TypeGoodbye Type = 0x0f02
)

// String returns the message name ("Data"), or Type(0x1234) for an
// unknown type.
func (t Type) String() string {
	switch t {
	case TypeHello:
		return "Hello"
	case TypeAuthChallenge:
		return "AuthChallenge"
	case TypeAuthResponse:
		return "AuthResponse"
	case TypeAuthResult:
		return "AuthResult"
	case TypeState:
		return "State"
	case TypeData:
		return "Data"
	case TypeTrim:
		return "Trim"
	case TypeWriteZeroes:
		return "WriteZeroes"
	case TypeBarrier:
		return "Barrier"
	case TypeBarrierAck:
		return "BarrierAck"
	case TypeRecvAck:
		return "RecvAck"
	case TypeWriteAck:
		return "WriteAck"
	case TypeNegAck:
		return "NegAck"
	case TypeReadRequest:
		return "ReadRequest"
	case TypeReadReply:
		return "ReadReply"
	case TypeBitmap:
		return "Bitmap"
	case TypeSyncUUID:
		return "SyncUUID"
	case TypeResyncRequest:
		return "ResyncRequest"
	case TypeResyncReply:
		return "ResyncReply"
	case TypeResyncAck:
		return "ResyncAck"
	case TypeVerifyRequest:
		return "VerifyRequest"
	case TypeVerifyReply:
		return "VerifyReply"
	case TypePing:
		return "Ping"
	case TypePingAck:
		return "PingAck"
	case TypeGoodbye:
		return "Goodbye"
	}
	return fmt.Sprintf("Type(%#04x)", uint16(t))
}

// Field limits.
const (
	MaxNameLen    = 255  // Hello.Resource, From, To
	MinNonceLen   = 16   // AuthChallenge.Nonce
	MaxNonceLen   = 64   // AuthChallenge.Nonce
	MaxMACLen     = 64   // AuthResponse.MAC
	MaxReasonLen  = 1024 // Goodbye.Reason
	MaxZeroLength = 1 << 31
	// MinMaxPayload is the smallest Hello.MaxPayload: one 4 KiB block.
	MinMaxPayload = 4096
)

// Fixed sizes of the payloads (bytes after the header).
const (
	helloFixed      = 29 // before the three names
	stateSize       = 60
	dataFixed       = 28
	trimSize        = 32 // Trim and WriteZeroes
	barrierSize     = 16
	idSize          = 8 // BarrierAck, RecvAck, WriteAck
	negAckSize      = 12
	readRequestSize = 20
	readReplyFixed  = 12
	bitmapFixed     = 9
	dataZeroLen     = 4            // the payload of a DataAllZero Data: its length
	maxSmallPayload = MaxReasonLen // the largest non-bulk payload
	helloMaxPayload = helloFixed + 3*(1+MaxNameLen)
	helloMinPayload = helloFixed + 3*(1+1)
	authResultSize  = 1
)

// The decoder's scratch holds every non-bulk payload.
var _ [maxSmallPayload - helloMaxPayload]struct{}

// limits are the payload length bounds of a type, checked on the header
// before any payload byte is read.
type limits struct {
	min, max int
	bulk     bool // bytes past fixed are a bulk payload
	fixed    int
}

func limitsOf(t Type) limits {
	switch t {
	case TypeHello:
		return limits{min: helloMinPayload, max: helloMaxPayload}
	case TypeAuthChallenge:
		return limits{min: MinNonceLen, max: MaxNonceLen}
	case TypeAuthResponse:
		return limits{min: 1, max: MaxMACLen}
	case TypeAuthResult:
		return limits{min: authResultSize, max: authResultSize}
	case TypeState:
		return limits{min: stateSize, max: stateSize}
	case TypeData:
		return limits{min: dataFixed + 1, max: dataFixed + MaxPayloadSize, bulk: true, fixed: dataFixed}
	case TypeTrim, TypeWriteZeroes:
		return limits{min: trimSize, max: trimSize}
	case TypeBarrier:
		return limits{min: barrierSize, max: barrierSize}
	case TypeBarrierAck, TypeRecvAck, TypeWriteAck:
		return limits{min: idSize, max: idSize}
	case TypeNegAck:
		return limits{min: negAckSize, max: negAckSize}
	case TypeReadRequest:
		return limits{min: readRequestSize, max: readRequestSize}
	case TypeReadReply:
		return limits{min: readReplyFixed, max: readReplyFixed + MaxPayloadSize, bulk: true, fixed: readReplyFixed}
	case TypeBitmap:
		return limits{min: bitmapFixed, max: bitmapFixed + MaxPayloadSize, bulk: true, fixed: bitmapFixed}
	case TypeSyncUUID:
		return limits{min: syncUUIDSize, max: syncUUIDSize}
	case TypeResyncRequest:
		return limits{min: resyncRequestFixed, max: resyncRequestFixed + MaxDigestSize}
	case TypeResyncReply:
		return limits{min: resyncReplyFixed, max: resyncReplyFixed + MaxPayloadSize, bulk: true, fixed: resyncReplyFixed}
	case TypeResyncAck:
		return limits{min: resyncAckSize, max: resyncAckSize}
	case TypeVerifyRequest:
		return limits{min: verifyRequestFixed + minDigestSize, max: verifyRequestFixed + maxVerifyDigests,
			bulk: true, fixed: verifyRequestFixed}
	case TypeVerifyReply:
		return limits{min: verifyReplyFixed, max: verifyReplyFixed + maxVerifyMask, bulk: true, fixed: verifyReplyFixed}
	case TypePing, TypePingAck:
		return limits{}
	case TypeGoodbye:
		return limits{min: 0, max: MaxReasonLen}
	}
	return limits{min: 1, max: 0} // nothing fits
}

// Features are the optional abilities a node announces in Hello; the
// connection uses the bits both sides set. Unknown bits are legal (a newer
// peer) and ignored.
type Features uint64

// The feature bits.
const (
	FeatureRLE          Features = 1 << 0 // Bitmap chunks are run-length encoded
	FeatureCompressS2   Features = 1 << 1 // the node decodes s2-compressed payloads (every node announces it)
	FeatureCompressZstd Features = 1 << 2 // the node decodes zstd-compressed payloads (every node announces it)
	FeatureTrim         Features = 1 << 3 // the node executes Trim
	FeatureWriteZeroes  Features = 1 << 4 // the node executes WriteZeroes
)

var featureNames = []flagset.Name[Features]{
	{Flag: FeatureRLE, Name: "rle"}, {Flag: FeatureCompressS2, Name: "compress-s2"}, {Flag: FeatureCompressZstd, Name: "compress-zstd"},
	{Flag: FeatureTrim, Name: "trim"}, {Flag: FeatureWriteZeroes, Name: "write-zeroes"},
}

// String lists the bits by name, "|"-separated ("none" for zero), unknown
// bits in hex.
func (f Features) String() string { return flagset.String(f, featureNames, "|") }

// DataFlags modify a write (Data, Trim, WriteZeroes).
type DataFlags uint32

// The write flags.
const (
	// DataFUA: the write is durable on the receiver before it is
	// acknowledged (NBD_CMD_FLAG_FUA).
	DataFUA DataFlags = 1 << 0
	// DataFlushBefore: every write the receiver completed before this one
	// is made durable before this one is performed (REQ_PREFLUSH).
	DataFlushBefore DataFlags = 1 << 1
	// DataNoHole: WriteZeroes must allocate, not punch a hole
	// (NBD_CMD_FLAG_NO_HOLE). Only WriteZeroes may carry it.
	DataNoHole DataFlags = 1 << 2
	// DataCompressS2 and DataCompressZstd: Data only, at most one of
	// them: the payload is compressed (one s2 block; zstd frames), and
	// the write is what it decodes to. The sender sets them only for a
	// peer that announced FeatureCompressS2 / FeatureCompressZstd.
	DataCompressS2   DataFlags = 1 << 3
	DataCompressZstd DataFlags = 1 << 4
	// DataAllZero: Data only, not with compression: the write is
	// ZeroLength zero bytes, and the payload is that length (4 bytes)
	// instead of the zeroes. Sent under the same condition as the
	// compression flags.
	DataAllZero DataFlags = 1 << 5

	dataCodecFlags = DataCompressS2 | DataCompressZstd
)

var dataFlagNames = []flagset.Name[DataFlags]{
	{Flag: DataFUA, Name: "fua"}, {Flag: DataFlushBefore, Name: "flush-before"}, {Flag: DataNoHole, Name: "no-hole"},
	{Flag: DataCompressS2, Name: "compress-s2"}, {Flag: DataCompressZstd, Name: "compress-zstd"}, {Flag: DataAllZero, Name: "all-zero"},
}

// codec returns the compression the flags announce.
func (f DataFlags) codec() Codec {
	switch f & dataCodecFlags {
	case DataCompressS2:
		return CodecS2
	case DataCompressZstd:
		return CodecZstd
	}
	return CodecNone
}

// codecFlag is the Data flag of a codec (0 for CodecNone).
func codecFlag(c Codec) DataFlags {
	switch c {
	case CodecS2:
		return DataCompressS2
	case CodecZstd:
		return DataCompressZstd
	}
	return 0
}

// String lists the flags by name, "|"-separated.
func (f DataFlags) String() string { return flagset.String(f, dataFlagNames, "|") }

// StateFlags travel in State. Their values are DRBD 8.4's uuid_flags.
type StateFlags uint32

// The state flags.
const (
	// StateDiscardMyData: connect --discard-my-data: this node volunteers
	// to be the sync target of a split brain.
	StateDiscardMyData StateFlags = 1 << 0
	// StateCrashedPrimary: this node crashed while Primary (MDF_CRASHED_PRIMARY).
	StateCrashedPrimary StateFlags = 1 << 1
	// StateInconsistent: this node's disk is Inconsistent right now (it may
	// be in the middle of becoming so, which MDFlags would not show yet).
	StateInconsistent StateFlags = 1 << 2
	// StateSkipInitialSync: new-current-uuid --clear-bitmap: both sides are
	// known identical, skip the initial full sync.
	StateSkipInitialSync StateFlags = 1 << 3
	// StateUserPaused: pause-sync: the resync is paused by this node's
	// administrator (DRBD's user_isp, which 8.4 sends in P_STATE).
	StateUserPaused StateFlags = 1 << 8
	// StateVerifySource: this node runs an online verify as VerifyS
	// (DRBD's C_VERIFY_S connection state, which 8.4 sends in P_STATE).
	StateVerifySource StateFlags = 1 << 9

	stateFlagsKnown = StateDiscardMyData | StateCrashedPrimary | StateInconsistent | StateSkipInitialSync |
		StateUserPaused | StateVerifySource
)

var stateFlagNames = []flagset.Name[StateFlags]{
	{Flag: StateDiscardMyData, Name: "discard-my-data"}, {Flag: StateCrashedPrimary, Name: "crashed-primary"},
	{Flag: StateInconsistent, Name: "inconsistent"}, {Flag: StateSkipInitialSync, Name: "skip-initial-sync"},
	{Flag: StateUserPaused, Name: "user-paused"}, {Flag: StateVerifySource, Name: "verify-source"},
}

// String lists the flags by name, "|"-separated.
func (f StateFlags) String() string { return flagset.String(f, stateFlagNames, "|") }

func violation(t Type, format string, args ...any) error {
	return fmt.Errorf("%w: %v: %s", ErrProtocol, t, fmt.Sprintf(format, args...))
}

// checkRange checks a byte range of the device: 1..maxLen bytes, and an
// end that fits in an int64 (io.WriterAt offsets), so offset+length never
// overflows.
func checkRange(t Type, offset uint64, length, maxLen uint64) error {
	if length == 0 {
		return violation(t, "zero length")
	}
	if length > maxLen {
		return violation(t, "length %d over %d", length, maxLen)
	}
	if offset > math.MaxInt64-length {
		return violation(t, "offset %d + length %d ends past 2^63-1", offset, length)
	}
	return nil
}

func checkName(t Type, field, s string) error {
	if len(s) == 0 || len(s) > MaxNameLen {
		return violation(t, "%s of %d bytes, want 1..%d", field, len(s), MaxNameLen)
	}
	if !utf8.ValidString(s) {
		return violation(t, "%s is not UTF-8", field)
	}
	return nil
}

func parseBool(t Type, field string, b byte) (bool, error) {
	switch b {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, violation(t, "%s is %d, want 0 or 1", field, b)
}

func appendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// nilIfEmpty keeps decoded empty slices nil, so a decoded message equals
// the one that was encoded.
func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// ---- Connection setup ----

// Hello is the first message each side sends on a new connection. Its
// layout is frozen for every version: what a later version needs to
// negotiate goes into Features or into a message of its own, sent once both
// sides agreed on a version that has it.
type Hello struct {
	ProtoMin, ProtoMax uint32   // protocol versions spoken, 1 ≤ ProtoMin ≤ ProtoMax
	Resource           string   // resource name, 1..255 bytes of UTF-8
	From, To           string   // sender's and intended receiver's node names, 1..255 bytes
	DataSize           uint64   // usable bytes of the sender's disk, 0 if diskless
	Protocol           byte     // replication protocol: 'A', 'B' or 'C'
	Features           Features // optional abilities of the sender
	MaxPayload         uint32   // the largest bulk payload the sender accepts, MinMaxPayload..MaxPayloadSize
}

func (*Hello) Type() Type { return TypeHello }

func (m *Hello) check() error {
	if m.ProtoMin == 0 || m.ProtoMin > m.ProtoMax {
		return violation(TypeHello, "protocol versions %d..%d", m.ProtoMin, m.ProtoMax)
	}
	if m.Protocol != 'A' && m.Protocol != 'B' && m.Protocol != 'C' {
		return violation(TypeHello, "replication protocol %q, want A, B or C", m.Protocol)
	}
	if m.MaxPayload < MinMaxPayload || m.MaxPayload > MaxPayloadSize {
		return violation(TypeHello, "max payload %d, want %d..%d", m.MaxPayload, MinMaxPayload, MaxPayloadSize)
	}
	if err := checkName(TypeHello, "resource", m.Resource); err != nil {
		return err
	}
	if err := checkName(TypeHello, "from", m.From); err != nil {
		return err
	}
	return checkName(TypeHello, "to", m.To)
}

func (m *Hello) appendFixed(dst []byte) []byte {
	dst = be.AppendUint32(dst, m.ProtoMin)
	dst = be.AppendUint32(dst, m.ProtoMax)
	dst = be.AppendUint64(dst, m.DataSize)
	dst = be.AppendUint64(dst, uint64(m.Features))
	dst = be.AppendUint32(dst, m.MaxPayload)
	dst = append(dst, m.Protocol)
	for _, s := range [...]string{m.Resource, m.From, m.To} {
		dst = append(dst, byte(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

func (*Hello) bulk() []byte { return nil }

func (m *Hello) parse(b, _ []byte) error {
	m.ProtoMin = be.Uint32(b[0:])
	m.ProtoMax = be.Uint32(b[4:])
	m.DataSize = be.Uint64(b[8:])
	m.Features = Features(be.Uint64(b[16:]))
	m.MaxPayload = be.Uint32(b[24:])
	m.Protocol = b[28]
	rest := b[helloFixed:]
	var names [3]string
	for i, field := range [...]string{"resource", "from", "to"} {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return violation(TypeHello, "%s runs past the end of the payload", field)
		}
		names[i] = string(rest[1 : 1+int(rest[0])])
		rest = rest[1+int(rest[0]):]
	}
	if len(rest) != 0 {
		return violation(TypeHello, "%d trailing bytes", len(rest))
	}
	m.Resource, m.From, m.To = names[0], names[1], names[2]
	return nil
}

// AuthChallenge carries a random nonce the receiver must answer with an
// AuthResponse (see ChallengeResponse).
type AuthChallenge struct {
	Nonce []byte // MinNonceLen..MaxNonceLen bytes
}

func (*AuthChallenge) Type() Type { return TypeAuthChallenge }

func (m *AuthChallenge) check() error {
	if len(m.Nonce) < MinNonceLen || len(m.Nonce) > MaxNonceLen {
		return violation(TypeAuthChallenge, "nonce of %d bytes, want %d..%d", len(m.Nonce), MinNonceLen, MaxNonceLen)
	}
	return nil
}

func (m *AuthChallenge) appendFixed(dst []byte) []byte { return append(dst, m.Nonce...) }
func (*AuthChallenge) bulk() []byte                    { return nil }
func (m *AuthChallenge) parse(b, _ []byte) error       { m.Nonce = b; return nil }

// AuthResponse answers the peer's AuthChallenge.
type AuthResponse struct {
	MAC []byte // 1..MaxMACLen bytes
}

func (*AuthResponse) Type() Type { return TypeAuthResponse }

func (m *AuthResponse) check() error {
	if len(m.MAC) == 0 || len(m.MAC) > MaxMACLen {
		return violation(TypeAuthResponse, "MAC of %d bytes, want 1..%d", len(m.MAC), MaxMACLen)
	}
	return nil
}

func (m *AuthResponse) appendFixed(dst []byte) []byte { return append(dst, m.MAC...) }
func (*AuthResponse) bulk() []byte                    { return nil }
func (m *AuthResponse) parse(b, _ []byte) error       { m.MAC = b; return nil }

// AuthResult tells the peer whether its AuthResponse verified. A node that
// sends OK=false closes the connection afterwards.
type AuthResult struct {
	OK bool
}

func (*AuthResult) Type() Type                      { return TypeAuthResult }
func (*AuthResult) check() error                    { return nil }
func (m *AuthResult) appendFixed(dst []byte) []byte { return appendBool(dst, m.OK) }
func (*AuthResult) bulk() []byte                    { return nil }

func (m *AuthResult) parse(b, _ []byte) error {
	var err error
	m.OK, err = parseBool(TypeAuthResult, "ok", b[0])
	return err
}

// ---- State ----

// State is a node's view of itself, sent both ways after the handshake and
// again whenever it changes. Role and Disk are opaque here: the state
// machine defines their values.
type State struct {
	Role      byte
	Disk      byte
	GI        [4]uint64  // generation identifiers: current, bitmap, history[0], history[1]
	MDFlags   uint32     // the superblock's MDF_* flags (pkg/meta)
	OutOfSync uint64     // bits set in the sender's bitmap
	Flags     StateFlags // DRBD's uuid_flags
	// AfterSB is the sender's split-brain configuration (after-sb-0pri,
	// -1pri, -2pri, rr-conflict, always-asbp) as splitbrain.Policies
	// encodes it; 0 if the sender has none. The two nodes must agree,
	// as DRBD checks at connect time.
	AfterSB uint16
	// Epoch is the quorum epoch under which the sender is Primary (the
	// epoch of its committed promotion), 0 if it is not Primary or the
	// resource has no quorum. Its writes carry it (Data.Epoch); a node
	// with an epoch fence (LinkConfig.Fence) refuses a lower one.
	Epoch uint64
}

func (*State) Type() Type { return TypeState }

func (m *State) check() error {
	if u := m.Flags &^ stateFlagsKnown; u != 0 {
		return violation(TypeState, "unknown flags %#x", uint32(u))
	}
	return nil
}

func (m *State) appendFixed(dst []byte) []byte {
	dst = append(dst, m.Role, m.Disk)
	dst = be.AppendUint16(dst, m.AfterSB)
	dst = be.AppendUint32(dst, m.MDFlags)
	for _, g := range m.GI {
		dst = be.AppendUint64(dst, g)
	}
	dst = be.AppendUint64(dst, m.OutOfSync)
	dst = be.AppendUint32(dst, uint32(m.Flags))
	return be.AppendUint64(dst, m.Epoch)
}

func (*State) bulk() []byte { return nil }

func (m *State) parse(b, _ []byte) error {
	m.Role, m.Disk = b[0], b[1]
	m.AfterSB = be.Uint16(b[2:])
	m.MDFlags = be.Uint32(b[4:])
	for i := range m.GI {
		m.GI[i] = be.Uint64(b[8+8*i:])
	}
	m.OutOfSync = be.Uint64(b[40:])
	m.Flags = StateFlags(be.Uint32(b[48:]))
	m.Epoch = be.Uint64(b[52:])
	return nil
}

// ---- The write path ----

// Data is one write mirrored to the peer. ID is the sender's sequence
// number, strictly increasing per connection and shared with Trim,
// WriteZeroes and Barrier; the peer's acks name it.
//
// With DataCompressS2 or DataCompressZstd the payload is compressed and
// the write is what it decodes to (the receiver bounds that by its
// MaxPayload); with DataAllZero there is no payload: the write is
// ZeroLength zero bytes.
type Data struct {
	ID         uint64
	Epoch      uint64 // the sender's State.Epoch when it sent this write (see LinkConfig.Fence)
	Offset     uint64 // byte offset on the device
	Flags      DataFlags
	Payload    []byte // 1..MaxPayloadSize bytes (none with DataAllZero); Offset+len fits in an int64
	ZeroLength uint32 // DataAllZero only: 1..MaxPayloadSize; else 0
}

func (*Data) Type() Type { return TypeData }

func (m *Data) check() error {
	if u := m.Flags &^ (DataFUA | DataFlushBefore | dataCodecFlags | DataAllZero); u != 0 {
		return violation(TypeData, "flags %v not allowed", u)
	}
	if m.Flags&dataCodecFlags == dataCodecFlags {
		return violation(TypeData, "flags %v: two compressions", m.Flags)
	}
	if m.Flags&DataAllZero == 0 {
		if m.ZeroLength != 0 {
			return violation(TypeData, "zero length %d without all-zero", m.ZeroLength)
		}
		return checkRange(TypeData, m.Offset, uint64(len(m.Payload)), MaxPayloadSize)
	}
	if m.Flags&dataCodecFlags != 0 {
		return violation(TypeData, "flags %v: all-zero data is not compressed", m.Flags)
	}
	if len(m.Payload) != 0 {
		return violation(TypeData, "all-zero with %d bytes of data", len(m.Payload))
	}
	return checkRange(TypeData, m.Offset, uint64(m.ZeroLength), MaxPayloadSize)
}

func (m *Data) appendFixed(dst []byte) []byte {
	dst = be.AppendUint64(dst, m.ID)
	dst = be.AppendUint64(dst, m.Epoch)
	dst = be.AppendUint64(dst, m.Offset)
	dst = be.AppendUint32(dst, uint32(m.Flags))
	if m.Flags&DataAllZero != 0 {
		dst = be.AppendUint32(dst, m.ZeroLength)
	}
	return dst
}

func (m *Data) bulk() []byte { return m.Payload }

func (m *Data) parse(b, bulk []byte) error {
	m.ID = be.Uint64(b[0:])
	m.Epoch = be.Uint64(b[8:])
	m.Offset = be.Uint64(b[16:])
	m.Flags = DataFlags(be.Uint32(b[24:]))
	m.Payload, m.ZeroLength = bulk, 0
	if m.Flags&DataAllZero != 0 {
		if len(bulk) != dataZeroLen {
			return violation(TypeData, "all-zero with a payload of %d bytes, want %d (the length)", len(bulk), dataZeroLen)
		}
		m.Payload, m.ZeroLength = nil, be.Uint32(bulk)
	}
	return nil
}

// Trim discards a range on the peer (NBD_CMD_TRIM). After it the range's
// content is unspecified, as after a local discard.
type Trim struct {
	ID     uint64
	Epoch  uint64 // as Data's
	Offset uint64
	Length uint32 // 1..2^31
	Flags  DataFlags
}

func (*Trim) Type() Type { return TypeTrim }

func (m *Trim) check() error {
	return checkZeroRange(TypeTrim, m.Offset, m.Length, m.Flags, DataFUA|DataFlushBefore)
}

func (m *Trim) appendFixed(dst []byte) []byte {
	return appendZeroRange(dst, m.ID, m.Epoch, m.Offset, m.Length, m.Flags)
}
func (*Trim) bulk() []byte { return nil }
func (m *Trim) parse(b, _ []byte) error {
	m.ID, m.Epoch, m.Offset, m.Length, m.Flags = parseZeroRange(b)
	return nil
}

// WriteZeroes makes a range read as zeroes on the peer
// (NBD_CMD_WRITE_ZEROES); with DataNoHole it must stay allocated.
type WriteZeroes struct {
	ID     uint64
	Epoch  uint64 // as Data's
	Offset uint64
	Length uint32 // 1..2^31
	Flags  DataFlags
}

func (*WriteZeroes) Type() Type { return TypeWriteZeroes }

func (m *WriteZeroes) check() error {
	return checkZeroRange(TypeWriteZeroes, m.Offset, m.Length, m.Flags, DataFUA|DataFlushBefore|DataNoHole)
}

func (m *WriteZeroes) appendFixed(dst []byte) []byte {
	return appendZeroRange(dst, m.ID, m.Epoch, m.Offset, m.Length, m.Flags)
}
func (*WriteZeroes) bulk() []byte { return nil }
func (m *WriteZeroes) parse(b, _ []byte) error {
	m.ID, m.Epoch, m.Offset, m.Length, m.Flags = parseZeroRange(b)
	return nil
}

func checkZeroRange(t Type, offset uint64, length uint32, flags, allowed DataFlags) error {
	if err := checkRange(t, offset, uint64(length), MaxZeroLength); err != nil {
		return err
	}
	if u := flags &^ allowed; u != 0 {
		return violation(t, "flags %v not allowed", u)
	}
	return nil
}

func appendZeroRange(dst []byte, id, epoch, offset uint64, length uint32, flags DataFlags) []byte {
	dst = be.AppendUint64(dst, id)
	dst = be.AppendUint64(dst, epoch)
	dst = be.AppendUint64(dst, offset)
	dst = be.AppendUint32(dst, length)
	return be.AppendUint32(dst, uint32(flags))
}

func parseZeroRange(b []byte) (id, epoch, offset uint64, length uint32, flags DataFlags) {
	return be.Uint64(b[0:]), be.Uint64(b[8:]), be.Uint64(b[16:]), be.Uint32(b[24:]), DataFlags(be.Uint32(b[28:]))
}

// Barrier asks the peer to make every write before it (lower IDs) durable,
// then answer with a BarrierAck of the same ID. ID comes from the write
// path's sequence.
type Barrier struct {
	ID    uint64
	Epoch uint64 // as Data's
}

// BarrierAck answers a Barrier: everything before it is durable.
type BarrierAck struct{ ID uint64 }

// RecvAck acknowledges that a write arrived (protocol B).
type RecvAck struct{ ID uint64 }

// WriteAck acknowledges that a write completed on the peer's disk
// (protocol C).
type WriteAck struct{ ID uint64 }

func (*Barrier) Type() Type    { return TypeBarrier }
func (*BarrierAck) Type() Type { return TypeBarrierAck }
func (*RecvAck) Type() Type    { return TypeRecvAck }
func (*WriteAck) Type() Type   { return TypeWriteAck }

func (*Barrier) check() error    { return nil }
func (*BarrierAck) check() error { return nil }
func (*RecvAck) check() error    { return nil }
func (*WriteAck) check() error   { return nil }

func (m *Barrier) appendFixed(dst []byte) []byte {
	return be.AppendUint64(be.AppendUint64(dst, m.ID), m.Epoch)
}
func (m *BarrierAck) appendFixed(dst []byte) []byte { return be.AppendUint64(dst, m.ID) }
func (m *RecvAck) appendFixed(dst []byte) []byte    { return be.AppendUint64(dst, m.ID) }
func (m *WriteAck) appendFixed(dst []byte) []byte   { return be.AppendUint64(dst, m.ID) }

func (*Barrier) bulk() []byte    { return nil }
func (*BarrierAck) bulk() []byte { return nil }
func (*RecvAck) bulk() []byte    { return nil }
func (*WriteAck) bulk() []byte   { return nil }

func (m *Barrier) parse(b, _ []byte) error {
	m.ID, m.Epoch = be.Uint64(b), be.Uint64(b[8:])
	return nil
}
func (m *BarrierAck) parse(b, _ []byte) error { m.ID = be.Uint64(b); return nil }
func (m *RecvAck) parse(b, _ []byte) error    { m.ID = be.Uint64(b); return nil }
func (m *WriteAck) parse(b, _ []byte) error   { m.ID = be.Uint64(b); return nil }

// NegAck reports that a write (Data, Trim, WriteZeroes) failed on the
// peer, under every protocol. Errno is a Linux errno (EIO = 5), never 0.
type NegAck struct {
	ID    uint64
	Errno uint32
}

func (*NegAck) Type() Type { return TypeNegAck }

func (m *NegAck) check() error {
	if m.Errno == 0 {
		return violation(TypeNegAck, "errno 0")
	}
	return nil
}

func (m *NegAck) appendFixed(dst []byte) []byte {
	return be.AppendUint32(be.AppendUint64(dst, m.ID), m.Errno)
}
func (*NegAck) bulk() []byte { return nil }
func (m *NegAck) parse(b, _ []byte) error {
	m.ID, m.Errno = be.Uint64(b), be.Uint32(b[8:])
	return nil
}

// ---- Reads through the peer ----

// ReadRequest asks the peer for a range of its disk (a diskless Primary,
// or a Primary whose local read failed). ID is the requester's own
// sequence, separate from the write path's.
type ReadRequest struct {
	ID     uint64
	Offset uint64
	Length uint32 // 1..MaxPayloadSize (one ReadReply must carry it)
}

func (*ReadRequest) Type() Type { return TypeReadRequest }

func (m *ReadRequest) check() error {
	return checkRange(TypeReadRequest, m.Offset, uint64(m.Length), MaxPayloadSize)
}

func (m *ReadRequest) appendFixed(dst []byte) []byte {
	dst = be.AppendUint64(dst, m.ID)
	dst = be.AppendUint64(dst, m.Offset)
	return be.AppendUint32(dst, m.Length)
}
func (*ReadRequest) bulk() []byte { return nil }
func (m *ReadRequest) parse(b, _ []byte) error {
	m.ID, m.Offset, m.Length = be.Uint64(b), be.Uint64(b[8:]), be.Uint32(b[16:])
	return nil
}

// ReadReply answers a ReadRequest: with Errno 0 the requested bytes, else
// a Linux errno and no payload.
type ReadReply struct {
	ID      uint64
	Errno   uint32
	Payload []byte // 1..MaxPayloadSize bytes if Errno is 0, else empty
}

func (*ReadReply) Type() Type { return TypeReadReply }

func (m *ReadReply) check() error {
	switch {
	case m.Errno == 0 && len(m.Payload) == 0:
		return violation(TypeReadReply, "no error and no data")
	case m.Errno != 0 && len(m.Payload) != 0:
		return violation(TypeReadReply, "errno %d with %d bytes of data", m.Errno, len(m.Payload))
	case len(m.Payload) > MaxPayloadSize:
		return violation(TypeReadReply, "%d bytes of data, max %d", len(m.Payload), MaxPayloadSize)
	}
	return nil
}

func (m *ReadReply) appendFixed(dst []byte) []byte {
	return be.AppendUint32(be.AppendUint64(dst, m.ID), m.Errno)
}
func (m *ReadReply) bulk() []byte { return m.Payload }
func (m *ReadReply) parse(b, bulk []byte) error {
	m.ID, m.Errno, m.Payload = be.Uint64(b), be.Uint32(b[8:]), nilIfEmpty(bulk)
	return nil
}

// ---- Liveness and teardown ----

// Ping asks the peer for a PingAck (ping-int, ping-timeout).
type Ping struct{}

// PingAck answers a Ping.
type PingAck struct{}

func (*Ping) Type() Type                       { return TypePing }
func (*PingAck) Type() Type                    { return TypePingAck }
func (*Ping) check() error                     { return nil }
func (*PingAck) check() error                  { return nil }
func (*Ping) appendFixed(dst []byte) []byte    { return dst }
func (*PingAck) appendFixed(dst []byte) []byte { return dst }
func (*Ping) bulk() []byte                     { return nil }
func (*PingAck) bulk() []byte                  { return nil }
func (*Ping) parse(_, _ []byte) error          { return nil }
func (*PingAck) parse(_, _ []byte) error       { return nil }

// Goodbye is the last message of a clean disconnect.
type Goodbye struct {
	Reason string // 0..MaxReasonLen bytes of UTF-8, for the peer's log
}

func (*Goodbye) Type() Type { return TypeGoodbye }

func (m *Goodbye) check() error {
	if len(m.Reason) > MaxReasonLen {
		return violation(TypeGoodbye, "reason of %d bytes, max %d", len(m.Reason), MaxReasonLen)
	}
	if !utf8.ValidString(m.Reason) {
		return violation(TypeGoodbye, "reason is not UTF-8")
	}
	return nil
}

func (m *Goodbye) appendFixed(dst []byte) []byte { return append(dst, m.Reason...) }
func (*Goodbye) bulk() []byte                    { return nil }
func (m *Goodbye) parse(b, _ []byte) error       { m.Reason = string(b); return nil }
