package nbd

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twinblock/twinblock/pkg/disk"
)

// benchRequests pushes b.N requests of one kind through a server from a
// client that allocates nothing, so allocs/op is the server's own cost
// per request (the design says: none in steady state). Over net.Pipe by
// default; over loopback TCP with tcp, where the connection reads with
// its pollReader. FUA requests run on the connection's workers, the
// others on its reader (the memory device is fast).
func benchRequests(b *testing.B, typ uint16, size uint32, flags uint16, tcp bool) {
	mem := disk.NewMem(64<<20, disk.MemOptions{})
	srv, err := NewServer(Options{Catalog: NewStaticCatalog(&Export{Name: "e", Device: mem})})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	var cEnd net.Conn
	if tcp {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = srv.Serve(ln) }()
		if cEnd, err = net.Dial("tcp", ln.Addr().String()); err != nil {
			b.Fatal(err)
		}
	} else {
		var sEnd net.Conn
		cEnd, sEnd = net.Pipe()
		go func() { _ = srv.ServeConn(sEnd) }()
	}
	r := &raw{t: &testing.T{}, c: cEnd, br: bufio.NewReaderSize(cEnd, 1<<20)}
	r.goExport("e", false)
	_ = cEnd.SetDeadline(time.Time{}) // raw's calls set them

	req := AppendRequestHeader(nil, RequestHeader{Type: typ, Flags: flags, Length: size})
	if typ == CmdWrite {
		req = append(req, make([]byte, size)...)
	}
	replyLen := simpleReplyHeaderSize
	if typ == CmdRead {
		replyLen += int(size)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, replyLen)
		for i := 0; i < b.N; i++ {
			if _, err := io.ReadFull(r.br, buf); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := cEnd.Write(req); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	b.StopTimer()
	cEnd.Close()
}

func BenchmarkWrite4K(b *testing.B) { benchRequests(b, CmdWrite, 4096, 0, false) }
func BenchmarkRead4K(b *testing.B)  { benchRequests(b, CmdRead, 4096, 0, false) }
func BenchmarkWrite1M(b *testing.B) { benchRequests(b, CmdWrite, 1<<20, 0, false) }

// TestRequestPathDoesNotAllocate keeps the steady-state request path free
// of heap allocations. The race detector allocates on its own, so `make
// unit` runs this test a second time without -race.
func TestRequestPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, tc := range []struct {
		typ   uint16
		size  uint32
		flags uint16
		tcp   bool
	}{
		{CmdWrite, 4096, 0, false}, {CmdRead, 4096, 0, false}, {CmdWrite, 256 << 10, 0, false},
		{CmdWrite, 4096, 0, true}, {CmdWrite, 4096, CmdFlagFUA, true}, {CmdRead, 4096, CmdFlagFUA, true},
	} {
		name := fmt.Sprintf("%s %d flags %#x tcp %v", CommandName(tc.typ), tc.size, tc.flags, tc.tcp)
		res := testing.Benchmark(func(b *testing.B) { benchRequests(b, tc.typ, tc.size, tc.flags, tc.tcp) })
		perOp := float64(res.MemAllocs) / float64(res.N)
		t.Logf("%s: %.3f allocs/request over %d requests", name, perOp, res.N)
		if perOp > 0.05 {
			t.Errorf("%s: %.3f allocations per request, want none", name, perOp)
		}
	}
}
