package replication

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"runtime"
	"testing"
)

// fuzzMaxFrame is the decoder's limit in FuzzDecode: small enough that the
// memory bound below means something.
const fuzzMaxFrame = 1 << 20

// FuzzDecode feeds arbitrary bytes to a Decoder. It checks that decoding
// never panics, that every error is an end of stream or a protocol
// violation, that the decoder's memory stays within its frame limit (and
// within what actually arrived), and that every decoded message re-encodes
// to exactly the bytes it came from (the encoding is canonical), which
// decode again to an equal message.
func FuzzDecode(f *testing.F) {
	var all []byte
	for _, s := range samples(false) {
		b, err := Append(nil, s.msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		all = append(all, b...)
	}
	f.Add(all)
	f.Add(all[:len(all)-3])
	f.Add(frameLen(TypeData, dataFixed+MaxPayloadSize))
	f.Add(frameLen(TypeBitmap, fuzzMaxFrame))
	f.Add(frameLen(TypeResyncReply, resyncReplyFixed+MaxPayloadSize))
	f.Add(frameLen(TypeVerifyRequest, verifyRequestFixed+maxVerifyDigests))
	f.Add(encode(f, &VerifyRequest{ID: 1, Length: 64 << 10, Alg: DigestSHA256, Digests: make([]byte, 16*32)}))
	f.Add(encode(f, &Data{ID: 1, Flags: DataCompressS2, Payload: s2Block(8192)}))
	f.Add([]byte("twbp"))

	f.Fuzz(func(t *testing.T, in []byte) {
		// Only the decoder's own allocations count, not those of the
		// checks below (re-encoding, a second decoder per message).
		var before, after runtime.MemStats
		var grew uint64
		runtime.ReadMemStats(&before)
		d := NewDecoder(bytes.NewReader(in), fuzzMaxFrame)
		off := 0
		for {
			m, err := d.Next()
			runtime.ReadMemStats(&after)
			grew += after.TotalAlloc - before.TotalAlloc
			if cap(d.buf) > fuzzMaxFrame || cap(d.buf) > 2*len(in)+growStep {
				t.Fatalf("payload buffer of %d bytes from %d bytes of input, limit %d", cap(d.buf), len(in), fuzzMaxFrame)
			}
			if err != nil {
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unexpected kind of error: %v", err)
				}
				if m != nil {
					t.Fatalf("message %v with error %v", m.Type(), err)
				}
				break
			}
			enc, err := Append(nil, m)
			if err != nil {
				t.Fatalf("%v decoded but does not encode: %v", m.Type(), err)
			}
			if !bytes.Equal(enc, in[off:off+len(enc)]) {
				t.Fatalf("%v re-encodes to %x, input was %x", m.Type(), enc, in[off:off+len(enc)])
			}
			off += len(enc)
			again, err := NewDecoder(bytes.NewReader(enc), fuzzMaxFrame).Next()
			if err != nil {
				t.Fatalf("%v re-encoded does not decode: %v", m.Type(), err)
			}
			if !reflect.DeepEqual(m, again) {
				t.Fatalf("%v changed in a round trip: %+v != %+v", m.Type(), m, again)
			}
			runtime.ReadMemStats(&before)
		}
		if grew > fuzzMaxFrame {
			t.Fatalf("decoding %d bytes allocated %d bytes, limit %d", len(in), grew, fuzzMaxFrame)
		}
	})
}
