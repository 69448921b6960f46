package replication

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/s2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type sample struct {
	name string
	msg  Message
}

// samples has every message type with typical and edge values. big adds
// the 64 MiB payloads (skipped by the fuzz seeds).
func samples(big bool) []sample {
	name255 := strings.Repeat("n", MaxNameLen)
	s := []sample{
		{"hello", &Hello{ProtoMin: 1, ProtoMax: 1, Resource: "r0", From: "alice", To: "bob", DataSize: 1 << 30,
			Protocol: 'C', Features: FeatureRLE | FeatureTrim | FeatureWriteZeroes, MaxPayload: 1 << 20}},
		{"hello edges", &Hello{ProtoMin: 1, ProtoMax: math.MaxUint32, Resource: name255, From: "ä", To: name255,
			DataSize: 0, Protocol: 'A', Features: math.MaxUint64, MaxPayload: MaxPayloadSize}},
		{"hello min payload", &Hello{ProtoMin: 7, ProtoMax: 7, Resource: "r", From: "a", To: "b",
			DataSize: math.MaxUint64, Protocol: 'B', MaxPayload: MinMaxPayload}},
		{"challenge 16", &AuthChallenge{Nonce: bytes.Repeat([]byte{0xa5}, MinNonceLen)}},
		{"challenge 64", &AuthChallenge{Nonce: bytes.Repeat([]byte{0x5a}, MaxNonceLen)}},
		{"response 1", &AuthResponse{MAC: []byte{0}}},
		{"response 64", &AuthResponse{MAC: bytes.Repeat([]byte{0xff}, MaxMACLen)}},
		{"result ok", &AuthResult{OK: true}},
		{"result fail", &AuthResult{}},
		{"state", &State{Role: 1, Disk: 4, GI: [4]uint64{0x1234, 0, 0x5678, 0x9abc}, MDFlags: 0x81, OutOfSync: 2048,
			Flags: StateDiscardMyData, AfterSB: 0x8123}},
		{"state all ones", &State{Role: 0xff, Disk: 0xff, GI: [4]uint64{math.MaxUint64, math.MaxUint64, math.MaxUint64, math.MaxUint64},
			MDFlags: math.MaxUint32, OutOfSync: math.MaxUint64, Flags: stateFlagsKnown, AfterSB: math.MaxUint16}},
		{"state zero", &State{}},
		{"data 4k", &Data{ID: 42, Epoch: 3, Offset: 1 << 20, Flags: DataFUA, Payload: pattern(4096)}},
		{"data 1 byte at the end", &Data{ID: math.MaxUint64, Epoch: math.MaxUint64, Offset: math.MaxInt64 - 1,
			Flags: DataFUA | DataFlushBefore, Payload: []byte{7}}},
		{"trim", &Trim{ID: 1, Offset: 4096, Length: 1 << 20}},
		{"trim edges", &Trim{ID: math.MaxUint64, Offset: math.MaxInt64 - MaxZeroLength, Length: MaxZeroLength,
			Flags: DataFUA | DataFlushBefore}},
		{"write zeroes", &WriteZeroes{ID: 2, Offset: 0, Length: 1, Flags: DataNoHole | DataFUA}},
		{"write zeroes max", &WriteZeroes{ID: 3, Offset: 8192, Length: MaxZeroLength}},
		{"barrier", &Barrier{ID: 9}},
		{"barrier 0", &Barrier{}},
		{"barrier ack", &BarrierAck{ID: math.MaxUint64}},
		{"recv ack", &RecvAck{ID: 10}},
		{"write ack", &WriteAck{ID: 11}},
		{"neg ack", &NegAck{ID: 12, Errno: 5}},
		{"neg ack max", &NegAck{ID: math.MaxUint64, Errno: math.MaxUint32}},
		{"read request", &ReadRequest{ID: 1, Offset: 512, Length: 4096}},
		{"read request max", &ReadRequest{ID: math.MaxUint64, Offset: math.MaxInt64 - MaxPayloadSize, Length: MaxPayloadSize}},
		{"read reply", &ReadReply{ID: 1, Payload: pattern(4096)}},
		{"read reply error", &ReadReply{ID: 2, Errno: 5}},
		{"bitmap", &Bitmap{Offset: 1 << 20, RLE: []byte{0x80, 0x01, 0x05}}},
		{"bitmap last empty", &Bitmap{Offset: math.MaxUint64, Last: true}},
		{"data s2", &Data{ID: 43, Offset: 8192, Flags: DataCompressS2 | DataFUA, Payload: []byte{1, 2, 3}}},
		{"data zstd", &Data{ID: 44, Offset: 8192, Flags: DataCompressZstd | DataFlushBefore, Payload: []byte{4}}},
		{"data all zero", &Data{ID: 45, Epoch: 1, Offset: 4096, Flags: DataAllZero | DataFUA, ZeroLength: 1 << 20}},
		{"data all zero max", &Data{ID: 46, Offset: math.MaxInt64 - MaxPayloadSize, Flags: DataAllZero, ZeroLength: MaxPayloadSize}},
		{"sync uuid", &SyncUUID{UUID: 0x0123456789abcdef}},
		{"sync uuid zero", &SyncUUID{}},
		{"resync request", &ResyncRequest{ID: 1, Offset: 4096, Length: 1 << 20}},
		{"resync request crc32c", &ResyncRequest{ID: 2, Offset: 0, Length: 4096, Alg: DigestCRC32C, Csum: []byte{1, 2, 3, 4}}},
		{"resync request sha256 max", &ResyncRequest{ID: math.MaxUint64, Offset: math.MaxInt64 - MaxPayloadSize, Length: MaxPayloadSize,
			Alg: DigestSHA256, Csum: bytes.Repeat([]byte{0xee}, 32)}},
		{"resync reply data", &ResyncReply{ID: 1, Payload: pattern(4096)}},
		{"resync reply s2", &ResyncReply{ID: 2, Codec: CodecS2, Payload: []byte{9, 9}}},
		{"resync reply zstd", &ResyncReply{ID: 3, Codec: CodecZstd, Payload: []byte{7}}},
		{"resync reply in sync", &ResyncReply{ID: 4, Status: StatusInSync}},
		{"resync reply zero", &ResyncReply{ID: 5, Status: StatusZero}},
		{"resync reply error", &ResyncReply{ID: 6, Status: StatusError, Errno: 5}},
		{"resync reply alg mismatch", &ResyncReply{ID: 7, Status: StatusAlgMismatch}},
		{"resync ack", &ResyncAck{ID: 8, Offset: 1 << 20, Length: 4096}},
		{"resync ack failed", &ResyncAck{ID: math.MaxUint64, Offset: math.MaxInt64 - MaxPayloadSize, Length: MaxPayloadSize, Errno: 28}},
		{"verify request", &VerifyRequest{ID: 1, Offset: 8192, Length: 3 * 4096, Alg: DigestMD5, Digests: pattern(3 * 16)}},
		{"verify request short block", &VerifyRequest{ID: 2, Offset: 0, Length: 4097, Alg: DigestSHA1, Digests: pattern(2 * 20)}},
		{"verify reply", &VerifyReply{ID: 1, Mismatch: []byte{0x05}}},
		{"verify reply max", &VerifyReply{ID: 2, Mismatch: pattern(maxVerifyMask)}},
		{"verify reply error", &VerifyReply{ID: 3, Status: StatusError, Errno: 5}},
		{"verify reply alg mismatch", &VerifyReply{ID: 4, Status: StatusAlgMismatch}},
		{"ping", &Ping{}},
		{"ping ack", &PingAck{}},
		{"goodbye", &Goodbye{Reason: "disconnect requested"}},
		{"goodbye empty", &Goodbye{}},
		{"goodbye max", &Goodbye{Reason: strings.Repeat("é", MaxReasonLen/2)}},
	}
	if big {
		s = append(s,
			sample{"data 64 MiB", &Data{ID: 5, Payload: pattern(MaxPayloadSize)}},
			sample{"read reply 64 MiB", &ReadReply{ID: 6, Payload: pattern(MaxPayloadSize)}},
			sample{"bitmap 64 MiB", &Bitmap{RLE: pattern(MaxPayloadSize)}},
			sample{"resync reply 64 MiB", &ResyncReply{ID: 7, Payload: pattern(MaxPayloadSize)}},
			sample{"verify request 64 MiB", &VerifyRequest{ID: 3, Offset: 0, Length: MaxPayloadSize, Alg: DigestSHA256, Digests: pattern(maxVerifyDigests)}},
		)
	}
	return s
}

// s2Block is n zero bytes compressed with s2.
func s2Block(n int) []byte { return s2.Encode(nil, make([]byte, n)) }

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func encode(t testing.TB, m Message) []byte {
	t.Helper()
	b, err := Append(nil, m)
	require.NoError(t, err)
	return b
}

func decodeOne(t testing.TB, b []byte) (Message, error) {
	t.Helper()
	return NewDecoder(bytes.NewReader(b), 0).Next()
}

func TestRoundTrip(t *testing.T) {
	seen := map[Type]bool{}
	for _, s := range samples(!testing.Short()) {
		t.Run(s.name, func(t *testing.T) {
			seen[s.msg.Type()] = true
			prefix := []byte("prefix")
			b, err := Append(prefix, s.msg)
			require.NoError(t, err)
			require.Equal(t, "prefix", string(b[:6]), "Append appends")
			frame := b[6:]
			assert.Equal(t, Magic, binary.BigEndian.Uint32(frame))
			assert.Equal(t, uint16(s.msg.Type()), binary.BigEndian.Uint16(frame[4:]))
			assert.Equal(t, len(frame)-HeaderSize, int(binary.BigEndian.Uint32(frame[8:])))

			head, bulk, err := AppendSplit(nil, s.msg)
			require.NoError(t, err)
			assert.Equal(t, frame, append(head, bulk...), "AppendSplit + bulk == Append")

			d := NewDecoder(bytes.NewReader(frame), 0)
			got, err := d.Next()
			require.NoError(t, err)
			assert.Equal(t, s.msg, got)
			_, err = d.Next()
			assert.Equal(t, io.EOF, err)
		})
	}
	for _, typ := range allTypes {
		assert.True(t, seen[typ], "no sample of %v", typ)
	}
}

var allTypes = []Type{
	TypeHello, TypeAuthChallenge, TypeAuthResponse, TypeAuthResult, TypeState,
	TypeData, TypeTrim, TypeWriteZeroes, TypeBarrier, TypeBarrierAck, TypeRecvAck, TypeWriteAck, TypeNegAck,
	TypeReadRequest, TypeReadReply, TypeBitmap, TypeSyncUUID, TypeResyncRequest, TypeResyncReply, TypeResyncAck,
	TypeVerifyRequest, TypeVerifyReply, TypePing, TypePingAck, TypeGoodbye,
}

// TestGoldenBytes pins the layout that docs/wire-protocol.md describes.
func TestGoldenBytes(t *testing.T) {
	for _, tc := range []struct {
		msg Message
		hex string
	}{
		{&WriteAck{ID: 0x0102030405060708}, "74776270 0321 0000 00000008 24d7e681 0102030405060708"},
		{&Data{ID: 1, Epoch: 2, Offset: 0x1000, Flags: DataFUA, Payload: []byte{0xde, 0xad}},
			"74776270 0300 0000 0000001e 47706973 0000000000000001 0000000000000002 0000000000001000 00000001 dead"},
		{&Hello{ProtoMin: 1, ProtoMax: 2, Resource: "r0", From: "a", To: "b", DataSize: 0x100000, Protocol: 'C',
			Features: FeatureRLE | FeatureTrim, MaxPayload: 0x10000},
			"74776270 0100 0000 00000024 8e09f2b4 00000001 00000002 0000000000100000 0000000000000009 00010000 43 02 7230 01 61 01 62"},
		{&State{Role: 1, Disk: 8, GI: [4]uint64{0xa, 0xb, 0xc, 0xd}, MDFlags: 0x81, OutOfSync: 3, Flags: StateCrashedPrimary, Epoch: 7},
			"74776270 0200 0000 0000003c cfcaea7d 01 08 0000 00000081 000000000000000a 000000000000000b 000000000000000c 000000000000000d 0000000000000003 00000002 0000000000000007"},
		{&Ping{}, "74776270 0f00 0000 00000000 9870978c"},
		{&Data{ID: 3, Offset: 0x1000, Flags: DataAllZero, ZeroLength: 0x10000},
			"74776270 0300 0000 00000020 dbeb9fe5 0000000000000003 0000000000000000 0000000000001000 00000020 00010000"},
		{&SyncUUID{UUID: 0x1122334455667788}, "74776270 0501 0000 00000008 aae91d1f 1122334455667788"},
		{&ResyncRequest{ID: 1, Offset: 0x2000, Length: 0x1000, Alg: DigestCRC32C, Csum: []byte{0xca, 0xfe, 0xba, 0xbe}},
			"74776270 0510 0000 0000001c 89759b01 0000000000000001 0000000000002000 00001000 01 000000 cafebabe"},
		{&ResyncReply{ID: 1, Codec: CodecS2, Payload: []byte{0xab}},
			"74776270 0511 0000 00000011 5e5efb1a 0000000000000001 00 01 0000 00000000 ab"},
		{&ResyncAck{ID: 1, Offset: 0x2000, Length: 0x1000, Errno: 5},
			"74776270 0512 0000 00000018 9ee9558e 0000000000000001 0000000000002000 00001000 00000005"},
		{&VerifyReply{ID: 2, Mismatch: []byte{0x05}},
			"74776270 0521 0000 00000011 ff5e8201 0000000000000002 00 000000 00000000 05"},
	} {
		want, err := hex.DecodeString(strings.ReplaceAll(tc.hex, " ", ""))
		require.NoError(t, err)
		assert.Equal(t, hex.EncodeToString(want), hex.EncodeToString(encode(t, tc.msg)), "%v", tc.msg.Type())
	}
}

// frame builds a frame by hand with a correct header checksum.
func frame(t Type, flags uint16, payload []byte) []byte {
	b := make([]byte, HeaderSize, HeaderSize+len(payload))
	putHeader(b, t, flags, uint32(len(payload)))
	return append(b, payload...)
}

// frameLen is a header announcing length bytes, with a correct checksum.
func frameLen(t Type, length uint32) []byte {
	b := make([]byte, HeaderSize)
	putHeader(b, t, 0, length)
	return b
}

func u64(v ...uint64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.BigEndian.AppendUint64(b, x)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// zeroRange is a Trim/WriteZeroes payload.
func zeroRange(id, off uint64, length, flags uint32) []byte {
	return cat(u64(id, off), u32(length), u32(flags))
}

func TestDecodeMalformed(t *testing.T) {
	good := encode(t, &WriteAck{ID: 1})
	badMagic := bytes.Clone(good)
	badMagic[0] = 'T'
	badCRC := bytes.Clone(good)
	badCRC[15] ^= 1
	lengthFlipped := bytes.Clone(good) // a bit flip in the header: the CRC catches it
	lengthFlipped[11] ^= 0x10
	helloPayload := encode(t, &Hello{ProtoMin: 1, ProtoMax: 1, Resource: "r0", From: "a", To: "b", Protocol: 'C', MaxPayload: 4096})[HeaderSize:]
	helloCut := helloPayload[:len(helloPayload)-2] // without To
	dataFixed := u64(1, 0, 0)

	for _, tc := range []struct {
		name string
		in   []byte
		want error
		max  int
	}{
		{"bad magic", badMagic, ErrBadMagic, 0},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrBadMagic, 0},
		{"bad header CRC", badCRC, ErrHeaderChecksum, 0},
		{"header bit flip", lengthFlipped, ErrHeaderChecksum, 0},
		{"unknown type", frame(0x0999, 0, nil), ErrUnknownType, 0},
		{"type zero", frame(0, 0, nil), ErrUnknownType, 0},
		{"frame too large", frameLen(TypeData, MaxFrame+1), ErrFrameTooLarge, 0},
		{"frame too large, max length", frameLen(TypeData, math.MaxUint32), ErrFrameTooLarge, 0},
		{"frame over the decoder's limit", frameLen(TypeData, 8192+dataFixedLen), ErrFrameTooLarge, 8192},
		{"unknown type too large", frameLen(0x7777, MaxFrame+1), ErrFrameTooLarge, 0},
		{"truncated header", good[:7], io.ErrUnexpectedEOF, 0},
		{"header without payload", good[:HeaderSize], io.ErrUnexpectedEOF, 0},
		{"truncated fixed fields", good[:HeaderSize+3], io.ErrUnexpectedEOF, 0},
		{"truncated payload", cat(frameLen(TypeData, dataFixedLen+4096), u64(1, 2, 3), u32(0), make([]byte, 100)), io.ErrUnexpectedEOF, 0},
		{"truncated after fixed fields", cat(frameLen(TypeData, dataFixedLen+4096), u64(1, 2, 3), u32(0)), io.ErrUnexpectedEOF, 0},
		{"nonzero reserved header flags", frame(TypeWriteAck, 1, u64(1)), ErrProtocol, 0},
		{"header flag high bit", frame(TypePing, 0x8000, nil), ErrProtocol, 0},
		{"goodbye too long", frame(TypeGoodbye, 0, bytes.Repeat([]byte{'x'}, MaxReasonLen+1)), ErrProtocol, 0},
		{"goodbye not UTF-8", frame(TypeGoodbye, 0, []byte{0xff, 0xfe}), ErrProtocol, 0},
		{"hello name runs past the end", frame(TypeHello, 0, cat(helloCut, []byte{9, 'x'})), ErrProtocol, 0},
		{"hello trailing bytes", frame(TypeHello, 0, append(bytes.Clone(helloPayload), 0)), ErrProtocol, 0},
		{"hello empty name", frame(TypeHello, 0, cat(helloCut, []byte{0})), ErrProtocol, 0},
		{"hello too long", frame(TypeHello, 0, make([]byte, helloMaxPayload+1)), ErrProtocol, 0},
		{"hello protocol D", frame(TypeHello, 0, setByte(helloPayload, 28, 'D')), ErrProtocol, 0},
		{"hello versions reversed", frame(TypeHello, 0, setByte(helloPayload, 3, 9)), ErrProtocol, 0},
		{"hello version zero", frame(TypeHello, 0, setByte(setByte(helloPayload, 3, 0), 7, 0)), ErrProtocol, 0},
		{"hello max payload zero", frame(TypeHello, 0, setByte(setByte(helloPayload, 25, 0), 26, 0)), ErrProtocol, 0},
		{"nonce too short", frame(TypeAuthChallenge, 0, make([]byte, MinNonceLen-1)), ErrProtocol, 0},
		{"nonce too long", frame(TypeAuthChallenge, 0, make([]byte, MaxNonceLen+1)), ErrProtocol, 0},
		{"empty MAC", frame(TypeAuthResponse, 0, nil), ErrProtocol, 0},
		{"MAC too long", frame(TypeAuthResponse, 0, make([]byte, MaxMACLen+1)), ErrProtocol, 0},
		{"auth result 2", frame(TypeAuthResult, 0, []byte{2}), ErrProtocol, 0},
		{"trailing bytes in a fixed-size message", frame(TypeWriteAck, 0, u64(1, 2)), ErrProtocol, 0},
		{"trailing byte in ping", frame(TypePing, 0, []byte{0}), ErrProtocol, 0},
		{"short barrier", frame(TypeBarrier, 0, []byte{1, 2, 3}), ErrProtocol, 0},
		{"state unknown flags", frame(TypeState, 0, setByte(encode(t, &State{})[HeaderSize:], 51, 0x10)), ErrProtocol, 0},
		{"zero length trim", frame(TypeTrim, 0, zeroRange(1, 0, 0, 0)), ErrProtocol, 0},
		{"zero length write zeroes", frame(TypeWriteZeroes, 0, zeroRange(1, 0, 0, 0)), ErrProtocol, 0},
		{"trim over 2^31", frame(TypeTrim, 0, zeroRange(1, 0, MaxZeroLength+1, 0)), ErrProtocol, 0},
		{"trim offset overflow", frame(TypeTrim, 0, zeroRange(1, math.MaxUint64-10, 100, 0)), ErrProtocol, 0},
		{"trim past int64", frame(TypeTrim, 0, zeroRange(1, math.MaxInt64, 1, 0)), ErrProtocol, 0},
		{"trim with no-hole", frame(TypeTrim, 0, zeroRange(1, 0, 4096, uint32(DataNoHole))), ErrProtocol, 0},
		{"write zeroes unknown flag", frame(TypeWriteZeroes, 0, zeroRange(1, 0, 4096, 1<<3)), ErrProtocol, 0},
		{"data offset overflow", frame(TypeData, 0, cat(u64(1, 0, math.MaxInt64), u32(0), []byte{1})), ErrProtocol, 0},
		{"data without payload", frame(TypeData, 0, cat(dataFixed, u32(0))), ErrProtocol, 0},
		{"data reserved flags", frame(TypeData, 0, cat(dataFixed, u32(1<<31), []byte{1})), ErrProtocol, 0},
		{"data with no-hole", frame(TypeData, 0, cat(dataFixed, u32(uint32(DataNoHole)), []byte{1})), ErrProtocol, 0},
		{"neg ack errno 0", frame(TypeNegAck, 0, cat(u64(1), u32(0))), ErrProtocol, 0},
		{"read request zero length", frame(TypeReadRequest, 0, cat(u64(1, 0), u32(0))), ErrProtocol, 0},
		{"read request over 64 MiB", frame(TypeReadRequest, 0, cat(u64(1, 0), u32(MaxPayloadSize+1))), ErrProtocol, 0},
		{"read request offset overflow", frame(TypeReadRequest, 0, cat(u64(1, math.MaxUint64), u32(1))), ErrProtocol, 0},
		{"read reply no data no error", frame(TypeReadReply, 0, cat(u64(1), u32(0))), ErrProtocol, 0},
		{"read reply error with data", frame(TypeReadReply, 0, cat(u64(1), u32(5), []byte{1})), ErrProtocol, 0},
		{"bitmap last 2", frame(TypeBitmap, 0, cat(u64(0), []byte{2})), ErrProtocol, 0},
		{"data two compressions", frame(TypeData, 0, cat(dataFixed, u32(uint32(DataCompressS2|DataCompressZstd)), []byte{1})), ErrProtocol, 0},
		{"data all zero without length", frame(TypeData, 0, cat(dataFixed, u32(uint32(DataAllZero)), []byte{1})), ErrProtocol, 0},
		{"data all zero length 0", frame(TypeData, 0, cat(dataFixed, u32(uint32(DataAllZero)), u32(0))), ErrProtocol, 0},
		{"data all zero over 64 MiB", frame(TypeData, 0, cat(dataFixed, u32(uint32(DataAllZero)), u32(MaxPayloadSize+1))), ErrProtocol, 0},
		{"data all zero compressed", frame(TypeData, 0, cat(dataFixed, u32(uint32(DataAllZero|DataCompressS2)), u32(1))), ErrProtocol, 0},
		{"data unknown flag 6", frame(TypeData, 0, cat(dataFixed, u32(1<<6), []byte{1})), ErrProtocol, 0},
		{"sync uuid short", frame(TypeSyncUUID, 0, []byte{1, 2, 3, 4}), ErrProtocol, 0},
		{"resync request unknown alg", frame(TypeResyncRequest, 0, cat(u64(1, 0), u32(4096), []byte{5, 0, 0, 0})), ErrProtocol, 0},
		{"resync request csum of the wrong size", frame(TypeResyncRequest, 0, cat(u64(1, 0), u32(4096), []byte{1, 0, 0, 0}, make([]byte, 5))), ErrProtocol, 0},
		{"resync request csum without alg", frame(TypeResyncRequest, 0, cat(u64(1, 0), u32(4096), []byte{0, 0, 0, 0}, make([]byte, 4))), ErrProtocol, 0},
		{"resync request reserved", frame(TypeResyncRequest, 0, cat(u64(1, 0), u32(4096), []byte{0, 0, 1, 0})), ErrProtocol, 0},
		{"resync request zero length", frame(TypeResyncRequest, 0, cat(u64(1, 0), u32(0), []byte{0, 0, 0, 0})), ErrProtocol, 0},
		{"resync request too long", frame(TypeResyncRequest, 0, cat(u64(1, 0), u32(4096), []byte{4, 0, 0, 0}, make([]byte, 33))), ErrProtocol, 0},
		{"resync reply unknown status", frame(TypeResyncReply, 0, cat(u64(1), []byte{5, 0, 0, 0}, u32(0))), ErrProtocol, 0},
		{"resync reply unknown codec", frame(TypeResyncReply, 0, cat(u64(1), []byte{0, 3, 0, 0}, u32(0), []byte{1})), ErrProtocol, 0},
		{"resync reply ok without data", frame(TypeResyncReply, 0, cat(u64(1), []byte{0, 0, 0, 0}, u32(0))), ErrProtocol, 0},
		{"resync reply in sync with data", frame(TypeResyncReply, 0, cat(u64(1), []byte{1, 0, 0, 0}, u32(0), []byte{1})), ErrProtocol, 0},
		{"resync reply zero compressed", frame(TypeResyncReply, 0, cat(u64(1), []byte{2, 1, 0, 0}, u32(0))), ErrProtocol, 0},
		{"resync reply error without errno", frame(TypeResyncReply, 0, cat(u64(1), []byte{3, 0, 0, 0}, u32(0))), ErrProtocol, 0},
		{"resync reply errno without error", frame(TypeResyncReply, 0, cat(u64(1), []byte{0, 0, 0, 0}, u32(5), []byte{1})), ErrProtocol, 0},
		{"resync reply reserved", frame(TypeResyncReply, 0, cat(u64(1), []byte{1, 0, 0, 9}, u32(0))), ErrProtocol, 0},
		{"resync ack zero length", frame(TypeResyncAck, 0, cat(u64(1, 0), u32(0), u32(0))), ErrProtocol, 0},
		{"resync ack offset overflow", frame(TypeResyncAck, 0, cat(u64(1, math.MaxInt64), u32(1), u32(0))), ErrProtocol, 0},
		{"verify request no alg", frame(TypeVerifyRequest, 0, cat(u64(1, 0), u32(4096), []byte{0, 0, 0, 0}, make([]byte, 4))), ErrProtocol, 0},
		{"verify request unknown alg", frame(TypeVerifyRequest, 0, cat(u64(1, 0), u32(4096), []byte{9, 0, 0, 0}, make([]byte, 4))), ErrProtocol, 0},
		{"verify request digests short", frame(TypeVerifyRequest, 0, cat(u64(1, 0), u32(8192), []byte{1, 0, 0, 0}, make([]byte, 4))), ErrProtocol, 0},
		{"verify request digests long", frame(TypeVerifyRequest, 0, cat(u64(1, 0), u32(4096), []byte{1, 0, 0, 0}, make([]byte, 8))), ErrProtocol, 0},
		{"verify request over 64 MiB", frame(TypeVerifyRequest, 0, cat(u64(1, 0), u32(MaxPayloadSize+1), []byte{1, 0, 0, 0}, make([]byte, 4))), ErrProtocol, 0},
		{"verify reply in sync", frame(TypeVerifyReply, 0, cat(u64(1), []byte{1, 0, 0, 0}, u32(0))), ErrProtocol, 0},
		{"verify reply ok without bits", frame(TypeVerifyReply, 0, cat(u64(1), []byte{0, 0, 0, 0}, u32(0))), ErrProtocol, 0},
		{"verify reply error with bits", frame(TypeVerifyReply, 0, cat(u64(1), []byte{3, 0, 0, 0}, u32(5), []byte{1})), ErrProtocol, 0},
		{"verify reply too many bits", frame(TypeVerifyReply, 0, cat(u64(1), []byte{0, 0, 0, 0}, u32(0), make([]byte, maxVerifyMask+1))), ErrProtocol, 0},
		{"verify reply reserved", frame(TypeVerifyReply, 0, cat(u64(1), []byte{0, 1, 0, 0}, u32(0), []byte{1})), ErrProtocol, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder(bytes.NewReader(tc.in), tc.max)
			m, err := d.Next()
			require.Error(t, err)
			assert.Nil(t, m)
			assert.ErrorIs(t, err, tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "replication: "), "error %q lacks the package prefix", err)
			if !errors.Is(tc.want, io.ErrUnexpectedEOF) {
				assert.ErrorIs(t, err, ErrProtocol, "every violation is an ErrProtocol")
			}
			_, again := d.Next()
			assert.Equal(t, err, again, "errors are sticky")
			t.Log(err)
		})
	}
}

const dataFixedLen = dataFixed

func setByte(b []byte, i int, v byte) []byte {
	b = bytes.Clone(b)
	b[i] = v
	return b
}

func TestDecodeCleanEOF(t *testing.T) {
	_, err := NewDecoder(bytes.NewReader(nil), 0).Next()
	assert.Equal(t, io.EOF, err, "a stream that ends between frames gives io.EOF itself")

	boom := errors.New("boom")
	_, err = NewDecoder(iotest.ErrReader(boom), 0).Next()
	assert.ErrorIs(t, err, boom)
	assert.NotErrorIs(t, err, ErrProtocol)
}

// A header announcing a 64 MiB write that never comes costs the decoder
// what arrived, not what was announced.
func TestDecoderGrowsWithTheBytesThatArrive(t *testing.T) {
	in := cat(frameLen(TypeData, dataFixed+MaxPayloadSize), u64(1, 2, 3), u32(0), make([]byte, 1000))
	d := NewDecoder(bytes.NewReader(in), 0)
	_, err := d.Next()
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.LessOrEqual(t, cap(d.buf), growStep)

	// A real big payload grows the buffer to exactly its size, and reuses it.
	big := &Data{ID: 1, Payload: pattern(5 << 20)}
	small := &Data{ID: 2, Payload: pattern(1000)}
	d = NewDecoder(bytes.NewReader(cat(encode(t, big), encode(t, small), encode(t, big))), 0)
	for _, want := range []*Data{big, small, big} {
		m, err := d.Next()
		require.NoError(t, err)
		assert.Equal(t, want, m)
		assert.Equal(t, 5<<20, cap(d.buf))
	}
}

func TestSetMaxFrame(t *testing.T) {
	msg := &Data{ID: 1, Payload: make([]byte, 8192)}
	in := cat(encode(t, &Hello{ProtoMin: 1, ProtoMax: 1, Resource: "r0", From: "a", To: "b", Protocol: 'C', MaxPayload: 8192}), encode(t, msg))

	d := NewDecoder(bytes.NewReader(in), MaxFixed)
	_, err := d.Next()
	require.NoError(t, err)
	_, err = d.Next()
	assert.ErrorIs(t, err, ErrFrameTooLarge)

	d = NewDecoder(bytes.NewReader(in), MaxFixed)
	_, err = d.Next()
	require.NoError(t, err)
	d.SetMaxFrame(8192 + MaxFixed)
	m, err := d.Next()
	require.NoError(t, err)
	assert.Equal(t, msg, m)

	d.SetMaxFrame(-1)
	assert.Equal(t, MaxFrame, d.maxFrame)
	d.SetMaxFrame(MaxFrame + 1)
	assert.Equal(t, MaxFrame, d.maxFrame)
}

func TestSetPayloadBuffer(t *testing.T) {
	data := &Data{ID: 1, Offset: 4096, Payload: pattern(4096)}
	reply := &ReadReply{ID: 2, Payload: pattern(512)}
	bm := &Bitmap{Offset: 0, Last: true, RLE: []byte{1, 2, 3}}
	in := cat(encode(t, data), encode(t, reply), encode(t, bm), encode(t, data))

	var handed [][]byte
	d := NewDecoder(bytes.NewReader(in), 0)
	d.SetPayloadBuffer(func(n int) []byte {
		if n == 512 {
			return nil // this one in the decoder's buffer
		}
		b := make([]byte, n+100)
		handed = append(handed, b)
		return b
	})
	m, err := d.Next()
	require.NoError(t, err)
	assert.Equal(t, data, m)
	require.Len(t, handed, 1)
	assert.Same(t, &handed[0][0], &m.(*Data).Payload[0], "the payload is in the caller's buffer")

	m, err = d.Next()
	require.NoError(t, err)
	assert.Equal(t, reply, m)
	assert.Same(t, &d.buf[0], &m.(*ReadReply).Payload[0], "nil: the decoder's buffer")

	m, err = d.Next()
	require.NoError(t, err)
	assert.Equal(t, bm, m, "bitmaps never use the caller's buffer")
	assert.Len(t, handed, 1)

	m, err = d.Next()
	require.NoError(t, err)
	assert.Equal(t, data, m)
	require.Len(t, handed, 2)
	assert.Equal(t, data.Payload, handed[0][:4096], "an earlier buffer is never touched again")

	d = NewDecoder(bytes.NewReader(in), 0)
	d.SetPayloadBuffer(func(n int) []byte { return make([]byte, n-1) })
	_, err = d.Next()
	assert.ErrorContains(t, err, "too short")
}

func TestAppendRejectsInvalid(t *testing.T) {
	for _, m := range []Message{
		&Hello{ProtoMin: 1, ProtoMax: 1, Resource: strings.Repeat("x", 256), From: "a", To: "b", Protocol: 'C', MaxPayload: 4096},
		&Hello{ProtoMin: 1, ProtoMax: 1, Resource: "r0", From: "", To: "b", Protocol: 'C', MaxPayload: 4096},
		&Hello{ProtoMin: 1, ProtoMax: 1, Resource: "r0", From: "a", To: "b", Protocol: 'C', MaxPayload: MaxPayloadSize + 1},
		&Hello{ProtoMin: 1, ProtoMax: 1, Resource: "r0", From: "a", To: "\xff", Protocol: 'C', MaxPayload: 4096},
		&AuthChallenge{Nonce: make([]byte, 15)},
		&AuthResponse{},
		&State{Flags: 1 << 20},
		&Data{ID: 1},
		&Data{ID: 1, Payload: make([]byte, MaxPayloadSize+1)},
		&Data{ID: 1, Offset: math.MaxInt64, Payload: []byte{1}},
		&Trim{ID: 1},
		&WriteZeroes{ID: 1, Length: 1, Flags: 1 << 5},
		&NegAck{ID: 1},
		&ReadRequest{ID: 1, Length: MaxPayloadSize + 1},
		&ReadReply{ID: 1},
		&Goodbye{Reason: strings.Repeat("x", MaxReasonLen+1)},
	} {
		dst := []byte("keep")
		out, err := Append(dst, m)
		assert.ErrorIs(t, err, ErrProtocol, "%v %+v", m.Type(), m)
		assert.Equal(t, "keep", string(out))
		_, _, err = AppendSplit(nil, m)
		assert.ErrorIs(t, err, ErrProtocol)
	}
}

// randomMessage makes a valid message of a random type.
func randomMessage(r *rand.Rand) Message {
	id := r.Uint64()
	off := r.Uint64N(1 << 40)
	payload := func() []byte {
		b := make([]byte, 1+r.IntN(3*4096))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	switch r.IntN(25) {
	case 0:
		return &Hello{ProtoMin: 1, ProtoMax: 1 + r.Uint32N(5), Resource: "r0", From: "alice", To: "bob",
			DataSize: r.Uint64(), Protocol: "ABC"[r.IntN(3)], Features: Features(r.Uint64()), MaxPayload: MinMaxPayload + r.Uint32N(1<<20)}
	case 1:
		return &AuthChallenge{Nonce: bytes.Repeat([]byte{byte(id)}, MinNonceLen+r.IntN(MaxNonceLen-MinNonceLen+1))}
	case 2:
		return &AuthResponse{MAC: bytes.Repeat([]byte{byte(id)}, 1+r.IntN(MaxMACLen))}
	case 3:
		return &AuthResult{OK: r.IntN(2) == 0}
	case 4:
		return &State{Role: byte(id), Disk: byte(off), GI: [4]uint64{r.Uint64(), r.Uint64(), r.Uint64(), r.Uint64()},
			MDFlags: r.Uint32(), OutOfSync: r.Uint64(), Flags: StateFlags(r.Uint32()) & stateFlagsKnown}
	case 5, 6, 7:
		return &Data{ID: id, Epoch: r.Uint64(), Offset: off, Flags: DataFlags(r.IntN(4)), Payload: payload()}
	case 8:
		return &Trim{ID: id, Offset: off, Length: 1 + r.Uint32N(MaxZeroLength), Flags: DataFlags(r.IntN(4))}
	case 9:
		return &WriteZeroes{ID: id, Offset: off, Length: 1 + r.Uint32N(MaxZeroLength), Flags: DataFlags(r.IntN(8))}
	case 10:
		return &Barrier{ID: id}
	case 11:
		return &BarrierAck{ID: id}
	case 12:
		return &RecvAck{ID: id}
	case 13, 14:
		return &WriteAck{ID: id}
	case 15:
		return &NegAck{ID: id, Errno: 1 + r.Uint32N(200)}
	case 16:
		if r.IntN(2) == 0 {
			return &ReadRequest{ID: id, Offset: off, Length: 1 + r.Uint32N(MaxPayloadSize)}
		}
		return &ReadReply{ID: id, Payload: payload()}
	case 17:
		return &Bitmap{Offset: off, Last: r.IntN(2) == 0, RLE: payload()}
	case 18:
		return &SyncUUID{UUID: id}
	case 19:
		alg := DigestAlg(r.IntN(int(lastDigestAlg) + 1))
		return &ResyncRequest{ID: id, Offset: off, Length: 1 + r.Uint32N(MaxPayloadSize), Alg: alg, Csum: nilIfEmpty(make([]byte, alg.Size()))}
	case 20:
		switch st := SyncStatus(r.IntN(int(lastSyncStatus) + 1)); st {
		case StatusOK:
			return &ResyncReply{ID: id, Codec: Codec(r.IntN(int(lastCodec) + 1)), Payload: payload()}
		case StatusError:
			return &ResyncReply{ID: id, Status: st, Errno: 1 + r.Uint32N(200)}
		default:
			return &ResyncReply{ID: id, Status: st}
		}
	case 21:
		return &ResyncAck{ID: id, Offset: off, Length: 1 + r.Uint32N(MaxPayloadSize), Errno: r.Uint32N(2) * 5}
	case 22:
		alg := DigestAlg(1 + r.IntN(int(lastDigestAlg)))
		n := 1 + r.Uint32N(64<<10)
		return &VerifyRequest{ID: id, Offset: off, Length: n, Alg: alg, Digests: make([]byte, int(blocksOf(int64(n)))*alg.Size())}
	case 23:
		if r.IntN(4) == 0 {
			return &VerifyReply{ID: id, Status: StatusError, Errno: 5}
		}
		return &VerifyReply{ID: id, Mismatch: []byte{byte(r.Uint32())}}
	default:
		switch r.IntN(3) {
		case 0:
			return &Ping{}
		case 1:
			return &PingAck{}
		}
		return &Goodbye{Reason: strings.Repeat("bye ", r.IntN(256))}
	}
}

func randomMessages(seed uint64, n int) []Message {
	r := rand.New(rand.NewPCG(seed, 1))
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = randomMessage(r)
	}
	return msgs
}

// requireStream decodes len(want) messages from d, then expects io.EOF.
func requireStream(t *testing.T, d *Decoder, want []Message) {
	t.Helper()
	for i, w := range want {
		got, err := d.Next()
		require.NoError(t, err, "message %d", i)
		require.Equal(t, w, got, "message %d", i)
	}
	_, err := d.Next()
	require.Equal(t, io.EOF, err)
}

func TestStreamOfMixedMessages(t *testing.T) {
	msgs := randomMessages(1, 2000)
	var stream []byte
	for _, m := range msgs {
		var err error
		stream, err = Append(stream, m)
		require.NoError(t, err)
	}
	for name, r := range map[string]func() io.Reader{
		"bytes.Reader": func() io.Reader { return bytes.NewReader(stream) },
		"one byte":     func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":         func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"data err":     func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
	} {
		t.Run(name, func(t *testing.T) { requireStream(t, NewDecoder(r(), 0), msgs) })
	}
}

func TestStreamOverNetPipe(t *testing.T) {
	msgs := randomMessages(2, 2000)
	client, server := net.Pipe()
	defer server.Close()
	errc := make(chan error, 1)
	go func() {
		defer client.Close()
		var buf []byte
		for _, m := range msgs {
			// Both ways of sending: one buffer, or header and bulk apart.
			var err error
			if _, ok := m.(*Data); ok {
				var bulk []byte
				if buf, bulk, err = AppendSplit(buf[:0], m); err == nil {
					bufs := net.Buffers{buf, bulk}
					_, err = bufs.WriteTo(client)
				}
			} else if buf, err = Append(buf[:0], m); err == nil {
				_, err = client.Write(buf)
			}
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	requireStream(t, NewDecoder(server, 0), msgs)
	require.NoError(t, <-errc)
}

func TestTypeString(t *testing.T) {
	names := map[string]bool{}
	for _, typ := range allTypes {
		s := typ.String()
		assert.NotContains(t, s, "Type(")
		assert.False(t, names[s], "duplicate name %s", s)
		names[s] = true
		msg := NewDecoder(nil, 0).message(typ)
		require.NotNil(t, msg, "%v", typ)
		assert.Equal(t, typ, msg.Type())
		lim := limitsOf(typ)
		assert.LessOrEqual(t, lim.min, lim.max, "%v", typ)
		assert.LessOrEqual(t, lim.fixed, MaxFixed, "%v", typ)
		if !lim.bulk {
			assert.LessOrEqual(t, lim.max, maxSmallPayload, "%v", typ)
		}
	}
	assert.Equal(t, "Data", TypeData.String())
	assert.Equal(t, "Type(0x1234)", Type(0x1234).String())
	assert.Equal(t, "fua|no-hole", (DataFUA | DataNoHole).String())
	assert.Equal(t, "none", DataFlags(0).String())
	assert.Equal(t, "rle|write-zeroes|0x100", (FeatureRLE | FeatureWriteZeroes | 1<<8).String())
	assert.Equal(t, "discard-my-data|crashed-primary", (StateDiscardMyData | StateCrashedPrimary).String())
	assert.Equal(t, "user-paused|verify-source", (StateUserPaused | StateVerifySource).String())
	assert.Equal(t, "fua|compress-s2|compress-zstd|all-zero", (DataFUA | DataCompressS2 | DataCompressZstd | DataAllZero).String())
	assert.Equal(t, "ResyncRequest", TypeResyncRequest.String())
	for a, want := range []string{"none", "crc32c", "md5", "sha1", "sha256", "DigestAlg(5)"} {
		assert.Equal(t, want, DigestAlg(a).String())
	}
	assert.Equal(t, []int{0, 4, 16, 20, 32, 0}, []int{DigestNone.Size(), DigestCRC32C.Size(), DigestMD5.Size(), DigestSHA1.Size(),
		DigestSHA256.Size(), DigestAlg(5).Size()})
	for c, want := range []string{"none", "s2", "zstd", "Codec(3)"} {
		assert.Equal(t, want, Codec(c).String())
	}
	for st, want := range []string{"ok", "in-sync", "zero", "error", "alg-mismatch", "SyncStatus(5)"} {
		assert.Equal(t, want, SyncStatus(st).String())
	}
}

func TestChallengeResponse(t *testing.T) {
	secret := []byte(`Foo "Fun" Factory`)
	nonce := NewNonce()
	require.Len(t, nonce, NonceLen)
	assert.NotEqual(t, nonce, NewNonce())

	for _, tc := range []struct {
		alg  string
		size int
	}{{"sha1", 20}, {"sha256", 32}, {"sha512", 64}, {"hmac(sha256)", 32}, {"SHA1", 20}, {"sha224", 28}, {"sha384", 48}} {
		t.Run(tc.alg, func(t *testing.T) {
			mac, err := ChallengeResponse(tc.alg, secret, nonce, "alice")
			require.NoError(t, err)
			assert.Len(t, mac, tc.size)
			require.NoError(t, (&AuthResponse{MAC: mac}).check(), "fits an AuthResponse")

			assert.True(t, VerifyResponse(tc.alg, secret, nonce, "alice", mac), "right secret")
			assert.False(t, VerifyResponse(tc.alg, []byte("wrong"), nonce, "alice", mac), "wrong secret")
			assert.False(t, VerifyResponse(tc.alg, secret, nonce, "bob", mac), "wrong node name")
			assert.False(t, VerifyResponse(tc.alg, secret, NewNonce(), "alice", mac), "other challenge")
			assert.False(t, VerifyResponse(tc.alg, secret, nonce, "alice", mac[:len(mac)-1]), "truncated")
			assert.False(t, VerifyResponse(tc.alg, secret, nonce, "alice", nil), "empty")
		})
	}
	mac1, err := ChallengeResponse("sha256", secret, nonce, "alice")
	require.NoError(t, err)
	mac2, err := ChallengeResponse("hmac(sha256)", secret, nonce, "alice")
	require.NoError(t, err)
	assert.Equal(t, mac1, mac2, "DRBD names and kernel names are the same algorithm")
	assert.False(t, VerifyResponse("sha1", secret, nonce, "alice", mac1), "other algorithm")

	for _, alg := range []string{"md4", "", "hmac(sha256", "crc32c"} {
		_, err := ChallengeResponse(alg, secret, nonce, "alice")
		assert.ErrorIs(t, err, ErrUnknownAlg, alg)
		assert.False(t, VerifyResponse(alg, secret, nonce, "alice", mac1))
	}
	_, err = ChallengeResponse("sha1", nil, nonce, "alice")
	assert.Error(t, err, "empty secret")
	_, err = ChallengeResponse("sha1", secret, nonce[:MinNonceLen-1], "alice")
	assert.ErrorIs(t, err, ErrProtocol, "short challenge")
}

// loopReader serves b over and over.
type loopReader struct {
	b   []byte
	off int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.b[r.off:])
		n += k
		r.off = (r.off + k) % len(r.b)
	}
	return n, nil
}

// TestWireDoesNotAllocate keeps the hot path (Data and WriteAck, encode and
// decode) free of heap allocations in steady state. The race detector
// allocates on its own, so this test only counts in a build without -race
// (`make unit` runs the DoesNotAllocate tests that way).
func TestWireDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	data := &Data{ID: 1, Epoch: 1, Offset: 1 << 20, Flags: DataFUA, Payload: pattern(4096)}
	ack := &WriteAck{ID: 1}
	buf := make([]byte, 0, 8192)
	zero := func(name string, f func()) {
		t.Helper()
		f() // warm up: buffers grow
		assert.Zero(t, testing.AllocsPerRun(200, f), name)
	}
	zero("Append Data", func() {
		var err error
		if buf, err = Append(buf[:0], data); err != nil {
			t.Fatal(err)
		}
	})
	zero("Append WriteAck", func() {
		var err error
		if buf, err = Append(buf[:0], ack); err != nil {
			t.Fatal(err)
		}
	})
	zero("AppendSplit Data", func() {
		var err error
		if buf, _, err = AppendSplit(buf[:0], data); err != nil {
			t.Fatal(err)
		}
	})

	stream := cat(encode(t, data), encode(t, ack), encode(t, &RecvAck{ID: 2}), encode(t, &NegAck{ID: 3, Errno: 5}),
		encode(t, &Barrier{ID: 4}), encode(t, &BarrierAck{ID: 4}), encode(t, &ReadReply{ID: 5, Payload: pattern(4096)}),
		encode(t, &Ping{}), encode(t, &PingAck{}))
	d := NewDecoder(&loopReader{b: stream}, 0)
	next := func() {
		if _, err := d.Next(); err != nil {
			t.Fatal(err)
		}
	}
	zero("Next", next)

	pool := make([]byte, 4096)
	d.SetPayloadBuffer(func(n int) []byte { return pool })
	zero("Next with SetPayloadBuffer", next)
}

// checksum is the header CRC, spelled out once more for the tests.
func checksum(h []byte) uint32 { return crc32.Checksum(h[:12], crc32.MakeTable(crc32.Castagnoli)) }

func TestHeaderChecksumIsCRC32C(t *testing.T) {
	b := encode(t, &Ping{})
	assert.Equal(t, checksum(b), binary.BigEndian.Uint32(b[12:]))
}
