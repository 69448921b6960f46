package replication

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Framing of the peer protocol. Every message is one frame: a 16-byte
// header, then Length bytes of payload whose layout depends on the type.
// docs/wire-protocol.md has the byte-by-byte tables.
//
//	offset size field
//	0      4    magic  0x74776270 ("twbp")
//	4      2    type
//	6      2    flags  (reserved: 0)
//	8      4    length (payload bytes after the header)
//	12     4    CRC32C (Castagnoli) of bytes 0..11
const (
	// Magic opens every frame.
	Magic uint32 = 0x74776270
	// HeaderSize is the size of a frame header.
	HeaderSize = 16
	// MaxPayloadSize bounds the bulk payload of one message (the data of
	// a Data, ReadReply or ResyncReply, the RLE of a Bitmap): 64 MiB.
	MaxPayloadSize = 64 << 20
	// MaxFixed bounds the fixed fields that travel with a bulk payload.
	MaxFixed = 4096
	// MaxFrame is the largest length a frame header may announce: a
	// 64 MiB write plus its fixed fields.
	MaxFrame = MaxPayloadSize + MaxFixed
)

// The protocol versions this build speaks (Hello.ProtoMin, ProtoMax).
const (
	// 2: State carries the sender's quorum epoch (60 bytes), and
	// Data's epoch is filled in.
	// 3: Trim, WriteZeroes (32 bytes) and Barrier (16 bytes) carry the
	// sender's epoch too.
	ProtoVersionMin uint32 = 3
	ProtoVersionMax uint32 = 3
)

// Sentinel errors. Every protocol violation wraps ErrProtocol, so a caller
// that only wants to know "drop this connection" tests for that; the
// narrower sentinels wrap it too.
var (
	// ErrProtocol: the peer sent something the protocol forbids (or
	// Append was given a message that may not be sent).
	ErrProtocol = errors.New("replication: protocol violation")
	// ErrBadMagic: a frame does not start with Magic (the stream is not
	// ours or lost sync).
	ErrBadMagic = fmt.Errorf("%w: bad magic", ErrProtocol)
	// ErrHeaderChecksum: the header's CRC32C does not match.
	ErrHeaderChecksum = fmt.Errorf("%w: header checksum mismatch", ErrProtocol)
	// ErrFrameTooLarge: a header announces more than the decoder's limit.
	ErrFrameTooLarge = fmt.Errorf("%w: frame too large", ErrProtocol)
	// ErrUnknownType: a header carries a type this version does not know.
	ErrUnknownType = fmt.Errorf("%w: unknown message type", ErrProtocol)
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	be         = binary.BigEndian
	zeroHeader [HeaderSize]byte
)

// Message is one message of the peer protocol. The implementations are the
// pointer types of this package (*Hello, *Data, ...); switch on the
// concrete type to handle one.
type Message interface {
	// Type is the frame type of the message.
	Type() Type
	// check validates the fields; Append and Decoder.Next share it, so
	// whatever one accepts the other does.
	check() error
	// appendFixed appends every field except the bulk payload.
	appendFixed(dst []byte) []byte
	// bulk is the bulk payload sent after the fixed fields (Data,
	// ReadReply, Bitmap, ResyncReply, VerifyRequest, VerifyReply), nil
	// for the other types.
	bulk() []byte
	// parse sets every field from the payload. For bulk types b holds the
	// fixed fields and bulk the rest; for the others b is the whole
	// payload. Its length is already within the type's bounds.
	parse(b, bulk []byte) error
}

// Append appends the frame of m (header and payload) to dst and returns the
// extended slice. It validates m with the rules the decoder applies, and
// on error returns dst unchanged and an error wrapping ErrProtocol. It
// does not allocate when dst has room (keep the message itself in a
// long-lived variable: a fresh &Data{} escapes to the heap).
func Append(dst []byte, m Message) ([]byte, error) {
	frame, bulk, err := AppendSplit(dst, m)
	if err != nil {
		return dst, err
	}
	return append(frame, bulk...), nil
}

// AppendSplit is Append without copying the bulk payload: it appends the
// header and the fixed fields to dst and returns, as bulk, the bytes that
// must follow them on the wire (m's Payload or RLE; nil for types without
// one), so a sender can write both with one writev (net.Buffers).
func AppendSplit(dst []byte, m Message) (frame, bulk []byte, err error) {
	if err := m.check(); err != nil {
		return dst, nil, err
	}
	start := len(dst)
	dst = append(dst, zeroHeader[:]...)
	dst = m.appendFixed(dst)
	bulk = m.bulk()
	n := len(dst) - start - HeaderSize + len(bulk)
	if lim := limitsOf(m.Type()); n < lim.min || n > lim.max {
		panic(fmt.Sprintf("replication: %v encoded to %d payload bytes outside %d..%d", m.Type(), n, lim.min, lim.max))
	}
	putHeader(dst[start:start+HeaderSize], m.Type(), 0, uint32(n))
	return dst, bulk, nil
}

// putHeader fills h (HeaderSize bytes), checksum included.
func putHeader(h []byte, t Type, flags uint16, length uint32) {
	be.PutUint32(h[0:], Magic)
	be.PutUint16(h[4:], uint16(t))
	be.PutUint16(h[6:], flags)
	be.PutUint32(h[8:], length)
	be.PutUint32(h[12:], crc32.Checksum(h[:12], castagnoli))
}

// Decoder reads frames from a stream and decodes them.
//
// Ownership: the message Next returns, and every byte slice in it (Data,
// ReadReply and ResyncReply payloads, Bitmap RLE, digests, mismatch
// bits, nonces and MACs), belong to the decoder and stay valid only until
// the next call of Next; copy what you keep. Strings (Hello names, Goodbye reason) are ordinary Go strings.
// With SetPayloadBuffer, Data, ReadReply and ResyncReply payloads are
// read into the caller's buffers instead and belong to the caller.
//
// The decoder reads ahead: once a stream is given to a Decoder, read it
// only through the decoder. After an error the stream cannot be trusted;
// every later call of Next returns the same error. A Decoder is not safe
// for concurrent use.
//
// Memory: besides a 16 KiB read-ahead buffer the decoder keeps one payload
// buffer, the size of the largest bulk payload seen (never more than the
// frame limit). It grows as payload bytes actually arrive, doubling from
// 64 KiB, so a header that announces more than it sends costs memory in
// proportion to what was sent, not to what was announced.
type Decoder struct {
	r        *bufio.Reader
	maxFrame int
	getBuf   func(n int) []byte
	err      error

	hdr   [HeaderSize]byte
	small [maxSmallPayload]byte // fixed fields, and whole non-bulk payloads
	buf   []byte                // bulk payloads

	m struct { // one of each message, reused
		hello         Hello
		authChallenge AuthChallenge
		authResponse  AuthResponse
		authResult    AuthResult
		state         State
		data          Data
		trim          Trim
		writeZeroes   WriteZeroes
		barrier       Barrier
		barrierAck    BarrierAck
		recvAck       RecvAck
		writeAck      WriteAck
		negAck        NegAck
		readRequest   ReadRequest
		readReply     ReadReply
		bitmap        Bitmap
		syncUUID      SyncUUID
		resyncRequest ResyncRequest
		resyncReply   ResyncReply
		resyncAck     ResyncAck
		verifyRequest VerifyRequest
		verifyReply   VerifyReply
		ping          Ping
		pingAck       PingAck
		goodbye       Goodbye
	}
}

const (
	readAhead = 16 << 10
	growStep  = 64 << 10
)

// NewDecoder returns a decoder reading frames from r that accepts frames
// whose length field is at most maxFrame (0 or anything above MaxFrame
// means MaxFrame). A connection typically starts small (MaxFixed is
// enough for the handshake) and raises the limit with SetMaxFrame once the
// peers agreed on Hello.MaxPayload.
func NewDecoder(r io.Reader, maxFrame int) *Decoder {
	d := &Decoder{r: bufio.NewReaderSize(r, readAhead)}
	d.SetMaxFrame(maxFrame)
	return d
}

// SetMaxFrame changes the largest frame length the decoder accepts (0 or
// anything above MaxFrame means MaxFrame). To accept Data payloads of up
// to P bytes, use P + MaxFixed.
func (d *Decoder) SetMaxFrame(n int) {
	if n <= 0 || n > MaxFrame {
		n = MaxFrame
	}
	d.maxFrame = n
}

// SetPayloadBuffer makes Next read the payload of every Data, ReadReply
// and ResyncReply into a buffer obtained from get instead of into the decoder's own, so a
// receiver can hand it to the disk without a copy. get is called with the
// payload's size n (1..MaxPayloadSize) once the frame's header and fixed
// fields are valid; it returns a slice of at least n bytes, of which the
// payload takes the first n, or nil to use the decoder's buffer for this
// one. The buffer is the caller's: the decoder never touches it after Next
// returns. If Next then fails (a truncated stream, an invalid field) the
// buffer is not handed back: it is garbage. get(nil) restores the default.
func (d *Decoder) SetPayloadBuffer(get func(n int) []byte) { d.getBuf = get }

// Next reads and decodes the next frame. At a clean end of the stream (no
// byte of a new frame read) it returns io.EOF; a stream that ends inside a
// frame gives an error wrapping io.ErrUnexpectedEOF. Protocol violations
// wrap ErrProtocol (and ErrBadMagic, ErrHeaderChecksum, ErrFrameTooLarge or
// ErrUnknownType where they apply); the checks on the header, including
// the length limit and the type's size bounds, happen before any payload
// byte is read. Read errors of the stream are returned wrapped.
//
// Next allocates nothing for messages without strings once its buffers
// have grown to the traffic's size.
func (d *Decoder) Next() (Message, error) {
	if d.err != nil {
		return nil, d.err
	}
	m, err := d.next()
	if err != nil {
		d.err = err
		return nil, err
	}
	return m, nil
}

func (d *Decoder) next() (Message, error) {
	if _, err := io.ReadFull(d.r, d.hdr[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("replication: reading frame header: %w", err)
	}
	h := d.hdr[:]
	if m := be.Uint32(h[0:]); m != Magic {
		return nil, fmt.Errorf("%w %#08x", ErrBadMagic, m)
	}
	if got, want := be.Uint32(h[12:]), crc32.Checksum(h[:12], castagnoli); got != want {
		return nil, fmt.Errorf("%w: %#08x, computed %#08x", ErrHeaderChecksum, got, want)
	}
	t, flags, length := Type(be.Uint16(h[4:])), be.Uint16(h[6:]), be.Uint32(h[8:])
	if uint64(length) > uint64(d.maxFrame) {
		return nil, fmt.Errorf("%w: %v of %d bytes, limit %d", ErrFrameTooLarge, t, length, d.maxFrame)
	}
	m := d.message(t)
	if m == nil {
		return nil, fmt.Errorf("%w %#04x", ErrUnknownType, uint16(t))
	}
	if flags != 0 {
		return nil, fmt.Errorf("%w: %v: reserved header flags %#04x", ErrProtocol, t, flags)
	}
	lim, n := limitsOf(t), int(length)
	if n < lim.min || n > lim.max {
		if lim.min == lim.max {
			return nil, fmt.Errorf("%w: %v: payload of %d bytes, want %d", ErrProtocol, t, n, lim.min)
		}
		return nil, fmt.Errorf("%w: %v: payload of %d bytes, want %d..%d", ErrProtocol, t, n, lim.min, lim.max)
	}
	fixed := n
	if lim.bulk {
		fixed = lim.fixed
	}
	b := d.small[:fixed]
	if err := readPayload(d.r, b); err != nil {
		return nil, fmt.Errorf("replication: reading %v payload (%d bytes): %w", t, n, err)
	}
	var bulk []byte
	if n > fixed {
		var err error
		if bulk, err = d.readBulk(t, n-fixed); err != nil {
			return nil, fmt.Errorf("replication: reading %v payload (%d bytes): %w", t, n, err)
		}
	}
	if err := m.parse(b, bulk); err != nil {
		return nil, err
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return m, nil
}

// readPayload is io.ReadFull for bytes that must be there: an end of
// stream is io.ErrUnexpectedEOF even before the first byte.
func readPayload(r io.Reader, b []byte) error {
	_, err := io.ReadFull(r, b)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readBulk reads n bulk bytes into the caller's buffer (Data, ReadReply
// and ResyncReply with SetPayloadBuffer) or into d.buf, which grows as bytes arrive.
func (d *Decoder) readBulk(t Type, n int) ([]byte, error) {
	if d.getBuf != nil && (t == TypeData || t == TypeReadReply || t == TypeResyncReply) {
		if b := d.getBuf(n); b != nil {
			if len(b) < n {
				return nil, fmt.Errorf("payload buffer of %d bytes is too short", len(b))
			}
			b = b[:n]
			return b, readPayload(d.r, b)
		}
	}
	if n <= cap(d.buf) {
		b := d.buf[:n]
		return b, readPayload(d.r, b)
	}
	b := d.buf[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(n, max(2*cap(b), growStep)))
			copy(nb, b)
			b = nb
		}
		k, err := io.ReadFull(d.r, b[len(b):cap(b)])
		b = b[:len(b)+k]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			d.buf = b[:0]
			return nil, err
		}
	}
	d.buf = b
	return b, nil
}

// message returns the decoder's reusable message of type t, nil if t is
// unknown.
func (d *Decoder) message(t Type) Message {
	switch t {
	case TypeHello:
		return &d.m.hello
	case TypeAuthChallenge:
		return &d.m.authChallenge
	case TypeAuthResponse:
		return &d.m.authResponse
	case TypeAuthResult:
		return &d.m.authResult
	case TypeState:
		return &d.m.state
	case TypeData:
		return &d.m.data
	case TypeTrim:
		return &d.m.trim
	case TypeWriteZeroes:
		return &d.m.writeZeroes
	case TypeBarrier:
		return &d.m.barrier
	case TypeBarrierAck:
		return &d.m.barrierAck
	case TypeRecvAck:
		return &d.m.recvAck
	case TypeWriteAck:
		return &d.m.writeAck
	case TypeNegAck:
		return &d.m.negAck
	case TypeReadRequest:
		return &d.m.readRequest
	case TypeReadReply:
		return &d.m.readReply
	case TypeBitmap:
		return &d.m.bitmap
	case TypeSyncUUID:
		return &d.m.syncUUID
	case TypeResyncRequest:
		return &d.m.resyncRequest
	case TypeResyncReply:
		return &d.m.resyncReply
	case TypeResyncAck:
		return &d.m.resyncAck
	case TypeVerifyRequest:
		return &d.m.verifyRequest
	case TypeVerifyReply:
		return &d.m.verifyReply
	case TypePing:
		return &d.m.ping
	case TypePingAck:
		return &d.m.pingAck
	case TypeGoodbye:
		return &d.m.goodbye
	}
	return nil
}
