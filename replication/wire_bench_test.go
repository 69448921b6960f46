package replication

import (
	"net"
	"testing"
)

// BenchmarkEncodeData encodes 4 KiB writes into a reused buffer.
func BenchmarkEncodeData(b *testing.B) {
	m := &Data{ID: 1, Offset: 1 << 20, Payload: pattern(4096)}
	buf := make([]byte, 0, 8192)
	b.SetBytes(int64(len(m.Payload)))
	b.ReportAllocs()
	for b.Loop() {
		m.ID++
		var err error
		if buf, err = Append(buf[:0], m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeDataSplit is the writev way: header and fixed fields
// only, the payload is not copied.
func BenchmarkEncodeDataSplit(b *testing.B) {
	m := &Data{ID: 1, Offset: 1 << 20, Payload: pattern(4096)}
	buf := make([]byte, 0, 64)
	b.SetBytes(int64(len(m.Payload)))
	b.ReportAllocs()
	for b.Loop() {
		m.ID++
		var err error
		if buf, _, err = AppendSplit(buf[:0], m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeData decodes 4 KiB writes from memory (a loop over 64
// encoded frames), so it measures the decoder, not a socket.
func BenchmarkDecodeData(b *testing.B) {
	var stream []byte
	for i := range 64 {
		var err error
		if stream, err = Append(stream, &Data{ID: uint64(i), Offset: uint64(i) << 12, Payload: pattern(4096)}); err != nil {
			b.Fatal(err)
		}
	}
	d := NewDecoder(&loopReader{b: stream}, 0)
	b.SetBytes(4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeWriteAck decodes acks, the other hot message.
func BenchmarkDecodeWriteAck(b *testing.B) {
	stream, err := Append(nil, &WriteAck{ID: 7})
	if err != nil {
		b.Fatal(err)
	}
	d := NewDecoder(&loopReader{b: stream}, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDataOverPipe sends 4 KiB writes through net.Pipe: encode,
// write, read, decode.
func BenchmarkDataOverPipe(b *testing.B) {
	client, server := net.Pipe()
	defer server.Close()
	m := &Data{ID: 1, Payload: pattern(4096)}
	frame, err := Append(nil, m)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer client.Close()
		for i := 0; i < b.N; i++ {
			if _, err := client.Write(frame); err != nil {
				return
			}
		}
	}()
	d := NewDecoder(server, 0)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Next(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	<-done
}
