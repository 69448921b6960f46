package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twinblock/twinblock/nbd"
)

// Wire values the client needs (see nbd/proto.go for the server's copy).
const (
	magicOldstyle  = uint64(0x4e42444d41474943)
	magicOption    = uint64(0x49484156454F5054)
	magicOptReply  = uint64(0x3e889045565a9)
	magicSimple    = uint32(0x67446698)
	magicStructRep = uint32(0x668e33ef)

	optExportName      = uint32(1)
	optAbort           = uint32(2)
	optList            = uint32(3)
	optGo              = uint32(7)
	optStructuredReply = uint32(8)

	repAck      = uint32(1)
	repServer   = uint32(2)
	repInfo     = uint32(3)
	repErrUnsup = uint32(1 | 1<<31)

	infoExport    = uint16(0)
	infoName      = uint16(1)
	infoBlockSize = uint16(3)

	replyFlagDone        = uint16(1)
	replyTypeNone        = uint16(0)
	replyTypeOffsetData  = uint16(1)
	replyTypeOffsetHole  = uint16(2)
	replyTypeError       = uint16(1<<15 | 1)
	replyTypeErrorOffset = uint16(1<<15 | 2)
)

// Options configure Dial.
type Options struct {
	// Export is the export name ("" asks for the default export).
	Export string
	// Structured asks for structured replies.
	Structured bool
	// ExportName forces the old NBD_OPT_EXPORT_NAME instead of NBD_OPT_GO.
	ExportName bool
}

// Error is an error reply from the server.
type Error struct {
	Command string
	Errno   uint32
	Message string // from a structured error chunk, if any
}

func (e *Error) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("nbd client: %s: errno %d: %s", e.Command, e.Errno, e.Message)
	}
	return fmt.Sprintf("nbd client: %s: errno %d", e.Command, e.Errno)
}

// OptionError is an error reply during the handshake.
type OptionError struct {
	Option  uint32
	Reply   uint32
	Message string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("nbd client: option %d refused with reply %#x: %s", e.Option, e.Reply, e.Message)
}

// ErrClosed is returned for requests on a closed or broken connection.
var ErrClosed = errors.New("nbd client: connection closed")

// Client is one NBD connection in the transmission phase. Its methods are
// safe for concurrent use; requests are pipelined.
type Client struct {
	nc         net.Conn
	size       int64
	flags      uint16
	minBlock   uint32
	prefBlock  uint32
	maxPayload uint32
	structured bool

	wmu sync.Mutex
	bw  *bufio.Writer

	mu      sync.Mutex
	pending map[uint64]*call
	next    uint64
	err     error // set when the reader stops
	done    chan struct{}
}

type call struct {
	cmd  uint16
	off  uint64
	buf  []byte // READ destination
	err  error
	done chan struct{}
}

// Dial connects to addr ("host:port", or "unix:/path") and negotiates.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	network := "tcp"
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd client: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	c, err := handshake(nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	go c.readLoop(bufio.NewReaderSize(nc, 64<<10))
	return c, nil
}

// Negotiate connects to addr and negotiates like Dial, and returns the
// connection as the handshake left it, in the transmission phase, with
// the export's size and transmission flags: for a kernel NBD device
// (pkg/kdev), which takes the socket over. The options phase reads
// nothing past its last reply, so no byte is left behind in a buffer.
func Negotiate(ctx context.Context, addr string, opts Options) (nc net.Conn, size int64, flags uint16, err error) {
	network := "tcp"
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	var d net.Dialer
	nc, err = d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("nbd client: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	c, err := handshake(nc, opts)
	if err != nil {
		nc.Close()
		return nil, 0, 0, err
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, c.size, c.flags, nil
}

// List returns the export names that the server at addr offers.
func List(ctx context.Context, addr string) ([]string, error) {
	network := "tcp"
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd client: %w", err)
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	br, bw := bufio.NewReader(nc), bufio.NewWriter(nc)
	if _, err := greet(br, bw); err != nil {
		return nil, err
	}
	if err := sendOption(bw, optList, nil); err != nil {
		return nil, err
	}
	var names []string
	for {
		typ, data, err := readOptReply(br, optList)
		if err != nil {
			return nil, err
		}
		switch typ {
		case repServer:
			if len(data) < 4 || int(binary.BigEndian.Uint32(data)) > len(data)-4 {
				return nil, fmt.Errorf("nbd client: malformed NBD_REP_SERVER")
			}
			names = append(names, string(data[4:4+binary.BigEndian.Uint32(data)]))
		case repAck:
			_ = sendOption(bw, optAbort, nil)
			return names, nil
		default:
			return nil, &OptionError{Option: optList, Reply: typ, Message: string(data)}
		}
	}
}

func greet(br *bufio.Reader, bw *bufio.Writer) (uint16, error) {
	var g [18]byte
	if _, err := io.ReadFull(br, g[:]); err != nil {
		return 0, fmt.Errorf("nbd client: reading greeting: %w", err)
	}
	if binary.BigEndian.Uint64(g[0:]) != magicOldstyle || binary.BigEndian.Uint64(g[8:]) != magicOption {
		return 0, errors.New("nbd client: server does not speak newstyle NBD")
	}
	hf := binary.BigEndian.Uint16(g[16:])
	if hf&1 == 0 {
		return 0, errors.New("nbd client: server lacks fixed newstyle")
	}
	cf := uint32(1) // FIXED_NEWSTYLE
	if hf&2 != 0 {
		cf |= 2 // NO_ZEROES
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], cf)
	if _, err := bw.Write(b[:]); err != nil {
		return 0, err
	}
	return hf, bw.Flush()
}

func handshake(nc net.Conn, opts Options) (*Client, error) {
	br, bw := bufio.NewReader(nc), bufio.NewWriterSize(nc, 64<<10)
	hf, err := greet(br, bw)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, bw: bw, pending: make(map[uint64]*call), done: make(chan struct{}),
		minBlock: 1, prefBlock: 4096, maxPayload: 32 << 20}
	if opts.Structured {
		if err := sendOption(bw, optStructuredReply, nil); err != nil {
			return nil, err
		}
		typ, data, err := readOptReply(br, optStructuredReply)
		if err != nil {
			return nil, err
		}
		if typ != repAck {
			return nil, &OptionError{Option: optStructuredReply, Reply: typ, Message: string(data)}
		}
		c.structured = true
	}
	if opts.ExportName {
		if err := sendOption(bw, optExportName, []byte(opts.Export)); err != nil {
			return nil, err
		}
		return handshakeExportNameReply(c, br, hf)
	}
	data := binary.BigEndian.AppendUint32(nil, uint32(len(opts.Export)))
	data = append(data, opts.Export...)
	data = binary.BigEndian.AppendUint16(data, 2)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	data = binary.BigEndian.AppendUint16(data, infoName)
	if err := sendOption(bw, optGo, data); err != nil {
		return nil, err
	}
	gotExport := false
	for {
		typ, rep, err := readOptReply(br, optGo)
		if err != nil {
			return nil, err
		}
		switch typ {
		case repInfo:
			if len(rep) < 2 {
				return nil, errors.New("nbd client: short NBD_REP_INFO")
			}
			switch binary.BigEndian.Uint16(rep) {
			case infoExport:
				if len(rep) != 12 {
					return nil, errors.New("nbd client: bad NBD_INFO_EXPORT length")
				}
				c.size = int64(binary.BigEndian.Uint64(rep[2:]))
				c.flags = binary.BigEndian.Uint16(rep[10:])
				gotExport = true
			case infoBlockSize:
				if len(rep) != 14 {
					return nil, errors.New("nbd client: bad NBD_INFO_BLOCK_SIZE length")
				}
				c.minBlock = binary.BigEndian.Uint32(rep[2:])
				c.prefBlock = binary.BigEndian.Uint32(rep[6:])
				c.maxPayload = binary.BigEndian.Uint32(rep[10:])
			}
		case repAck:
			if !gotExport {
				return nil, errors.New("nbd client: NBD_OPT_GO acknowledged without NBD_INFO_EXPORT")
			}
			return c, nil
		case repErrUnsup:
			if err := sendOption(bw, optExportName, []byte(opts.Export)); err != nil {
				return nil, err
			}
			return handshakeExportNameReply(c, br, hf)
		default:
			return nil, &OptionError{Option: optGo, Reply: typ, Message: string(rep)}
		}
	}
}

func handshakeExportNameReply(c *Client, br *bufio.Reader, hf uint16) (*Client, error) {
	n := 10
	if hf&2 == 0 {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, fmt.Errorf("nbd client: NBD_OPT_EXPORT_NAME refused: %w", err)
	}
	c.size = int64(binary.BigEndian.Uint64(b))
	c.flags = binary.BigEndian.Uint16(b[8:])
	return c, nil
}

func sendOption(bw *bufio.Writer, opt uint32, data []byte) error {
	var h [16]byte
	binary.BigEndian.PutUint64(h[0:], magicOption)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], uint32(len(data)))
	bw.Write(h[:])
	bw.Write(data)
	return bw.Flush()
}

func readOptReply(br *bufio.Reader, opt uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("nbd client: reading option reply: %w", err)
	}
	if binary.BigEndian.Uint64(h[0:]) != magicOptReply {
		return 0, nil, errors.New("nbd client: bad option reply magic")
	}
	if got := binary.BigEndian.Uint32(h[8:]); got != opt {
		return 0, nil, fmt.Errorf("nbd client: reply to option %d while waiting for %d", got, opt)
	}
	typ := binary.BigEndian.Uint32(h[12:])
	n := binary.BigEndian.Uint32(h[16:])
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("nbd client: option reply of %d bytes", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(br, data); err != nil {
		return 0, nil, fmt.Errorf("nbd client: reading option reply data: %w", err)
	}
	return typ, data, nil
}

// Size is the export size.
func (c *Client) Size() int64 { return c.size }

// Flags are the transmission flags the server sent.
func (c *Client) Flags() uint16 { return c.flags }

// BlockSizes returns the minimum, preferred and maximum payload sizes the
// server advertised (the protocol defaults if it advertised none).
func (c *Client) BlockSizes() (minimum, preferred, maximum uint32) {
	return c.minBlock, c.prefBlock, c.maxPayload
}

// Structured reports whether structured replies are in use.
func (c *Client) Structured() bool { return c.structured }

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off int64) error {
	return c.Do(nbd.RequestHeader{Type: nbd.CmdRead, Offset: uint64(off), Length: uint32(len(p))}, nil, p)
}

// WriteAt writes p at off; with fua the server replies only once durable.
func (c *Client) WriteAt(p []byte, off int64, fua bool) error {
	return c.Do(nbd.RequestHeader{Type: nbd.CmdWrite, Flags: fuaFlag(fua), Offset: uint64(off), Length: uint32(len(p))}, p, nil)
}

// Flush asks the server to make every completed write durable.
func (c *Client) Flush() error {
	return c.Do(nbd.RequestHeader{Type: nbd.CmdFlush}, nil, nil)
}

// Trim discards a range.
func (c *Client) Trim(off, n int64, fua bool) error {
	return c.Do(nbd.RequestHeader{Type: nbd.CmdTrim, Flags: fuaFlag(fua), Offset: uint64(off), Length: uint32(n)}, nil, nil)
}

// WriteZeroes zeroes a range; noHole forbids the server to punch a hole.
func (c *Client) WriteZeroes(off, n int64, noHole, fua bool) error {
	f := fuaFlag(fua)
	if noHole {
		f |= nbd.CmdFlagNoHole
	}
	return c.Do(nbd.RequestHeader{Type: nbd.CmdWriteZeroes, Flags: f, Offset: uint64(off), Length: uint32(n)}, nil, nil)
}

func fuaFlag(fua bool) uint16 {
	if fua {
		return nbd.CmdFlagFUA
	}
	return 0
}

// Do sends one request as given (the cookie is assigned here) with the
// payload, waits for its reply and, for a READ, fills into. It does no
// validation, so tests can send what a well-behaved client would not.
func (c *Client) Do(h nbd.RequestHeader, payload, into []byte) error {
	cl := &call{cmd: h.Type, off: h.Offset, buf: into, done: make(chan struct{})}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	c.next++
	h.Cookie = c.next
	c.pending[h.Cookie] = cl
	c.mu.Unlock()

	c.wmu.Lock()
	hb := nbd.AppendRequestHeader(make([]byte, 0, 28), h)
	_, err := c.bw.Write(hb)
	if err == nil && len(payload) > 0 {
		_, err = c.bw.Write(payload)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("nbd client: sending %s: %w", nbd.CommandName(h.Type), err))
	}
	<-cl.done
	return cl.err
}

// Close sends NBD_CMD_DISC and closes the connection. The server finishes
// the requests in flight and flushes before it closes its side.
func (c *Client) Close() error {
	c.wmu.Lock()
	hb := nbd.AppendRequestHeader(nil, nbd.RequestHeader{Type: nbd.CmdDisc})
	_, err := c.bw.Write(hb)
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err == nil {
		// Wait for the server to close after draining, so that Close
		// returning means the server has flushed.
		<-c.done
	}
	c.nc.Close()
	c.fail(ErrClosed)
	if err != nil {
		return fmt.Errorf("nbd client: sending NBD_CMD_DISC: %w", err)
	}
	return nil
}

// fail ends every pending call with err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	for k, cl := range c.pending {
		cl.err = c.err
		close(cl.done)
		delete(c.pending, k)
	}
	c.mu.Unlock()
}

func (c *Client) take(cookie uint64) (*call, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.pending[cookie]
	if !ok {
		return nil, fmt.Errorf("nbd client: reply for unknown cookie %d", cookie)
	}
	return cl, nil
}

func (c *Client) finish(cookie uint64, cl *call) {
	c.mu.Lock()
	delete(c.pending, cookie)
	c.mu.Unlock()
	close(cl.done)
}

func (c *Client) readLoop(br *bufio.Reader) {
	defer close(c.done)
	err := c.readReplies(br)
	c.nc.Close() // the server closed or broke the stream: nothing more can be read
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = ErrClosed
	}
	c.fail(err)
}

func (c *Client) readReplies(br *bufio.Reader) error {
	var m [4]byte
	for {
		if _, err := io.ReadFull(br, m[:]); err != nil {
			return err
		}
		switch binary.BigEndian.Uint32(m[:]) {
		case magicSimple:
			var h [12]byte
			if _, err := io.ReadFull(br, h[:]); err != nil {
				return err
			}
			errno, cookie := binary.BigEndian.Uint32(h[0:]), binary.BigEndian.Uint64(h[4:])
			cl, err := c.take(cookie)
			if err != nil {
				return err
			}
			if errno != 0 {
				cl.err = &Error{Command: nbd.CommandName(cl.cmd), Errno: errno}
			} else if cl.cmd == nbd.CmdRead {
				if _, err := io.ReadFull(br, cl.buf); err != nil {
					return err
				}
			}
			c.finish(cookie, cl)
		case magicStructRep:
			var h [16]byte
			if _, err := io.ReadFull(br, h[:]); err != nil {
				return err
			}
			flags, typ := binary.BigEndian.Uint16(h[0:]), binary.BigEndian.Uint16(h[2:])
			cookie, n := binary.BigEndian.Uint64(h[4:]), binary.BigEndian.Uint32(h[12:])
			cl, err := c.take(cookie)
			if err != nil {
				return err
			}
			if err := c.readChunk(br, cl, typ, n); err != nil {
				return err
			}
			if flags&replyFlagDone != 0 {
				c.finish(cookie, cl)
			}
		default:
			return fmt.Errorf("nbd client: bad reply magic %#x", m)
		}
	}
}

func (c *Client) readChunk(br *bufio.Reader, cl *call, typ uint16, n uint32) error {
	switch typ {
	case replyTypeNone:
		return nil
	case replyTypeOffsetData:
		var o [8]byte
		if n < 8 {
			return errors.New("nbd client: short OFFSET_DATA chunk")
		}
		if _, err := io.ReadFull(br, o[:]); err != nil {
			return err
		}
		off := binary.BigEndian.Uint64(o[:])
		rel := off - cl.off
		if off < cl.off || rel+uint64(n-8) > uint64(len(cl.buf)) {
			return errors.New("nbd client: OFFSET_DATA chunk outside the request")
		}
		_, err := io.ReadFull(br, cl.buf[rel:rel+uint64(n-8)])
		return err
	case replyTypeOffsetHole:
		var o [12]byte
		if n != 12 {
			return errors.New("nbd client: bad OFFSET_HOLE chunk")
		}
		if _, err := io.ReadFull(br, o[:]); err != nil {
			return err
		}
		rel := binary.BigEndian.Uint64(o[:]) - cl.off
		hl := uint64(binary.BigEndian.Uint32(o[8:]))
		if rel+hl > uint64(len(cl.buf)) {
			return errors.New("nbd client: OFFSET_HOLE chunk outside the request")
		}
		clear(cl.buf[rel : rel+hl])
		return nil
	case replyTypeError, replyTypeErrorOffset:
		if n < 6 || n > 1<<20 {
			return errors.New("nbd client: bad error chunk")
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return err
		}
		ml := int(binary.BigEndian.Uint16(b[4:]))
		if 6+ml > len(b) {
			return errors.New("nbd client: error chunk message overruns")
		}
		cl.err = &Error{Command: nbd.CommandName(cl.cmd), Errno: binary.BigEndian.Uint32(b), Message: string(b[6 : 6+ml])}
		return nil
	}
	return fmt.Errorf("nbd client: unknown structured reply type %d", typ)
}
