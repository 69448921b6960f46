package nbd

import (
	"bufio"
	"io"
	"net"
	"testing"

	"github.com/twinblock/twinblock/pkg/disk"
)

// benchRequests pushes b.N requests of one kind through a server over
// net.Pipe from a client that allocates nothing, so allocs/op is the
// server's own cost per request (the design says: none in steady state).
func benchRequests(b *testing.B, typ uint16, size uint32) {
	mem := disk.NewMem(64<<20, disk.MemOptions{})
	srv, err := NewServer(Options{Catalog: NewStaticCatalog(&Export{Name: "e", Device: mem})})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	cEnd, sEnd := net.Pipe()
	go func() { _ = srv.ServeConn(sEnd) }()
	r := &raw{t: &testing.T{}, c: cEnd, br: bufio.NewReaderSize(cEnd, 1<<20)}
	r.goExport("e", false)

	req := AppendRequestHeader(nil, RequestHeader{Type: typ, Length: size})
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

func BenchmarkWrite4K(b *testing.B) { benchRequests(b, CmdWrite, 4096) }
func BenchmarkRead4K(b *testing.B)  { benchRequests(b, CmdRead, 4096) }
func BenchmarkWrite1M(b *testing.B) { benchRequests(b, CmdWrite, 1<<20) }

// TestRequestPathDoesNotAllocate keeps the steady-state request path free
// of heap allocations. The race detector allocates on its own, so `make
// unit` runs this test a second time without -race.
func TestRequestPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, tc := range []struct {
		typ  uint16
		size uint32
	}{{CmdWrite, 4096}, {CmdRead, 4096}, {CmdWrite, 256 << 10}} {
		res := testing.Benchmark(func(b *testing.B) { benchRequests(b, tc.typ, tc.size) })
		perOp := float64(res.MemAllocs) / float64(res.N)
		t.Logf("%s %d: %.3f allocs/request over %d requests", CommandName(tc.typ), tc.size, perOp, res.N)
		if perOp > 0.05 {
			t.Errorf("%s of %d bytes: %.3f allocations per request, want none", CommandName(tc.typ), tc.size, perOp)
		}
	}
}
