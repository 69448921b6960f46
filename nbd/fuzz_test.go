package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twinblock/twinblock/pkg/disk"
)

func FuzzDecodeRequestHeader(f *testing.F) {
	f.Add(AppendRequestHeader(nil, RequestHeader{Type: CmdWrite, Flags: CmdFlagFUA, Cookie: 7, Offset: 4096, Length: 512}))
	f.Add(make([]byte, 28))
	f.Add([]byte{0x25, 0x60, 0x95, 0x13})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeRequestHeader(b)
		if err != nil {
			return
		}
		if got := AppendRequestHeader(nil, h); string(got) != string(b[:requestHeaderSize]) {
			t.Fatalf("round trip: %x != %x", got, b[:requestHeaderSize])
		}
	})
}

// clientPrefix is what a client sends to reach the transmission phase on
// export "e" (fixed newstyle, no zeroes, optionally structured replies).
func clientPrefix(structured bool) []byte {
	b := binary.BigEndian.AppendUint32(nil, clientFlagFixedNewstyle|clientFlagNoZeroes)
	opt := func(o uint32, data []byte) {
		b = binary.BigEndian.AppendUint64(b, magicOption)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	if structured {
		opt(optStructuredReply, nil)
	}
	opt(optGo, infoData("e", infoBlockSize, infoName))
	return b
}

func transmissionSeeds() [][]byte {
	req := func(typ, flags uint16, off uint64, n uint32, payload bool) []byte {
		b := AppendRequestHeader(nil, RequestHeader{Type: typ, Flags: flags, Cookie: 1, Offset: off, Length: n})
		if payload {
			b = append(b, make([]byte, n)...)
		}
		return b
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	return [][]byte{
		cat(req(CmdWrite, 0, 0, 512, true), req(CmdRead, 0, 0, 512, false), req(CmdFlush, 0, 0, 0, false), req(CmdDisc, 0, 0, 0, false)),
		cat(req(CmdWrite, CmdFlagFUA, 4096, 4096, true), req(CmdTrim, 0, 0, 8192, false), req(CmdWriteZeroes, CmdFlagNoHole, 0, 4096, false)),
		cat(req(CmdRead, CmdFlagDF, 0, 1<<30, false), req(CmdWrite, 0, 1<<40, 16, true)),
		cat(req(CmdWrite, 0, 0, 1<<31, false), make([]byte, 100)),
		cat(req(99, 0xffff, ^uint64(0), ^uint32(0), false), req(CmdRead, 0, 0, 1, false)),
		make([]byte, 40),
	}
}

// serveBytes feeds in to a fresh server connection as the client and
// drains everything the server says; it fails if the server does not end
// the connection after the input ends.
func serveBytes(t *testing.T, in []byte) {
	dev := disk.NewMem(64<<10, disk.MemOptions{})
	srv, err := NewServer(Options{Catalog: NewStaticCatalog(&Export{Name: "e", Device: dev}), MaxPayload: 64 << 10, MaxInflight: 8})
	if err != nil {
		t.Fatal(err)
	}
	cEnd, sEnd := net.Pipe()
	done := make(chan struct{})
	go func() { _ = srv.ServeConn(sEnd); close(done) }()
	go func() { _, _ = io.Copy(io.Discard, cEnd) }()
	_, _ = cEnd.Write(in)
	cEnd.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("server did not finish after the input ended")
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}

func FuzzHandshake(f *testing.F) {
	f.Add(clientPrefix(false))
	f.Add(clientPrefix(true))
	f.Add(append(clientPrefix(true)[:4], make([]byte, 16)...))
	list := binary.BigEndian.AppendUint32(nil, clientFlagFixedNewstyle)
	list = binary.BigEndian.AppendUint64(list, magicOption)
	list = binary.BigEndian.AppendUint32(list, optList)
	list = binary.BigEndian.AppendUint32(list, 0)
	f.Add(list)
	f.Fuzz(func(t *testing.T, in []byte) { serveBytes(t, in) })
}

func FuzzTransmission(f *testing.F) {
	for _, s := range transmissionSeeds() {
		f.Add(false, s)
		f.Add(true, s)
	}
	f.Fuzz(func(t *testing.T, structured bool, in []byte) {
		serveBytes(t, append(clientPrefix(structured), in...))
	})
}
