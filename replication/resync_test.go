package replication

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
)

// syncEvents records the resync callbacks of a link.
type syncEvents struct {
	mu         sync.Mutex
	acks       []rsAck
	mismatches [][2]int64
	bitmaps    chan []byte
	uuids      chan uint64
}

type rsAck struct {
	off, n int64
	ok     bool
}

func watchSync(cfg *LinkConfig) *syncEvents {
	e := &syncEvents{bitmaps: make(chan []byte, 16), uuids: make(chan uint64, 16)}
	cfg.OnResyncAck = func(off, n int64, ok bool) {
		e.mu.Lock()
		e.acks = append(e.acks, rsAck{off, n, ok})
		e.mu.Unlock()
	}
	cfg.OnVerifyMismatch = func(off, n int64) {
		e.mu.Lock()
		e.mismatches = append(e.mismatches, [2]int64{off, n})
		e.mu.Unlock()
	}
	cfg.OnBitmap = func(rle []byte) { e.bitmaps <- rle }
	cfg.OnSyncUUID = func(u uint64) { e.uuids <- u }
	return e
}

func (e *syncEvents) takeAcks() []rsAck {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.acks
	e.acks = nil
	return a
}

func (e *syncEvents) ackCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.acks)
}

func (e *syncEvents) takeMismatches() [][2]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.mismatches
	e.mismatches = nil
	return m
}

// resyncCall runs one Resync and returns its result; it fails the test if
// done is called more than once.
func resyncCall(t *testing.T, l *Link, off, n int64, csum []byte) ResyncResult {
	t.Helper()
	ch := make(chan ResyncResult, 2)
	require.NoError(t, l.Resync(off, n, csum, func(r ResyncResult) { ch <- r }))
	r := recv(t, ch, "the resync's done")
	assert.Equal(t, off, r.Offset)
	assert.Equal(t, n, r.Length)
	select {
	case <-ch:
		t.Error("done called twice")
	case <-time.After(time.Millisecond):
	}
	return r
}

// digestOf is Digest(alg) applied to b.
func digestOf(t *testing.T, alg string, b []byte) []byte {
	t.Helper()
	sum, _, err := Digest(alg)
	require.NoError(t, err)
	return sum(nil, b)
}

// textBytes is n bytes of compressible text.
func textBytes(seed, n int) []byte {
	var sb strings.Builder
	for i := 0; sb.Len() < n; i++ {
		fmt.Fprintf(&sb, "block %d of resource r0, seed %d: the quick brown fox jumps over the lazy dog\n", i, seed)
	}
	return []byte(sb.String()[:n])
}

// randomBytes is n incompressible bytes.
func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 17))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func memWith(t testing.TB, content []byte) *disk.Mem {
	t.Helper()
	m := disk.NewMem(int64(len(content)), disk.MemOptions{})
	require.NoError(t, m.WriteAt(content, 0, false))
	return m
}

func TestDigest(t *testing.T) {
	b := []byte("twinblock")
	for _, tc := range []struct {
		alg  string
		size int
		hex  string
	}{
		{"crc32c", 4, "2a1c9f89"},
		{"MD5", 16, "31bf64e2d42f4bf3b437a31d4436ec19"},
		{" sha1", 20, "56fec2c91df8a2177c90e3a59de0427931647f7e"},
		{"sha256", 32, "b32e3e7c4a5e37791d92af289ce3a9db247acebdd79840265dc3098fd89654f9"},
	} {
		sum, size, err := Digest(tc.alg)
		require.NoError(t, err, tc.alg)
		assert.Equal(t, tc.size, size)
		d := sum([]byte("prefix"), b)
		assert.Equal(t, "prefix", string(d[:6]), "appends")
		assert.Len(t, d[6:], size)
		assert.Equal(t, tc.hex, fmt.Sprintf("%x", d[6:]), tc.alg)
		assert.Zero(t, testing.AllocsPerRun(10, func() { d = sum(d[:0], b) }), "%s allocates", tc.alg)
	}
	for _, alg := range []string{"", "sha512", "crc32", "none"} {
		_, _, err := Digest(alg)
		require.ErrorIs(t, err, ErrUnknownDigest, alg)
		assert.Contains(t, err.Error(), fmt.Sprintf("%q", alg))
	}
}

func TestLinkConfigRejectsUnknownAlgorithms(t *testing.T) {
	for _, edit := range []func(*LinkConfig){
		func(c *LinkConfig) { c.CsumsAlg = "sha512" },
		func(c *LinkConfig) { c.VerifyAlg = "crc64" },
		func(c *LinkConfig) { c.Compression = "lz4" },
	} {
		cfg := testConfig("a", "b", 'C', nil)
		edit(&cfg)
		_, err := cfg.withDefaults()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "replication: link config: ")
	}
}

func TestLinkBitmapExchange(t *testing.T) {
	checkGoroutines(t)
	cfgA, cfgB := testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', nil)
	cfgA.DataSize, cfgB.DataSize = 1<<36, 1<<35 // the larger disk sets the bound
	cfgA.MaxPayload, cfgB.MaxPayload = 64<<10, 1<<20
	evB := watchSync(&cfgB)
	la, lb := linkPair(t, true, cfgA, cfgB)
	assert.Equal(t, 1<<36/4096+1+bitmapSlack, lb.maxBitmap)
	chunk := int(la.MaxPayload())
	require.Equal(t, 64<<10, chunk)

	for i, n := range []int{0, 1, chunk - 1, chunk, 3 * chunk, 3*chunk + 5, 5 << 20} {
		rle := randomBytes(uint64(i), n)
		require.NoError(t, la.SendBitmap(rle))
		got := recv(t, evB.bitmaps, "the bitmap")
		require.NotNil(t, got)
		sameBytes(t, rle, got, fmt.Sprintf("bitmap of %d bytes", n))
	}

	// A real one, both ways.
	bm, err := bitmap.New(1<<36, 4096)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(5, 5))
	for range 50000 {
		first := rng.Uint64N(bm.Bits())
		bm.Set(first, min(first+rng.Uint64N(64), bm.Bits()-1))
	}
	rle := bm.EncodeRLE(nil)
	require.Greater(t, len(rle), chunk, "more than one chunk")
	require.NoError(t, la.SendBitmap(rle))
	got, err := bitmap.New(1<<36, 4096)
	require.NoError(t, err)
	require.NoError(t, got.DecodeRLE(recv(t, evB.bitmaps, "the bitmap")))
	assert.Equal(t, bm.Count(), got.Count())
	assert.Equal(t, rle, got.EncodeRLE(nil))

	require.ErrorIs(t, la.SendBitmap(make([]byte, la.maxBitmap+1)), ErrBadRequest)
	assert.Empty(t, evB.bitmaps)
}

func TestLinkSyncUUID(t *testing.T) {
	checkGoroutines(t)
	cfgA, cfgB := testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', nil)
	evB := watchSync(&cfgB)
	la, _ := linkPair(t, false, cfgA, cfgB)
	require.NoError(t, la.SendSyncUUID(0xdeadbeefcafe))
	assert.Equal(t, uint64(0xdeadbeefcafe), recv(t, evB.uuids, "the sync UUID"))
}

func TestLinkResync(t *testing.T) {
	checkGoroutines(t)
	content := patternBytes(3, testDiskSize)
	clear(content[512<<10 : 576<<10]) // a range of zeroes
	src := memWith(t, content)
	rec := &recorder{}
	dstMem := memWith(t, patternBytes(200, testDiskSize))
	cfgA, cfgB := testConfig("a", "b", 'C', src), testConfig("b", "a", 'C', disk.NewFaulty(dstMem, rec.inject))
	cfgA.CsumsAlg, cfgB.CsumsAlg = "sha256", "SHA256"
	evA := watchSync(&cfgA)
	la, lb := linkPair(t, true, cfgA, cfgB)

	// The data.
	r := resyncCall(t, lb, 4096, 65536, nil)
	require.NoError(t, r.Err)
	assert.Equal(t, ResyncResult{Offset: 4096, Length: 65536, Wire: 65536}, r)
	sameBytes(t, content[4096:4096+65536], dstMem.Bytes()[4096:4096+65536], "the resynced range")
	assert.Equal(t, []disk.Op{{Kind: disk.OpWrite, Off: 4096, Len: 65536}}, rec.take())
	eventually(t, "the source has the ack", func() bool { return evA.ackCount() > 0 })
	assert.Equal(t, []rsAck{{4096, 65536, true}}, evA.takeAcks())

	// All zeroes: no payload, WriteZeroes.
	r = resyncCall(t, lb, 512<<10, 64<<10, nil)
	assert.Equal(t, ResyncResult{Offset: 512 << 10, Length: 64 << 10, Zero: true}, r)
	assert.Equal(t, []disk.Op{{Kind: disk.OpWriteZeroes, Off: 512 << 10, Len: 64 << 10, NoHole: true}}, rec.take())
	sameBytes(t, content[512<<10:576<<10], dstMem.Bytes()[512<<10:576<<10], "zeroes")

	// A checksum that matches: in sync, nothing crosses, nothing is written.
	csum := digestOf(t, "sha256", dstMem.Bytes()[4096:4096+65536])
	r = resyncCall(t, lb, 4096, 65536, csum)
	assert.Equal(t, ResyncResult{Offset: 4096, Length: 65536, InSync: true}, r)
	assert.Empty(t, rec.take())
	assert.Equal(t, uint64(16), la.Stats().ResyncSameCsum)

	// One that does not: the data.
	csum = digestOf(t, "sha256", dstMem.Bytes()[128<<10:160<<10])
	r = resyncCall(t, lb, 128<<10, 32<<10, csum)
	assert.Equal(t, ResyncResult{Offset: 128 << 10, Length: 32 << 10, Wire: 32 << 10}, r)
	sameBytes(t, content[128<<10:160<<10], dstMem.Bytes()[128<<10:160<<10], "after a checksum mismatch")
	assert.Equal(t, uint64(16), la.Stats().ResyncSameCsum)

	eventually(t, "every ack arrived", func() bool { return evA.ackCount() == 3 })
	assert.Equal(t, []rsAck{{512 << 10, 64 << 10, true}, {4096, 65536, true}, {128 << 10, 32 << 10, true}}, evA.takeAcks())
	eventually(t, "the source counted what it sent", func() bool { return la.Stats().ResyncSent == 65536+32<<10 })
	assert.Equal(t, uint64(65536+32<<10), lb.Stats().ResyncRecv)
	assert.Zero(t, la.Stats().CompressedIn)
	la.mu.Lock()
	assert.Empty(t, la.ss.served, "the source forgot every acked request")
	la.mu.Unlock()
	lb.mu.Lock()
	assert.Zero(t, lb.sc.calls.out)
	lb.mu.Unlock()
	assert.Zero(t, lb.Stats().Unacked, "resync writes are not writes of the write path")
}

func TestLinkResyncCompression(t *testing.T) {
	for _, codec := range []string{"s2", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			checkGoroutines(t)
			content := append(textBytes(1, testDiskSize/2), randomBytes(1, testDiskSize/2)...)
			dst := disk.NewMem(testDiskSize, disk.MemOptions{})
			cfgA, cfgB := testConfig("a", "b", 'C', memWith(t, content)), testConfig("b", "a", 'C', dst)
			cfgA.Compression = codec
			la, lb := linkPair(t, true, cfgA, cfgB)

			text := resyncCall(t, lb, 0, 256<<10, nil)
			require.NoError(t, text.Err)
			assert.Less(t, text.Wire, text.Length/4, "text compresses")
			random := resyncCall(t, lb, 512<<10, 256<<10, nil)
			require.NoError(t, random.Err)
			assert.Equal(t, random.Length, random.Wire, "random data goes raw")
			sameBytes(t, content[:256<<10], dst.Bytes()[:256<<10], "text")
			sameBytes(t, content[512<<10:768<<10], dst.Bytes()[512<<10:768<<10], "random")

			eventually(t, "the source counted what it sent", func() bool { return la.Stats().ResyncSent == uint64(text.Wire+random.Wire) })
			s := la.Stats()
			assert.Equal(t, uint64(512<<10), s.CompressedIn, "both were tried")
			assert.Greater(t, s.CompressedOut, uint64(text.Wire))
			assert.Equal(t, uint64(text.Wire+random.Wire), lb.Stats().ResyncRecv)
			assert.Zero(t, lb.Stats().CompressedIn, "the target compresses nothing")
		})
	}
}

// TestLinkDataCompression: with CompressReplication, Data payloads cross
// compressed (or as a length, when all zero) and land unchanged.
func TestLinkDataCompression(t *testing.T) {
	for _, tc := range []struct {
		codec string
		proto byte
	}{{"s2", 'C'}, {"zstd", 'C'}, {"zstd", 'A'}} {
		t.Run(fmt.Sprintf("%s/%c", tc.codec, tc.proto), func(t *testing.T) {
			checkGoroutines(t)
			rec := &recorder{}
			dst := disk.NewMem(testDiskSize, disk.MemOptions{})
			cfgA, cfgB := testConfig("a", "b", tc.proto, nil), testConfig("b", "a", tc.proto, disk.NewFaulty(dst, rec.inject))
			cfgA.Compression, cfgA.CompressReplication = tc.codec, true
			la, lb := linkPair(t, true, cfgA, cfgB)
			model := make([]byte, testDiskSize)
			var total uint64
			write := func(off int64, data []byte, flags DataFlags) {
				t.Helper()
				r := &Request{Op: OpWrite, Offset: off, Data: data, Flags: flags}
				require.NoError(t, la.Submit(r))
				require.NoError(t, waitErr(t, r))
				copy(model[off:], data)
				total += uint64(len(data))
			}
			write(0, textBytes(2, 64<<10), DataFUA)
			write(128<<10, randomBytes(2, 64<<10), 0)
			write(256<<10, randomBytes(3, 64<<10), 0)
			readAll(t, la) // under A: until the peer applied them
			rec.take()
			write(256<<10, make([]byte, 64<<10), DataFUA) // zeroes over data
			write(512<<10, textBytes(3, DefaultMaxPayload/2), 0)
			write(300<<10, []byte{1}, 0)
			sameBytes(t, model, readAll(t, la), "the peer's disk")
			ops := rec.take() // under A in any order: the writes do not overlap
			assert.Contains(t, ops, disk.Op{Kind: disk.OpWriteZeroes, Off: 256 << 10, Len: 64 << 10, NoHole: true, FUA: true},
				"an all-zero write crosses as its length")
			assert.Len(t, ops, 3)
			s := la.Stats()
			assert.Equal(t, total, s.SentBytes, "ns counts what was written")
			assert.Equal(t, total, lb.Stats().RecvBytes)
			assert.Greater(t, s.CompressedIn, s.CompressedOut)
			assert.Equal(t, uint64(64<<10+64<<10+64<<10+DefaultMaxPayload/2+1), s.CompressedIn, "everything but the zeroes was tried")
		})
	}
}

// TestLinkCompressionNeedsThePeer: a node compresses only for a peer that
// announced it decodes that codec.
func TestLinkCompressionNeedsThePeer(t *testing.T) {
	checkGoroutines(t)
	cfg := testConfig("a", "b", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
	cfg.Compression, cfg.CompressReplication = "zstd", true
	hello := &Hello{ProtoMin: ProtoVersionMin, ProtoMax: ProtoVersionMax, Resource: "r0", From: "b", To: "a", Protocol: 'C',
		Features: FeatureRLE | FeatureCompressS2, MaxPayload: DefaultMaxPayload, DataSize: testDiskSize}
	p, links, _ := newRawPeer(t, cfg, hello, false)
	l := recv(t, links, "the link")
	t.Cleanup(func() { closeLink(t, l) })
	assert.Equal(t, CodecNone, l.dataCodec)
	assert.Equal(t, CodecNone, l.syncCodec)
	r := &Request{Op: OpWrite, Data: textBytes(1, 8192)}
	require.NoError(t, l.Submit(r))
	m, ok := p.next().(*Data)
	require.True(t, ok)
	assert.Equal(t, DataFlags(0), m.Flags)
	assert.Equal(t, r.Data, m.Payload)
	p.send(&WriteAck{ID: m.ID})
	require.NoError(t, waitErr(t, r))
}

// appLock is the node's application-write range lock, as the tests use
// it: one mutex for the whole disk. entered announces LockRange calls.
type appLock struct {
	mu      sync.Mutex
	entered chan [2]int64
	served  chan [2]int64 // unlocks
}

func newAppLock() *appLock {
	return &appLock{entered: make(chan [2]int64, 64), served: make(chan [2]int64, 64)}
}

func (a *appLock) lockRange(off, n int64) func() {
	a.entered <- [2]int64{off, n}
	a.mu.Lock()
	return func() {
		a.mu.Unlock()
		a.served <- [2]int64{off, n}
	}
}

// contentRecorder records the content of every write that completed, in
// completion order.
type contentRecorder struct {
	disk.Disk
	mu     sync.Mutex
	writes []recordedWrite
}

type recordedWrite struct {
	off  int64
	data []byte
}

func (c *contentRecorder) WriteAt(p []byte, off int64, fua bool) error {
	err := c.Disk.WriteAt(p, off, fua)
	c.mu.Lock()
	c.writes = append(c.writes, recordedWrite{off, bytes.Clone(p)})
	c.mu.Unlock()
	return err
}

func (c *contentRecorder) take() []recordedWrite {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

// holdFirstWrite is an injector that holds the first write until release.
type holdFirstWrite struct {
	once    atomic.Bool
	entered chan struct{}
	open    chan struct{}
}

func newHoldFirstWrite() *holdFirstWrite {
	return &holdFirstWrite{entered: make(chan struct{}, 1), open: make(chan struct{})}
}

func (h *holdFirstWrite) inject(op disk.Op) error {
	if op.Kind == disk.OpWrite && h.once.CompareAndSwap(false, true) {
		h.entered <- struct{}{}
		<-h.open
	}
	return nil
}

// TestLinkResyncOrdering: the resync answer is ordered with the source's
// application writes by LockRange and the one send queue, and on the
// target with the Data frames by the applier.
func TestLinkResyncOrdering(t *testing.T) {
	const n = 8192
	setup := func(t *testing.T) (la, lb *Link, src *disk.Mem, dst *contentRecorder, lock *appLock, hold *holdFirstWrite) {
		src = memWith(t, patternBytes(1, testDiskSize))
		hold = newHoldFirstWrite()
		dst = &contentRecorder{Disk: disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), hold.inject)}
		lock = newAppLock()
		cfgA, cfgB := testConfig("a", "b", 'C', src), testConfig("b", "a", 'C', dst)
		cfgA.LockRange = lock.lockRange
		la, lb = linkPair(t, true, cfgA, cfgB)
		t.Cleanup(func() {
			select {
			case <-hold.open:
			default:
				close(hold.open)
			}
		})
		return
	}
	// appWrite is the node's write path on the source: under the range
	// lock, the local write and the Data frame.
	appWrite := func(t *testing.T, la *Link, src *disk.Mem, lock *appLock, data []byte, locked bool) *Request {
		if !locked {
			lock.mu.Lock()
		}
		require.NoError(t, src.WriteAt(data, 0, false))
		r := &Request{Op: OpWrite, Offset: 0, Data: data}
		require.NoError(t, la.Submit(r))
		lock.mu.Unlock()
		return r
	}

	t.Run("a write after the read lands after the answer", func(t *testing.T) {
		checkGoroutines(t)
		la, lb, src, dst, lock, hold := setup(t)
		old := bytes.Clone(src.Bytes()[:n])
		results := make(chan ResyncResult, 1)
		require.NoError(t, lb.Resync(0, n, nil, func(r ResyncResult) { results <- r }))
		assert.Equal(t, [2]int64{0, n}, recv(t, lock.served, "the source answered and unlocked"))
		recv(t, hold.entered, "the resync write at the target's disk (held)")

		w := appWrite(t, la, src, lock, patternBytes(9, n), false)
		eventually(t, "the write arrived and waits", func() bool { return lb.Stats().Unacked == 1 })
		assert.Empty(t, dst.take(), "the write waits for the resync write")
		close(hold.open)
		require.NoError(t, recv(t, results, "the resync").Err)
		require.NoError(t, waitErr(t, w))
		got := dst.take()
		require.Len(t, got, 2)
		assert.Equal(t, old, got[0].data, "first the answer, with what the source had when it read")
		assert.Equal(t, w.Data, got[1].data, "then the write")
		sameBytes(t, w.Data, readAll(t, la)[:n], "the target ends with the write")
	})

	t.Run("a write before the read is what the answer carries", func(t *testing.T) {
		checkGoroutines(t)
		la, lb, src, dst, lock, hold := setup(t)
		lock.mu.Lock() // an application write is in progress on the source
		results := make(chan ResyncResult, 1)
		require.NoError(t, lb.Resync(0, n, nil, func(r ResyncResult) { results <- r }))
		assert.Equal(t, [2]int64{0, n}, recv(t, lock.entered, "the source's read waits for the lock"))
		w := appWrite(t, la, src, lock, patternBytes(7, n), true) // unlocks
		recv(t, hold.entered, "the write at the target's disk (held)")
		eventually(t, "the answer arrived and waits", func() bool {
			lb.mu.Lock()
			defer lb.mu.Unlock()
			return lb.sc.calls.calls[0] != nil && lb.sc.calls.calls[0].answered
		})
		assert.Empty(t, results)
		close(hold.open)
		require.NoError(t, waitErr(t, w))
		r := recv(t, results, "the resync")
		require.NoError(t, r.Err)
		got := dst.take()
		require.Len(t, got, 2)
		assert.Equal(t, w.Data, got[0].data, "first the write")
		assert.Equal(t, w.Data, got[1].data, "then the answer, which carries it")
		sameBytes(t, w.Data, readAll(t, la)[:n], "the target ends with the write")
	})
}

func TestLinkVerify(t *testing.T) {
	checkGoroutines(t)
	content := patternBytes(5, testDiskSize)
	peer := bytes.Clone(content)
	const off, n = 2 * BlockSize, 12*BlockSize + 100 // 13 blocks, the last one short
	for _, blk := range []int{0, 3, 4, 12} {
		peer[off+blk*BlockSize+7] ^= 0xff
	}
	peer[off+n] ^= 0xff // just past the range: not compared
	peerDisk := memWith(t, peer)
	cfgA, cfgB := testConfig("a", "b", 'C', memWith(t, content)), testConfig("b", "a", 'C', peerDisk)
	cfgA.VerifyAlg, cfgB.VerifyAlg = "sha1", "sha1"
	lock := newAppLock()
	cfgB.LockRange = lock.lockRange
	evB := watchSync(&cfgB)
	la, _ := linkPair(t, true, cfgA, cfgB)

	sum, size, err := Digest("sha1")
	require.NoError(t, err)
	var digests []byte
	for i := off; i < off+n; i += BlockSize {
		digests = sum(digests, content[i:min(i+BlockSize, off+n)])
	}
	require.Len(t, digests, 13*size)
	results := make(chan VerifyResult, 2)
	require.NoError(t, la.Verify(off, n, digests, func(r VerifyResult) {
		r.Mismatch = bytes.Clone(r.Mismatch) // valid during the callback only
		results <- r
	}))
	clear(digests) // the link copied them
	r := recv(t, results, "the verify")
	require.NoError(t, r.Err)
	assert.Equal(t, int64(off), r.Offset)
	assert.Equal(t, int64(n), r.Length)
	assert.Equal(t, []byte{0b0001_1001, 0b0001_0000}, r.Mismatch)
	assert.Equal(t, [][2]int64{{off, BlockSize}, {off + 3*BlockSize, 2 * BlockSize}, {off + 12*BlockSize, 100}},
		evB.takeMismatches(), "the peer marks the runs that differ")
	assert.Equal(t, [2]int64{off, n}, recv(t, lock.served, "the peer read under the lock"))

	// Identical ranges: no bit, no callback.
	digests = sum(nil, content[:BlockSize])
	require.NoError(t, la.Verify(0, BlockSize, digests, func(r VerifyResult) {
		r.Mismatch = bytes.Clone(r.Mismatch)
		results <- r
	}))
	r = recv(t, results, "the verify")
	require.NoError(t, r.Err)
	assert.Equal(t, []byte{0}, r.Mismatch)
	assert.Empty(t, evB.takeMismatches())
	assert.Empty(t, results, "done is called once")
}

func TestLinkVerifyErrors(t *testing.T) {
	checkGoroutines(t)
	peer := disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), disk.FailAll(disk.OpRead))
	cfgA, cfgB := testConfig("a", "b", 'C', nil), testConfig("b", "a", 'C', peer)
	cfgA.VerifyAlg, cfgB.VerifyAlg = "crc32c", "crc32c"
	evB := watch(&cfgB)
	la, _ := linkPair(t, true, cfgA, cfgB)
	verify := func(off, n int64) VerifyResult {
		t.Helper()
		results := make(chan VerifyResult, 2)
		require.NoError(t, la.Verify(off, n, make([]byte, blocksOf(n)*4), func(r VerifyResult) { results <- r }))
		return recv(t, results, "the verify")
	}
	r := verify(0, 8192)
	require.ErrorIs(t, r.Err, ErrPeerIO)
	require.ErrorIs(t, r.Err, syscall.EIO)
	assert.Nil(t, r.Mismatch)
	assert.ErrorIs(t, recv(t, evB.diskErrors, "OnDiskError"), disk.ErrInjected)
	r = verify(testDiskSize-4096, 8192)
	require.ErrorIs(t, r.Err, syscall.EINVAL, "past the end of the peer's disk")

	// Bad calls.
	for _, tc := range []struct {
		off, n  int64
		digests []byte
		done    func(VerifyResult)
	}{
		{0, 0, nil, func(VerifyResult) {}},
		{0, 4096, make([]byte, 3), func(VerifyResult) {}},
		{0, 4097, make([]byte, 4), func(VerifyResult) {}},
		{-1, 4096, make([]byte, 4), func(VerifyResult) {}},
		{0, DefaultMaxPayload + 4096, make([]byte, 4*257), func(VerifyResult) {}},
		{0, 4096, make([]byte, 4), nil},
	} {
		require.ErrorIs(t, la.Verify(tc.off, tc.n, tc.digests, tc.done), ErrBadRequest, "%+v", tc)
	}
}

func TestLinkAlgMismatch(t *testing.T) {
	checkGoroutines(t)
	content := patternBytes(4, testDiskSize)
	cfgA, cfgB := testConfig("a", "b", 'C', memWith(t, content)), testConfig("b", "a", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
	cfgA.CsumsAlg, cfgB.CsumsAlg = "md5", "crc32c"
	cfgA.VerifyAlg, cfgB.VerifyAlg = "sha256", "sha1"
	la, lb := linkPair(t, true, cfgA, cfgB)
	r := resyncCall(t, lb, 0, 4096, make([]byte, 4))
	require.ErrorIs(t, r.Err, ErrAlgMismatch)
	assert.Contains(t, r.Err.Error(), "peer a does not use crc32c")
	require.NoError(t, resyncCall(t, lb, 0, 4096, nil).Err, "without a checksum the algorithms do not matter")

	results := make(chan VerifyResult, 1)
	require.NoError(t, la.Verify(0, 4096, make([]byte, 32), func(r VerifyResult) { results <- r }))
	require.ErrorIs(t, recv(t, results, "the verify").Err, ErrAlgMismatch)
	require.NoError(t, la.Err(), "a mismatch is an answer, not a violation")
}

func TestLinkResyncErrors(t *testing.T) {
	checkGoroutines(t)
	var failReads atomic.Bool
	src := disk.NewFaulty(memWith(t, patternBytes(6, testDiskSize/2)), func(op disk.Op) error {
		if op.Kind == disk.OpRead && failReads.Load() {
			return disk.ErrInjected
		}
		return nil
	})
	var failWrites atomic.Bool
	dst := disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), func(op disk.Op) error {
		if op.Kind == disk.OpWrite && failWrites.Load() {
			return disk.ErrInjected
		}
		return nil
	})
	cfgA, cfgB := testConfig("a", "b", 'C', src), testConfig("b", "a", 'C', dst)
	cfgB.CsumsAlg = "crc32c"
	evA, evB := watch(&cfgA), watch(&cfgB)
	syncA := watchSync(&cfgA)
	la, lb := linkPair(t, true, cfgA, cfgB)

	// The source cannot read.
	failReads.Store(true)
	r := resyncCall(t, lb, 0, 8192, nil)
	require.ErrorIs(t, r.Err, ErrPeerIO)
	require.ErrorIs(t, r.Err, syscall.EIO)
	assert.Contains(t, r.Err.Error(), "peer a: resync read of 8192 bytes at 0 failed")
	assert.ErrorIs(t, recv(t, evA.diskErrors, "OnDiskError on the source"), disk.ErrInjected)
	failReads.Store(false)

	// Past the end of the source's smaller disk.
	r = resyncCall(t, lb, testDiskSize/2, 4096, nil)
	require.ErrorIs(t, r.Err, syscall.EINVAL)
	assert.Empty(t, evA.diskErrors, "the requester's mistake")

	// The target cannot write.
	failWrites.Store(true)
	r = resyncCall(t, lb, 4096, 4096, nil)
	require.ErrorIs(t, r.Err, disk.ErrInjected)
	assert.NotErrorIs(t, r.Err, ErrPeerIO)
	assert.ErrorIs(t, recv(t, evB.diskErrors, "OnDiskError on the target"), disk.ErrInjected)
	eventually(t, "the source heard", func() bool { return syncA.ackCount() == 1 })
	assert.Equal(t, []rsAck{{4096, 4096, false}}, syncA.takeAcks(), "the source keeps it out of sync")
	failWrites.Store(false)
	require.NoError(t, resyncCall(t, lb, 4096, 4096, nil).Err)

	// Bad calls.
	for _, tc := range []struct {
		name   string
		off, n int64
		csum   []byte
		done   func(ResyncResult)
	}{
		{"no done", 0, 4096, nil, nil},
		{"zero length", 0, 0, nil, func(ResyncResult) {}},
		{"over max payload", 0, DefaultMaxPayload + 1, nil, func(ResyncResult) {}},
		{"past the local disk", testDiskSize - 4096, 8192, nil, func(ResyncResult) {}},
		{"negative", -4096, 4096, nil, func(ResyncResult) {}},
		{"checksum of the wrong size", 0, 4096, make([]byte, 5), func(ResyncResult) {}},
	} {
		require.ErrorIs(t, lb.Resync(tc.off, tc.n, tc.csum, tc.done), ErrBadRequest, tc.name)
	}
	require.ErrorIs(t, la.Resync(0, 4096, make([]byte, 4), func(ResyncResult) {}), ErrBadRequest, "a checksum without csums-alg")

	// A diskless node neither asks nor serves.
	cfgC, cfgD := testConfig("c", "d", 'C', nil), testConfig("d", "c", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
	lc, ld := linkPair(t, false, cfgC, cfgD)
	require.ErrorIs(t, lc.Resync(0, 4096, nil, func(ResyncResult) {}), ErrBadRequest)
	r = resyncCall(t, ld, 0, 4096, nil)
	require.ErrorIs(t, r.Err, ErrPeerIO)
	require.ErrorIs(t, r.Err, syscall.EIO)
}

// TestLinkResyncAckOnFailure: a target that fails to write tells the
// source, which keeps the range out of sync.
func TestLinkResyncAckOnFailure(t *testing.T) {
	checkGoroutines(t)
	dst := disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), disk.FailAll(disk.OpWrite))
	cfgA, cfgB := testConfig("a", "b", 'C', memWith(t, patternBytes(1, testDiskSize))), testConfig("b", "a", 'C', dst)
	syncA := watchSync(&cfgA)
	_, lb := linkPair(t, true, cfgA, cfgB)
	r := resyncCall(t, lb, 8192, 4096, nil)
	require.ErrorIs(t, r.Err, disk.ErrInjected)
	eventually(t, "the source heard", func() bool { return syncA.ackCount() == 1 })
	assert.Equal(t, []rsAck{{8192, 4096, false}}, syncA.takeAcks())
}

func TestLinkResyncCloseCompletesOutstanding(t *testing.T) {
	for _, held := range []string{"source reads", "target writes"} {
		t.Run(held, func(t *testing.T) {
			checkGoroutines(t)
			srcGate, dstGate := newGate(), newGate()
			if held == "source reads" {
				srcGate = newGate(disk.OpRead)
			} else {
				dstGate = newGate(disk.OpWrite)
			}
			src := disk.NewFaulty(memWith(t, patternBytes(1, testDiskSize)), srcGate.inject)
			dst := disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), dstGate.inject)
			cfgA, cfgB := testConfig("a", "b", 'C', src), testConfig("b", "a", 'C', dst)
			evB := watch(&cfgB)
			la, lb := linkPair(t, true, cfgA, cfgB)
			t.Cleanup(srcGate.release)
			t.Cleanup(dstGate.release)

			const k = 8
			var calls [k]atomic.Int32
			errs := make(chan error, 2*k)
			for i := range k {
				require.NoError(t, lb.Resync(int64(i)*8192, 8192, nil, func(r ResyncResult) {
					calls[i].Add(1)
					errs <- r.Err
				}))
			}
			if held == "source reads" {
				recv(t, srcGate.entered, "a read at the source")
			} else {
				recv(t, dstGate.entered, "a resync write at the target")
			}
			closed := make(chan struct{})
			go func() {
				_ = lb.Close("operator disconnect")
				close(closed)
			}()
			if held == "target writes" {
				eventually(t, "the target is ending", func() bool { return lb.Err() != nil })
				dstGate.release() // Close waits for the disk
			}
			recv(t, closed, "Close")
			for range k {
				err := recv(t, errs, "a done")
				require.ErrorIs(t, err, ErrLinkClosed)
				assert.Contains(t, err.Error(), "operator disconnect")
			}
			<-lb.Done()
			for i := range calls {
				assert.Equal(t, int32(1), calls[i].Load(), "done of resync %d", i)
			}
			assert.Empty(t, errs)
			require.ErrorIs(t, lb.Resync(0, 4096, nil, func(ResyncResult) { t.Error("done after a failed Resync") }), ErrLinkClosed)
			assert.Equal(t, int32(1), evB.closes.Load())
			srcGate.release()
			closeLink(t, la)
		})
	}
}

// TestLinkResyncLimits: a node keeps at most 32 resync and verify
// requests outstanding; more wait in Resync.
func TestLinkResyncLimits(t *testing.T) {
	checkGoroutines(t)
	g := newGate(disk.OpRead)
	src := disk.NewFaulty(memWith(t, patternBytes(1, testDiskSize)), g.inject)
	cfgA, cfgB := testConfig("a", "b", 'C', src), testConfig("b", "a", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
	la, lb := linkPair(t, true, cfgA, cfgB)
	t.Cleanup(g.release)
	var done atomic.Int32
	for i := range maxSyncRequests {
		require.NoError(t, lb.Resync(int64(i)*4096, 4096, nil, func(ResyncResult) { done.Add(1) }))
	}
	returned := make(chan error, 1)
	go func() { returned <- lb.Resync(200*4096, 4096, nil, func(ResyncResult) { done.Add(1) }) }()
	eventually(t, "the source serves all 32", func() bool {
		la.mu.Lock()
		defer la.mu.Unlock()
		return len(la.ss.served) == maxSyncRequests
	})
	time.Sleep(10 * time.Millisecond)
	assert.Empty(t, returned, "the 33rd waits for a slot")
	g.release()
	require.NoError(t, recv(t, returned, "the 33rd Resync"))
	eventually(t, "all done", func() bool { return done.Load() == maxSyncRequests+1 })
}

// TestLinkResyncReplyViolations: a source that answers wrongly is cut off,
// and the resync completes with the violation.
func TestLinkResyncReplyViolations(t *testing.T) {
	zstdOf := func(n int) []byte {
		e, err := zstd.NewWriter(nil)
		require.NoError(t, err)
		defer e.Close()
		return e.EncodeAll(make([]byte, n), nil)
	}
	for _, tc := range []struct {
		name  string
		csum  bool
		reply func(id uint64) []Message
		want  string
	}{
		{"short data", false, func(id uint64) []Message { return []Message{&ResyncReply{ID: id, Payload: make([]byte, 100)}} },
			"100 bytes (none) for a request of 4096"},
		{"s2 of the wrong size", false, func(id uint64) []Message {
			return []Message{&ResyncReply{ID: id, Codec: CodecS2, Payload: s2Block(8192)}}
		}, "8192 bytes (s2) for a request of 4096"},
		{"zstd of the wrong size", false, func(id uint64) []Message {
			return []Message{&ResyncReply{ID: id, Codec: CodecZstd, Payload: zstdOf(2048)}}
		}, "2048 bytes (zstd) for a request of 4096"},
		{"s2 that does not decode", false, func(id uint64) []Message {
			return []Message{&ResyncReply{ID: id, Codec: CodecS2, Payload: []byte{0x80, 0x20, 0xff, 0xff, 0xff}}}
		}, "compressed payload does not decode: s2"},
		{"in sync without a checksum", false, func(id uint64) []Message { return []Message{&ResyncReply{ID: id, Status: StatusInSync}} },
			"in sync, but the request carried no checksum"},
		{"two answers", true, func(id uint64) []Message {
			return []Message{&ResyncReply{ID: id, Status: StatusInSync}, &ResyncReply{ID: id, Status: StatusInSync}}
		}, "answers no resync request in flight"},
		{"verify answer to a resync", false, func(id uint64) []Message {
			return []Message{&VerifyReply{ID: id, Mismatch: []byte{1}}}
		}, "VerifyReply: ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			cfg := testConfig("a", "b", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
			cfg.CsumsAlg = "crc32c"
			ev := watch(&cfg)
			p, links, _ := newRawPeer(t, cfg, nil, false)
			l := recv(t, links, "the link")
			t.Cleanup(func() { closeLink(t, l) })
			results := make(chan ResyncResult, 2)
			var csum []byte
			if tc.csum {
				csum = make([]byte, 4)
			}
			require.NoError(t, l.Resync(0, 4096, csum, func(r ResyncResult) { results <- r }))
			req, ok := p.next().(*ResyncRequest)
			require.True(t, ok)
			assert.Equal(t, ResyncRequest{ID: req.ID, Length: 4096, Alg: map[bool]DigestAlg{true: DigestCRC32C}[tc.csum], Csum: csum}, *req)
			for _, m := range tc.reply(req.ID) {
				p.send(m)
			}
			assert.Contains(t, p.goodbye(), tc.want)
			p.nc.Close()
			cause := ev.waitClosed(t)
			require.ErrorIs(t, cause, ErrProtocol)
			r := recv(t, results, "the resync")
			if tc.name != "two answers" { // there the first answer may have completed it
				require.ErrorIs(t, r.Err, ErrLinkClosed)
				require.ErrorIs(t, r.Err, ErrProtocol)
			}
			<-l.Done()
			assert.Empty(t, results, "done is called once")
		})
	}
}

// TestLinkResyncAckViolations: the source checks the target's acks.
func TestLinkResyncAckViolations(t *testing.T) {
	for _, tc := range []struct {
		name string
		ack  func(id uint64) Message
		want string
	}{
		{"another range", func(id uint64) Message { return &ResyncAck{ID: id, Offset: 4096, Length: 4096} },
			"ResyncAck: ID 9 acks 4096 bytes at 4096, the request was 4096 at 0"},
		{"twice", nil, "ResyncAck: ID 9 acks no resync request served"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			cfg := testConfig("a", "b", 'C', memWith(t, patternBytes(2, testDiskSize)))
			ev := watch(&cfg)
			sev := watchSync(&cfg)
			p, links, _ := newRawPeer(t, cfg, nil, false)
			l := recv(t, links, "the link")
			t.Cleanup(func() { closeLink(t, l) })
			p.send(&ResyncRequest{ID: 9, Length: 4096})
			reply, ok := p.next().(*ResyncReply)
			require.True(t, ok)
			assert.Equal(t, StatusOK, reply.Status)
			if tc.ack == nil {
				p.send(&ResyncAck{ID: 9, Length: 4096})
				p.send(&ResyncAck{ID: 9, Length: 4096})
			} else {
				p.send(tc.ack(9))
			}
			assert.Contains(t, p.goodbye(), tc.want)
			p.nc.Close()
			require.ErrorIs(t, ev.waitClosed(t), ErrProtocol)
			if tc.ack == nil {
				assert.Equal(t, []rsAck{{0, 4096, true}}, sev.takeAcks())
			}
		})
	}
}

// TestLinkVerifyReplyViolations: the verifier checks the mismatch bits.
func TestLinkVerifyReplyViolations(t *testing.T) {
	for _, tc := range []struct {
		name string
		bits []byte
		want string
	}{
		{"too many bytes", []byte{0, 0}, "2 bytes of mismatch bits for 3 blocks"},
		{"bits past the range", []byte{0x08}, "mismatch bits past block 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			cfg := testConfig("a", "b", 'C', nil)
			cfg.VerifyAlg = "md5"
			ev := watch(&cfg)
			p, links, _ := newRawPeer(t, cfg, nil, false)
			l := recv(t, links, "the link")
			t.Cleanup(func() { closeLink(t, l) })
			results := make(chan VerifyResult, 1)
			require.NoError(t, l.Verify(0, 3*4096, make([]byte, 3*16), func(r VerifyResult) { results <- r }))
			req, ok := p.next().(*VerifyRequest)
			require.True(t, ok)
			assert.Equal(t, DigestMD5, req.Alg)
			p.send(&VerifyReply{ID: req.ID, Mismatch: tc.bits})
			assert.Contains(t, p.goodbye(), tc.want)
			p.nc.Close()
			require.ErrorIs(t, ev.waitClosed(t), ErrProtocol)
			require.ErrorIs(t, recv(t, results, "the verify").Err, ErrLinkClosed)
		})
	}
}

// TestLinkCloseWithReadWaitingForTheLock: the node holds its range lock
// until the peer acked the write; a resync read waiting for that lock
// must not keep the link from ending when the ack never comes.
func TestLinkCloseWithReadWaitingForTheLock(t *testing.T) {
	checkGoroutines(t)
	g := newGate(disk.OpWrite) // the peer never completes the write
	src := memWith(t, patternBytes(1, testDiskSize))
	lock := newAppLock()
	cfgA, cfgB := testConfig("a", "b", 'C', src), testConfig("b", "a", 'C', disk.NewFaulty(disk.NewMem(testDiskSize, disk.MemOptions{}), g.inject))
	cfgA.LockRange = lock.lockRange
	la, lb := linkPair(t, true, cfgA, cfgB)
	t.Cleanup(g.release)

	lock.mu.Lock() // the application write, until its Wait returns
	w := &Request{Op: OpWrite, Offset: 0, Data: patternBytes(2, 4096)}
	require.NoError(t, la.Submit(w))
	writeDone := make(chan error, 1)
	go func() {
		err := w.Wait()
		lock.mu.Unlock()
		writeDone <- err
	}()
	recv(t, g.entered, "the write at the peer's disk (held)")
	results := make(chan ResyncResult, 1)
	require.NoError(t, lb.Resync(0, 8192, nil, func(r ResyncResult) { results <- r }))
	recv(t, lock.entered, "the source's read waits for the lock")

	closeLink(t, la) // fails the test if it hangs
	require.ErrorIs(t, recv(t, writeDone, "the write"), ErrLinkClosed)
	g.release()
	require.ErrorIs(t, recv(t, results, "the resync").Err, ErrLinkClosed)
}
