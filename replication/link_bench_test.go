package replication

import (
	"fmt"
	"sync/atomic"
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

// benchResync runs b.N resync requests of size bytes over TCP on
// 127.0.0.1, with depth in flight, from a target with a disk.Mem to a
// source whose disk holds content (compressed with compression). With
// csum, the target's disk holds the same and every request carries its
// checksum (crc32c), so the source answers "in sync".
func benchResync(b *testing.B, content []byte, compression string, csum bool, size, depth int) {
	src := disk.NewMem(int64(len(content)), disk.MemOptions{})
	dst := disk.NewMem(int64(len(content)), disk.MemOptions{})
	if err := src.WriteAt(content, 0, false); err != nil {
		b.Fatal(err)
	}
	cfgA, cfgB := testConfig("a", "b", 'C', src), testConfig("b", "a", 'C', dst)
	cfgA.Compression = compression
	var sums [][]byte
	slots := len(content) / size
	if csum {
		cfgA.CsumsAlg, cfgB.CsumsAlg = "crc32c", "crc32c"
		if err := dst.WriteAt(content, 0, false); err != nil {
			b.Fatal(err)
		}
		sum, _, _ := Digest("crc32c")
		for i := range slots {
			sums = append(sums, sum(nil, content[i*size:(i+1)*size]))
		}
	}
	_, lb := linkPair(b, true, cfgA, cfgB)
	sem := make(chan struct{}, depth)
	var failed atomic.Pointer[error]
	var wire atomic.Int64
	done := func(r ResyncResult) {
		if r.Err != nil {
			failed.Store(&r.Err)
		}
		wire.Add(r.Wire)
		<-sem
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		sem <- struct{}{}
		slot := i % slots
		var c []byte
		if csum {
			c = sums[slot]
		}
		if err := lb.Resync(int64(slot*size), int64(size), c, done); err != nil {
			b.Fatal(err)
		}
	}
	for range depth {
		sem <- struct{}{}
	}
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	b.ReportMetric(float64(wire.Load())/float64(b.N)/float64(size), "wire/byte")
}

// BenchmarkLinkResync1M: 1 MiB resync requests, 16 in flight,
// uncompressed.
func BenchmarkLinkResync1M(b *testing.B) {
	benchResync(b, patternBytes(1, 64<<20), "", false, 1<<20, 16)
}

// BenchmarkLinkResyncMatrix: compression of text and of random data, and
// checksums that match (nothing crosses).
func BenchmarkLinkResyncMatrix(b *testing.B) {
	text, random := textBytes(1, 64<<20), randomBytes(1, 64<<20)
	for _, tc := range []struct {
		name        string
		content     []byte
		compression string
		csum        bool
	}{
		{"s2/text", text, "s2", false}, {"zstd/text", text, "zstd", false},
		{"s2/random", random, "s2", false}, {"zstd/random", random, "zstd", false},
		{"crc32c/in-sync", random, "", true},
	} {
		b.Run(tc.name, func(b *testing.B) { benchResync(b, tc.content, tc.compression, tc.csum, 1<<20, 16) })
	}
}
