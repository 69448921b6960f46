package replication

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/twinblock/twinblock/internal/alignbuf"
)

// Payload compression (net { compression }). A node compresses what it
// sends with its own LinkConfig.Compression, if the peer announced that
// it decodes it; every node announces both codecs (compressFeatures), so
// the two directions may use different ones. The codecs work on whole
// payloads (one s2 block, one zstd frame with its content size): no
// stream state crosses messages, and a payload decodes on its own.
//
// A payload is sent compressed only if that saves at least an eighth of
// it; incompressible data (already compressed, encrypted, random) goes
// raw, at the price of one compression attempt.

// compressFeatures is what every node announces in its Hello.
const compressFeatures = FeatureCompressS2 | FeatureCompressZstd

// codecByName maps a compression setting ("", "none", "s2", "zstd") to
// its Codec.
func codecByName(name string) (Codec, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "", "none":
		return CodecNone, nil
	case "s2":
		return CodecS2, nil
	case "zstd":
		return CodecZstd, nil
	}
	return CodecNone, fmt.Errorf("replication: unknown compression %q (want none, s2 or zstd)", name)
}

// feature is the Hello feature that says a node decodes c.
func (c Codec) feature() Features {
	switch c {
	case CodecS2:
		return FeatureCompressS2
	case CodecZstd:
		return FeatureCompressZstd
	}
	return 0
}

// The zstd encoder and decoder, shared by every link of the process
// (both are safe for concurrent EncodeAll/DecodeAll and start no
// goroutine for them). Made on first use: a node that never compresses
// never pays for their tables.
var (
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false))
		if err != nil {
			panic(fmt.Sprintf("replication: zstd encoder: %v", err)) // constant options
		}
		return e
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxMemory(MaxPayloadSize))
		if err != nil {
			panic(fmt.Sprintf("replication: zstd decoder: %v", err)) // constant options
		}
		return d
	})
)

// maxCompressedLen bounds what c makes of n bytes.
func maxCompressedLen(c Codec, n int) int {
	if c == CodecS2 {
		return s2.MaxEncodedLen(n)
	}
	return zstdEncoder().MaxEncodedSize(n)
}

// compress compresses src with c into a pooled buffer and returns it and
// the compressed bytes, or ok = false (and no buffer) if that does not
// save at least an eighth of src. It counts what it was given and what
// it made.
func (l *Link) compress(c Codec, src []byte) (buf *alignbuf.Buf, out []byte, ok bool) {
	bound := maxCompressedLen(c, len(src))
	if bound <= 0 || bound > 1<<alignbuf.MaxShift {
		return nil, nil, false
	}
	buf = l.ap.pool.Get(bound)
	switch c {
	case CodecS2:
		out = s2.Encode(buf.B[:bound], src)
	case CodecZstd:
		out = zstdEncoder().EncodeAll(src, buf.B[:0:bound])
	}
	l.compIn.Add(uint64(len(src)))
	l.compOut.Add(uint64(len(out)))
	if len(out) > len(src)-len(src)/8 || len(out) == 0 || &out[0] != &buf.B[0] {
		l.ap.pool.Put(buf)
		return nil, nil, false
	}
	return buf, out, true
}

// errCorrupt is wrapped by the decoding errors of compressed payloads.
var errCorrupt = errors.New("compressed payload does not decode")

// decodedLen reads the decoded size from a compressed payload's header,
// without decoding it.
func decodedLen(c Codec, src []byte) (int64, error) {
	switch c {
	case CodecS2:
		n, err := s2.DecodedLen(src)
		if err != nil {
			return 0, fmt.Errorf("%w: %v: %w", errCorrupt, c, err)
		}
		return int64(n), nil
	case CodecZstd:
		var h zstd.Header
		if err := h.Decode(src); err != nil {
			return 0, fmt.Errorf("%w: %v: %w", errCorrupt, c, err)
		}
		if !h.HasFCS || h.Skippable {
			return 0, fmt.Errorf("%w: %v: the frame does not state its size", errCorrupt, c)
		}
		if h.FrameContentSize > MaxPayloadSize {
			return MaxPayloadSize + 1, nil
		}
		return int64(h.FrameContentSize), nil
	}
	return 0, fmt.Errorf("%w: codec %v", errCorrupt, c)
}

// decompress decodes src into dst, which has exactly the length the
// payload must decode to; it never writes past dst nor allocates for a
// payload that would decode to more.
func decompress(c Codec, dst, src []byte) error {
	var out []byte
	var err error
	switch c {
	case CodecS2:
		out, err = s2.Decode(dst, src)
	case CodecZstd:
		out, err = zstdDecoder().DecodeAll(src, dst[:0:len(dst)])
	default:
		err = fmt.Errorf("codec %v", c)
	}
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v: %w", errCorrupt, c, err)
	case len(out) != len(dst) || &out[0] != &dst[0]:
		return fmt.Errorf("%w: %v: %d bytes, want %d", errCorrupt, c, len(out), len(dst))
	}
	return nil
}
