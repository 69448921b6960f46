package nbd

import (
	"encoding/binary"
	"fmt"
	"net"
	"unicode/utf8"

	"github.com/twinblock/twinblock/internal/alignbuf"
)

// RequestHeader is the fixed 28-byte header of every transmission-phase
// request.
type RequestHeader struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Offset uint64
	Length uint32
}

// DecodeRequestHeader parses a request header. A wrong magic is a protocol
// violation after which the stream cannot be trusted: the caller must
// close the connection.
func DecodeRequestHeader(b []byte) (RequestHeader, error) {
	if len(b) < requestHeaderSize {
		return RequestHeader{}, fmt.Errorf("nbd: request header of %d bytes, want %d", len(b), requestHeaderSize)
	}
	if m := binary.BigEndian.Uint32(b[0:]); m != magicRequest {
		return RequestHeader{}, fmt.Errorf("nbd: bad request magic %#08x", m)
	}
	return RequestHeader{
		Flags:  binary.BigEndian.Uint16(b[4:]),
		Type:   binary.BigEndian.Uint16(b[6:]),
		Cookie: binary.BigEndian.Uint64(b[8:]),
		Offset: binary.BigEndian.Uint64(b[16:]),
		Length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// AppendRequestHeader encodes h after b (used by the client and tests).
func AppendRequestHeader(b []byte, h RequestHeader) []byte {
	b = binary.BigEndian.AppendUint32(b, magicRequest)
	b = binary.BigEndian.AppendUint16(b, h.Flags)
	b = binary.BigEndian.AppendUint16(b, h.Type)
	b = binary.BigEndian.AppendUint64(b, h.Cookie)
	b = binary.BigEndian.AppendUint64(b, h.Offset)
	return binary.BigEndian.AppendUint32(b, h.Length)
}

// request is one command in flight on a connection. It is pooled; all of
// its fields are reset by reset before reuse.
type request struct {
	RequestHeader
	buf  *alignbuf.Buf // pooled storage behind data
	data []byte        // READ result or WRITE payload, len == Length
	cost int64         // bytes charged to the connection's budget

	errno uint32
	msg   string

	// Ordering (guarded by conn.omu): a request that overlaps an earlier
	// one still in flight, where either of them writes, waits until that
	// one completes. deps counts those it waits for; waiters are the later
	// requests waiting for this one; activeIdx is its slot in conn.active.
	ordered   bool
	deps      int
	waiters   []*request
	activeIdx int

	hdr [32]byte // reply header scratch
}

func (r *request) reset() {
	waiters := r.waiters[:0]
	*r = request{}
	r.waiters = waiters
}

// mutates reports whether the command changes the export's content.
func (r *request) mutates() bool {
	return r.Type == CmdWrite || r.Type == CmdTrim || r.Type == CmdWriteZeroes
}

// conflicts reports whether r and o must execute in arrival order.
func (r *request) conflicts(o *request) bool {
	if !r.mutates() && !o.mutates() {
		return false
	}
	return r.Offset < o.Offset+uint64(o.Length) && o.Offset < r.Offset+uint64(r.Length)
}

// appendReply appends the reply of r to iov: a simple reply, or with
// structured replies a single chunk carrying NBD_REPLY_FLAG_DONE (so
// NBD_CMD_FLAG_DF is always honoured). Errors in structured mode carry a
// message naming what failed.
func (r *request) appendReply(iov net.Buffers, structured bool) net.Buffers {
	h := r.hdr[:]
	if structured && (r.Type == CmdRead || r.errno != 0) {
		binary.BigEndian.PutUint32(h[0:], magicStructRep)
		binary.BigEndian.PutUint16(h[4:], replyFlagDone)
		binary.BigEndian.PutUint64(h[8:], r.Cookie)
		switch {
		case r.errno != 0:
			msg := r.msg
			if len(msg) > 4096 { // cut on a rune boundary: the spec wants UTF-8
				cut := 4096
				for cut > 0 && !utf8.RuneStart(msg[cut]) {
					cut--
				}
				msg = msg[:cut]
			}
			binary.BigEndian.PutUint16(h[6:], replyTypeError)
			binary.BigEndian.PutUint32(h[16:], uint32(6+len(msg)))
			binary.BigEndian.PutUint32(h[20:], r.errno)
			binary.BigEndian.PutUint16(h[24:], uint16(len(msg)))
			iov = append(iov, h[:26])
			if msg != "" {
				iov = append(iov, []byte(msg))
			}
			return iov
		case r.Length == 0:
			binary.BigEndian.PutUint16(h[6:], replyTypeNone)
			binary.BigEndian.PutUint32(h[16:], 0)
			return append(iov, h[:structReplyHeaderSize])
		default:
			binary.BigEndian.PutUint16(h[6:], replyTypeOffsetData)
			binary.BigEndian.PutUint32(h[16:], 8+r.Length)
			binary.BigEndian.PutUint64(h[20:], r.Offset)
			return append(iov, h[:28], r.data)
		}
	}
	binary.BigEndian.PutUint32(h[0:], magicReply)
	binary.BigEndian.PutUint32(h[4:], r.errno)
	binary.BigEndian.PutUint64(h[8:], r.Cookie)
	iov = append(iov, h[:simpleReplyHeaderSize])
	if r.Type == CmdRead && r.errno == 0 && r.Length > 0 {
		iov = append(iov, r.data)
	}
	return iov
}
