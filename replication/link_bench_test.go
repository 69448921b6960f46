package replication

import (
	"fmt"
	"testing"

	"github.com/twinblock/twinblock/pkg/disk"
)

// benchWrites runs b.N writes of size bytes through a link over TCP on
// 127.0.0.1 to a peer with a disk.Mem, with depth requests in flight (one
// goroutine, a ring of Requests: wait for the oldest, submit it again).
func benchWrites(b *testing.B, proto byte, size, depth int) {
	const diskSize = 256 << 20
	la, _ := linkPair(b, true, testConfig("a", "b", proto, nil),
		testConfig("b", "a", proto, disk.NewMem(diskSize, disk.MemOptions{})))
	reqs := make([]Request, depth)
	for i := range reqs {
		reqs[i] = Request{Op: OpWrite, Data: patternBytes(byte(i), size)}
	}
	slots := diskSize / size
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r := &reqs[i%depth]
		if i >= depth {
			if err := r.Wait(); err != nil {
				b.Fatal(err)
			}
		}
		r.Offset = int64(i%slots) * int64(size)
		if err := la.Submit(r); err != nil {
			b.Fatal(err)
		}
	}
	for i := range min(depth, b.N) {
		if err := reqs[i].Wait(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLinkWrite4K: 4 KiB writes, 32 in flight, protocol C.
func BenchmarkLinkWrite4K(b *testing.B) { benchWrites(b, 'C', 4096, 32) }

// BenchmarkLinkWriteMatrix: the other protocols, queue depths and sizes.
func BenchmarkLinkWriteMatrix(b *testing.B) {
	for _, tc := range []struct {
		proto       byte
		size, depth int
	}{{'C', 4096, 1}, {'A', 4096, 32}, {'B', 4096, 32}, {'C', 1 << 20, 4}} {
		b.Run(fmt.Sprintf("%c/%dK/QD%d", tc.proto, tc.size>>10, tc.depth), func(b *testing.B) {
			benchWrites(b, tc.proto, tc.size, tc.depth)
		})
	}
}
