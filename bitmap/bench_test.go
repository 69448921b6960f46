package bitmap

import "testing"

// The scale issue 3 asks about: a 1 TiB device at 4 KiB per bit is 2^28
// bits, 32 MiB of words.
const tib = int64(1) << 40

func BenchmarkScanClean1TiB(b *testing.B) {
	bm, err := New(tib, 4096)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := bm.NextSet(0); ok {
			b.Fatal("clean bitmap has a set bit")
		}
	}
}

func BenchmarkSetAllAndCount1TiB(b *testing.B) {
	bm, err := New(tib, 4096)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bm.SetAll()
		if bm.Count() != bm.Bits() {
			b.Fatal("count")
		}
		bm.Clear(0, bm.Bits()-1)
	}
}

func BenchmarkEncodeRLE1TiB(b *testing.B) {
	bm, err := New(tib, 4096)
	if err != nil {
		b.Fatal(err)
	}
	for i := uint64(0); i < 1000; i++ {
		bm.Set(i*100_000, i*100_000+50)
	}
	b.ResetTimer()
	var n int
	for i := 0; i < b.N; i++ {
		n = len(bm.EncodeRLE(nil))
	}
	b.ReportMetric(float64(n), "bytes")
}
