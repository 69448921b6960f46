package nbd

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
)

// policyCatalog refuses one export the way a Secondary will.
type policyCatalog struct{ *StaticCatalog }

func (p policyCatalog) Lookup(name string) (*Export, error) {
	if name == "secondary" {
		return nil, errors.New("r0: this node is Secondary; connect to the Primary")
	}
	return p.StaticCatalog.Lookup(name)
}

func TestHandshakeOptions(t *testing.T) {
	a, _ := memExport("alpha", 1<<20, disk.MemOptions{})
	b, _ := memExport("beta", 2<<20, disk.MemOptions{})
	ts := newTestServer(t, Options{Catalog: policyCatalog{NewStaticCatalog(a, b)}})

	tests := []struct {
		name    string
		opt     uint32
		data    []byte
		wantTyp uint32
		check   func(t *testing.T, r *raw, rep optReply)
	}{
		{name: "unknown option is unsupported", opt: 0x7654321, data: []byte("junk data"), wantTyp: repErrUnsup},
		{name: "STARTTLS is unsupported", opt: optStartTLS, wantTyp: repErrUnsup},
		{name: "metadata contexts are unsupported", opt: 10, data: make([]byte, 12), wantTyp: repErrUnsup},
		{name: "LIST with data is invalid", opt: optList, data: []byte{1}, wantTyp: repErrInvalid},
		{name: "STRUCTURED_REPLY with data is invalid", opt: optStructuredReply, data: []byte{1}, wantTyp: repErrInvalid},
		{name: "INFO shorter than 6 bytes is invalid", opt: optInfo, data: []byte{0, 0}, wantTyp: repErrInvalid},
		{name: "INFO name longer than the data is invalid", opt: optInfo,
			data: append(binary.BigEndian.AppendUint32(nil, 99), 0, 0), wantTyp: repErrInvalid},
		{name: "INFO with a wrong request count is invalid", opt: optInfo,
			data: append(infoData("alpha"), 0, 1), wantTyp: repErrInvalid},
		{name: "INFO of an unknown export", opt: optInfo, data: infoData("nope"), wantTyp: repErrUnknown},
		{name: "INFO refused by policy carries the reason", opt: optInfo, data: infoData("secondary"), wantTyp: repErrPolicy,
			check: func(t *testing.T, _ *raw, rep optReply) {
				assert.Contains(t, string(rep.data), "this node is Secondary")
			}},
		{name: "GO of an unknown export", opt: optGo, data: infoData("nope", infoBlockSize), wantTyp: repErrUnknown},
		{name: "oversized option is refused and drained", opt: optInfo, data: make([]byte, maxOptionLength+1), wantTyp: repErrTooBig},
		{name: "LIST names every export", opt: optList, wantTyp: repServer,
			check: func(t *testing.T, r *raw, rep optReply) {
				names := []string{}
				for rep.typ == repServer {
					n := binary.BigEndian.Uint32(rep.data)
					names = append(names, string(rep.data[4:4+n]))
					rep = r.optReply()
				}
				assert.Equal(t, repAck, rep.typ)
				assert.Equal(t, []string{"alpha", "beta"}, names)
			}},
		{name: "INFO answers export, block size, name and description", opt: optInfo,
			data: infoData("beta", infoName, infoDescription, infoBlockSize, 77), wantTyp: repInfo,
			check: func(t *testing.T, r *raw, rep optReply) {
				got := map[uint16][]byte{}
				for rep.typ == repInfo {
					got[binary.BigEndian.Uint16(rep.data)] = rep.data[2:]
					rep = r.optReply()
				}
				require.Equal(t, repAck, rep.typ)
				require.Len(t, got[infoExport], 10)
				assert.Equal(t, uint64(2<<20), binary.BigEndian.Uint64(got[infoExport]))
				assert.Equal(t, FlagHasFlags|FlagSendFlush|FlagSendFUA|FlagSendTrim|FlagSendWriteZeroes|FlagCanMultiConn,
					binary.BigEndian.Uint16(got[infoExport][8:]))
				assert.Equal(t, "beta", string(got[infoName]))
				assert.Equal(t, "mem beta", string(got[infoDescription]))
				require.Len(t, got[infoBlockSize], 12)
				assert.Equal(t, []uint32{1, 4096, 32 << 20}, []uint32{
					binary.BigEndian.Uint32(got[infoBlockSize]), binary.BigEndian.Uint32(got[infoBlockSize][4:]),
					binary.BigEndian.Uint32(got[infoBlockSize][8:])})
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := ts.dial()
			r.t = t
			r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
			r.opt(tc.opt, tc.data)
			rep := r.optReply()
			assert.Equal(t, tc.opt, rep.opt)
			require.Equal(t, tc.wantTyp, rep.typ, "reply data %q", rep.data)
			if tc.check != nil {
				tc.check(t, r, rep)
			}
			// The stream is still in sync: the next option works.
			size, _ := r.goExport2("alpha")
			assert.Equal(t, uint64(1<<20), size)
		})
	}
}

// goExport2 sends GO on an already greeted connection.
func (r *raw) goExport2(name string) (uint64, uint16) {
	r.t.Helper()
	r.opt(optGo, infoData(name))
	var size uint64
	var flags uint16
	for {
		rep := r.optReply()
		if rep.typ == repAck {
			return size, flags
		}
		require.Equal(r.t, repInfo, rep.typ, "reply %#x %q", rep.typ, rep.data)
		if binary.BigEndian.Uint16(rep.data) == infoExport {
			size, flags = binary.BigEndian.Uint64(rep.data[2:]), binary.BigEndian.Uint16(rep.data[10:])
		}
	}
}

func TestHandshakeExportName(t *testing.T) {
	e, _ := memExport("alpha", 1<<20, disk.MemOptions{})
	ts := newTestServer(t, Options{}, e)
	for _, noZeroes := range []bool{false, true} {
		r, _ := ts.dial()
		cf := clientFlagFixedNewstyle
		if noZeroes {
			cf |= clientFlagNoZeroes
		}
		r.greet(cf)
		r.opt(optExportName, []byte("alpha"))
		b := r.read(10)
		assert.Equal(t, uint64(1<<20), binary.BigEndian.Uint64(b))
		assert.Equal(t, FlagHasFlags, binary.BigEndian.Uint16(b[8:])&FlagHasFlags)
		if !noZeroes {
			assert.Equal(t, make([]byte, 124), r.read(124))
		}
		// Transmission works right after.
		r.request(CmdRead, 0, 1, 0, 512, nil)
		rep := r.readReply(512)
		assert.Equal(t, uint32(0), rep.errno)
		assert.Equal(t, uint64(1), rep.cookie)
	}
}

func TestHandshakeHardDisconnects(t *testing.T) {
	e, _ := memExport("alpha", 1<<20, disk.MemOptions{})
	ts := newTestServer(t, Options{}, e)
	tests := []struct {
		name string
		send func(r *raw)
	}{
		{"unknown client flags", func(r *raw) {
			r.read(18)
			r.write(binary.BigEndian.AppendUint32(nil, 1<<7))
		}},
		{"bad option magic", func(r *raw) {
			r.greet(clientFlagFixedNewstyle)
			r.write(make([]byte, 16))
		}},
		{"EXPORT_NAME of an unknown export", func(r *raw) {
			r.greet(clientFlagFixedNewstyle)
			r.opt(optExportName, []byte("nope"))
		}},
		{"ABORT is acknowledged, then closed", func(r *raw) {
			r.greet(clientFlagFixedNewstyle)
			r.opt(optAbort, nil)
			assert.Equal(t, repAck, r.optReply().typ)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, done := ts.dial()
			r.t = t
			tc.send(r)
			r.expectClosed()
			<-done
		})
	}
}

func TestTransmissionFlags(t *testing.T) {
	rw, _ := memExport("rw", 1<<20, disk.MemOptions{})
	ro, _ := memExport("ro", 1<<20, disk.MemOptions{})
	ro.ReadOnly = true
	rodev, _ := memExport("rodev", 1<<20, disk.MemOptions{ReadOnly: true})
	ts := newTestServer(t, Options{}, rw, ro, rodev)
	tests := []struct {
		export     string
		structured bool
		want       uint16
	}{
		{"rw", false, FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes | FlagCanMultiConn},
		{"rw", true, FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes | FlagCanMultiConn | FlagSendDF},
		{"ro", false, FlagHasFlags | FlagReadOnly | FlagSendFlush | FlagCanMultiConn},
		{"rodev", true, FlagHasFlags | FlagReadOnly | FlagSendFlush | FlagCanMultiConn | FlagSendDF},
	}
	for _, tc := range tests {
		r, _ := ts.dial()
		_, flags := r.goExport(tc.export, tc.structured)
		assert.Equal(t, tc.want, flags, "%s structured=%v", tc.export, tc.structured)
	}
}

func TestDefaultExportName(t *testing.T) {
	e, _ := memExport("only", 4096, disk.MemOptions{})
	ts := newTestServer(t, Options{}, e)
	r, _ := ts.dial()
	size, _ := r.goExport("", false)
	assert.Equal(t, uint64(4096), size)
}

func TestSessionsCounted(t *testing.T) {
	e, _ := memExport("alpha", 4096, disk.MemOptions{})
	b, _ := memExport("beta", 4096, disk.MemOptions{})
	totals := make(chan int, 16)
	ts := newTestServer(t, Options{DemandChanged: func(n int) { totals <- n }}, e, b)
	r1, done1 := ts.dial()
	r1.goExport("alpha", false)
	assert.Equal(t, 1, <-totals)
	r2, done2 := ts.dial()
	r2.goExport("beta", true)
	assert.Equal(t, 2, <-totals)
	assert.Equal(t, 1, ts.srv.Sessions("alpha"))
	assert.Equal(t, 1, ts.srv.Sessions("beta"))
	r1.request(CmdDisc, 0, 1, 0, 0, nil)
	require.NoError(t, <-done1)
	assert.Equal(t, 1, <-totals)
	assert.Equal(t, 0, ts.srv.Sessions("alpha"))
	for i := 0; i < 16; i++ {
		r2.request(CmdRead, 0, uint64(i), 0, 4096, nil)
		r2.readReply(0) // structured: the chunk carries its length
	}
	select {
	case n := <-totals:
		t.Fatalf("small requests changed the demand to %d", n)
	default:
	}
	r2.request(CmdDisc, 0, 1, 0, 0, nil)
	require.NoError(t, <-done2)
	assert.Equal(t, 0, <-totals)
}

func TestStreamingConnectionDemandsTwoCPUs(t *testing.T) {
	e, _ := memExport("e", 1<<20, disk.MemOptions{})
	totals := make(chan int, 64)
	ts := newTestServer(t, Options{DemandChanged: func(n int) { totals <- n }}, e)
	r, done := ts.dial()
	r.goExport("e", false)
	assert.Equal(t, 1, <-totals)
	for i := 0; i < 32; i++ {
		r.request(CmdRead, 0, uint64(i), 0, 512<<10, nil)
		r.readReply(512 << 10)
	}
	assert.Equal(t, 2, <-totals, "large reads: two CPUs")
	for i := 0; i < 64; i++ {
		r.request(CmdRead, 0, uint64(i), 0, 4096, nil)
		r.readReply(4096)
	}
	assert.Equal(t, 1, <-totals, "back to small requests: one CPU")
	r.request(CmdDisc, 0, 1, 0, 0, nil)
	require.NoError(t, <-done)
	assert.Equal(t, 0, <-totals)
}
