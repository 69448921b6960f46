package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
)

// testServer runs a Server whose connections are net.Pipe ends.
type testServer struct {
	t   *testing.T
	srv *Server
}

func newTestServer(t *testing.T, opts Options, exports ...*Export) *testServer {
	t.Helper()
	if opts.Catalog == nil {
		opts.Catalog = NewStaticCatalog(exports...)
	}
	srv, err := NewServer(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	return &testServer{t: t, srv: srv}
}

// dial returns the client end of a new connection and a channel that
// yields ServeConn's result.
func (ts *testServer) dial() (*raw, <-chan error) {
	cEnd, sEnd := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- ts.srv.ServeConn(sEnd) }()
	ts.t.Cleanup(func() { cEnd.Close() })
	return &raw{t: ts.t, c: cEnd, br: bufio.NewReader(cEnd)}, done
}

// raw speaks the NBD wire by hand, so tests can send anything.
type raw struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (r *raw) write(bs ...[]byte) {
	r.t.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for _, b := range bs {
		if len(b) == 0 {
			continue // a zero-length net.Pipe write blocks until a read
		}
		_, err := r.c.Write(b)
		require.NoError(r.t, err)
	}
}

func (r *raw) read(n int) []byte {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	_, err := io.ReadFull(r.br, b)
	require.NoError(r.t, err)
	return b
}

// greet reads the server greeting and sends client flags.
func (r *raw) greet(clientFlags uint32) {
	r.t.Helper()
	g := r.read(18)
	require.Equal(r.t, magicOldstyle, binary.BigEndian.Uint64(g))
	require.Equal(r.t, magicOption, binary.BigEndian.Uint64(g[8:]))
	require.Equal(r.t, flagFixedNewstyle|flagNoZeroes, binary.BigEndian.Uint16(g[16:]))
	r.write(binary.BigEndian.AppendUint32(nil, clientFlags))
}

func (r *raw) opt(opt uint32, data []byte) {
	r.t.Helper()
	h := binary.BigEndian.AppendUint64(nil, magicOption)
	h = binary.BigEndian.AppendUint32(h, opt)
	h = binary.BigEndian.AppendUint32(h, uint32(len(data)))
	r.write(h, data)
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (r *raw) optReply() optReply {
	r.t.Helper()
	h := r.read(20)
	require.Equal(r.t, magicOptReply, binary.BigEndian.Uint64(h))
	n := binary.BigEndian.Uint32(h[16:])
	return optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:]), data: r.read(int(n))}
}

func infoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// goExport negotiates (optionally structured replies) and enters
// transmission; it returns the export size and transmission flags.
func (r *raw) goExport(name string, structured bool) (uint64, uint16) {
	r.t.Helper()
	r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	if structured {
		r.opt(optStructuredReply, nil)
		require.Equal(r.t, repAck, r.optReply().typ)
	}
	return r.goExport2(name)
}

func (r *raw) request(typ, flags uint16, cookie, off uint64, length uint32, payload []byte) {
	r.t.Helper()
	h := AppendRequestHeader(nil, RequestHeader{Type: typ, Flags: flags, Cookie: cookie, Offset: off, Length: length})
	r.write(h, payload)
}

// reply is a decoded reply (simple, or one structured chunk).
type reply struct {
	structured bool
	flags      uint16
	typ        uint16
	errno      uint32
	cookie     uint64
	offset     uint64
	data       []byte
	msg        string
}

// readReply reads one reply; readLen says how many data bytes a simple
// READ reply carries (0 for other commands or errors).
func (r *raw) readReply(readLen int) reply {
	r.t.Helper()
	return r.readReplyFor(func(uint64) int { return readLen })
}

// readReplyFor is readReply where the data length of a simple READ reply
// depends on the cookie.
func (r *raw) readReplyFor(readLen func(cookie uint64) int) reply {
	r.t.Helper()
	m := binary.BigEndian.Uint32(r.read(4))
	switch m {
	case magicReply:
		h := r.read(12)
		rep := reply{errno: binary.BigEndian.Uint32(h), cookie: binary.BigEndian.Uint64(h[4:])}
		if n := readLen(rep.cookie); rep.errno == 0 && n > 0 {
			rep.data = r.read(n)
		}
		return rep
	case magicStructRep:
		h := r.read(16)
		rep := reply{structured: true, flags: binary.BigEndian.Uint16(h), typ: binary.BigEndian.Uint16(h[2:]),
			cookie: binary.BigEndian.Uint64(h[4:])}
		p := r.read(int(binary.BigEndian.Uint32(h[12:])))
		switch rep.typ {
		case replyTypeOffsetData:
			rep.offset = binary.BigEndian.Uint64(p)
			rep.data = p[8:]
		case replyTypeError:
			rep.errno = binary.BigEndian.Uint32(p)
			rep.msg = string(p[6 : 6+binary.BigEndian.Uint16(p[4:])])
		}
		return rep
	}
	r.t.Fatalf("bad reply magic %#x", m)
	return reply{}
}

// expectClosed asserts the server closes the connection.
func (r *raw) expectClosed() {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(r.br)
	var ne net.Error
	require.False(r.t, errors.As(err, &ne) && ne.Timeout(), "connection still open")
}

func memExport(name string, size int64, opts disk.MemOptions) (*Export, *disk.Mem) {
	m := disk.NewMem(size, opts)
	return &Export{Name: name, Description: "mem " + name, Device: m}, m
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>9)
	}
	return b
}
