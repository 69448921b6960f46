package meta

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/genid"
)

// newInternal formats internal metadata on a fresh crashable disk of
// size bytes and returns the disk and its layout.
func newInternal(t *testing.T, size int64, al int) (*disk.Crash, Layout) {
	t.Helper()
	d := disk.NewCrash(size)
	l, err := ComputeLayout(InternalPlacement, size, size, DefaultGranularity, al)
	require.NoError(t, err)
	_, err = Format(d, l)
	require.NoError(t, err)
	return d, l
}

func TestSuperblockRoundTrip(t *testing.T) {
	_, l := newInternal(t, 1<<30, 1237)
	sb := Superblock{Seq: 42, DataSize: l.DataSize, GI: genid.GI{0xDEADBEEF00, 0x1234, 0x5678, 0x9ABC}, DeviceUUID: 77,
		Flags: genid.FlagConsistent | genid.FlagWasUpToDate | genid.FlagPrimaryInd, Granularity: 4096, Placement: l.Placement,
		Capacity: l.Capacity, MDOffset: l.MDOffset, MDSize: l.MDSize, ALOffset: l.ALOffset, ALSize: l.ALSize,
		ALExtents: 1237, ALEpoch: 9, BMOffset: l.BMOffset, BMSize: l.BMSize, PeerMaxBio: 1 << 20, QuorumEpoch: 0x0102030405060708}
	buf := make([]byte, slotSize)
	sb.encode(buf)
	got, st, err := decodeSuperblock(buf)
	require.NoError(t, err)
	assert.Equal(t, slotValid, st)
	assert.Equal(t, sb, got)
	assert.Equal(t, l, got.Layout())
	assert.Equal(t, []byte{1, 2, 3, 4, 5, 6, 7, 8}, buf[152:160], "the quorum epoch's place (docs/metadata.md)")

	// A superblock written before the quorum epoch existed (zero there)
	// reads as 0.
	old := sb
	old.QuorumEpoch = 0
	old.encode(buf)
	got, _, err = decodeSuperblock(buf)
	require.NoError(t, err)
	assert.Zero(t, got.QuorumEpoch)

	buf[100] ^= 1
	_, st, err = decodeSuperblock(buf)
	require.NoError(t, err)
	assert.Equal(t, slotTorn, st, "a flipped bit fails the checksum")
	_, st, _ = decodeSuperblock(make([]byte, slotSize))
	assert.Equal(t, slotEmpty, st)
}

// The superblock alternates slots, and a write torn at any sector leaves
// the previous version readable.
func TestSuperblockTornWrite(t *testing.T) {
	d, l := newInternal(t, 64<<20, 67)
	m, err := Open(d, InternalPlacement, Options{Name: "d"})
	require.NoError(t, err)
	before := m.Superblock()
	// Update again without flushing: make the write cached, then tear it.
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 200; i++ {
		require.NoError(t, m.Update(func(s *Superblock) { s.GI[genid.Current] = uint64(i) << 8 }))
		cur := m.Superblock()
		// A crash now: the update is durable (FUA).
		sb, _, err := Probe(d.CrashClone(rng, 0), InternalPlacement, "d")
		require.NoError(t, err)
		assert.Equal(t, cur, sb)
	}
	assert.Greater(t, m.Superblock().Seq, before.Seq)

	// Tear the next superblock write: every surviving subset of its
	// sectors yields the old or the new version, never an error.
	block := make([]byte, SuperblockSize)
	require.NoError(t, d.ReadAt(block, l.MDOffset))
	next := m.Superblock()
	next.Seq++
	next.GI[genid.Current] = 0xFEED00
	next.encode(block[slotFor(next.Seq)*slotStride:])
	require.NoError(t, d.WriteAt(block, l.MDOffset, false)) // cached
	seen := map[uint64]bool{}
	for i := 0; i < 200; i++ {
		sb, warn, err := Probe(d.CrashClone(rng, 0.5), InternalPlacement, "d")
		require.NoError(t, err)
		seen[sb.GI[genid.Current]] = true
		if sb.GI[genid.Current] != next.GI[genid.Current] {
			assert.Equal(t, m.Superblock(), sb)
			if warn != "" {
				assert.Contains(t, warn, "torn")
			}
		}
	}
	assert.Len(t, seen, 2, "both outcomes occur")
}

func TestCorruptionIsReported(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(d disk.Disk, l Layout)
		want    func(l Layout) string
		is      error
	}{
		{
			name: "both superblock slots",
			corrupt: func(d disk.Disk, l Layout) {
				flip(d, l.MDOffset+100)
				flip(d, l.MDOffset+slotStride+100)
			},
			want: func(l Layout) string {
				return fmt.Sprintf("metadata checksum mismatch on DISK at offset %d (superblock)", l.MDOffset)
			},
			is: ErrChecksum,
		},
		{
			name:    "no metadata",
			corrupt: func(d disk.Disk, l Layout) { _ = d.WriteAt(make([]byte, SuperblockSize), l.MDOffset, true) },
			want: func(l Layout) string {
				return fmt.Sprintf("no twinblock metadata on DISK at offset %d (run create-md)", l.MDOffset)
			},
			is: ErrNoMetadata,
		},
		{
			name: "a required log transaction",
			corrupt: func(d disk.Disk, l Layout) {
				flip(d, l.ALOffset+1*ALBlockSize+200) // transaction 1 of 0..5
			},
			want: func(l Layout) string {
				return fmt.Sprintf("metadata checksum mismatch on DISK at offset %d (activity log transaction 1)", l.ALOffset+ALBlockSize)
			},
			is: ErrChecksum,
		},
		{
			name: "a bitmap bit past the end",
			corrupt: func(d disk.Disk, l Layout) {
				flip(d, l.BMOffset+l.BMSize-1)
			},
			want: func(l Layout) string { return "invalid metadata on DISK" },
			is:   ErrInvalid,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, l := newInternal(t, 64<<20, 67)
			m, err := Open(d, InternalPlacement, Options{Name: "DISK"})
			require.NoError(t, err)
			for e := int64(0); e < 6; e++ { // six transactions, then a "crash"
				require.NoError(t, m.BeginWrite(e*ExtentSize, 4096))
				m.EndWrite(e*ExtentSize, 4096)
			}
			tc.corrupt(d, l)
			before := d.CrashClone(rand.New(rand.NewPCG(1, 1)), 1)
			_, err = Open(d, InternalPlacement, Options{Name: "DISK"})
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), tc.want(l))
			assert.Equal(t, dump(before), dump(d), "nothing was written")
			_, err = Inspect(d, InternalPlacement, "DISK")
			assert.ErrorIs(t, err, tc.is, "dump-md reports it too")
		})
	}
}

func flip(d disk.Disk, off int64) {
	b := make([]byte, 1)
	_ = d.ReadAt(b, off)
	b[0] ^= 0x10
	_ = d.WriteAt(b, off, true)
}

func dump(d *disk.Crash) []byte {
	b := make([]byte, d.Size())
	_ = d.ReadAt(b, 0)
	return b
}

func TestOpenRefusesAMismatch(t *testing.T) {
	d, _ := newInternal(t, 64<<20, 67)
	_, err := Open(d, ExternalPlacement(-1), Options{Name: "d"})
	require.Error(t, err) // superblock of an external layout sits at 0: nothing there
	assert.ErrorIs(t, err, ErrNoMetadata)

	ext := disk.NewCrash(1 << 20)
	l, err := ComputeLayout(ExternalPlacement(-1), 64<<20, 1<<20, 4096, 67)
	require.NoError(t, err)
	_, err = Format(ext, l)
	require.NoError(t, err)
	_, err = Open(ext, ExternalPlacement(0), Options{Name: "ext"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "created for meta-disk external (flexible), the configuration says external[0]")

	_, err = Open(d, InternalPlacement, Options{Name: "d", ALExtents: 7000})
	assert.ErrorContains(t, err, "al-extents 7000 does not fit")
}

func TestLifecycle(t *testing.T) {
	d, l := newInternal(t, 256<<20, 67)
	sb, _, err := Probe(d, InternalPlacement, "d")
	require.NoError(t, err)
	assert.Equal(t, genid.GI{genid.UUIDJustCreated}, sb.GI)
	assert.Equal(t, genid.FlagALClean, sb.Flags)

	m, err := Open(d, InternalPlacement, Options{Name: "d"})
	require.NoError(t, err)
	assert.Empty(t, m.Recovered())
	assert.Zero(t, m.Superblock().Flags&genid.FlagALClean, "attached: the log is not clean")
	assert.Equal(t, uint64(1), m.Superblock().ALEpoch)

	require.NoError(t, m.BeginWrite(10<<20, 8192))
	assert.Equal(t, uint64(2), m.MarkOutOfSync(10<<20, 8192))
	m.EndWrite(10<<20, 8192)
	require.NoError(t, m.Update(func(s *Superblock) { s.Flags |= genid.FlagConsistent | genid.FlagWasUpToDate | genid.FlagPrimaryInd }))
	require.NoError(t, m.Close())
	require.ErrorIs(t, m.BeginWrite(0, 1), ErrClosed)
	require.ErrorIs(t, m.Update(func(*Superblock) {}), ErrClosed)
	require.NoError(t, m.Close(), "a second Close returns the first one's result")

	// Clean: nothing to replay, the bits persisted; the Primary flag
	// left set turns into "crashed primary", as DRBD's attach does.
	m, err = Open(d, InternalPlacement, Options{Name: "d"})
	require.NoError(t, err)
	assert.Empty(t, m.Recovered())
	assert.Equal(t, uint64(2), m.OutOfSync())
	assert.NotZero(t, m.Superblock().Flags&genid.FlagCrashedPrimary)
	assert.Equal(t, uint64(2), m.SetInSync(10<<20, 8192))
	assert.Zero(t, m.SetInSync(0, 100), "a partial block is not cleared")

	// A crash: the log's extent comes back out of sync.
	require.NoError(t, m.BeginWrite(100<<20, 4096))
	m.EndWrite(100<<20, 4096)
	m2, err := Open(d.CrashClone(rand.New(rand.NewPCG(1, 2)), 0), InternalPlacement, Options{Name: "d"})
	require.NoError(t, err)
	assert.Equal(t, []uint32{25}, m2.Recovered())
	// The extent written to is out of sync, and so are the two blocks
	// cleared in memory only before the crash: a clear costs a resync,
	// never data.
	assert.Equal(t, uint64(ExtentSize/4096+2), m2.OutOfSync())
	assert.Len(t, m2.Warnings(), 1)
	assert.Equal(t, l.DataSize, m2.Layout().DataSize)
}

// A write straddling two extents, one of them idle in a full log, must
// not evict its own other extent (it once found the LRU empty and
// panicked).
func TestBeginWriteKeepsItsOwnExtents(t *testing.T) {
	d, _ := newInternal(t, 1<<30, MinALExtents)
	m, err := Open(d, InternalPlacement, Options{Name: "d"})
	require.NoError(t, err)
	require.NoError(t, m.BeginWrite(100*ExtentSize, 4096)) // extent 100, then idle
	m.EndWrite(100*ExtentSize, 4096)
	for e := int64(0); e < MinALExtents-1; e++ { // every other slot held
		require.NoError(t, m.BeginWrite(e*ExtentSize, 4096))
	}
	done := make(chan error, 1)
	go func() { done <- m.BeginWrite(100*ExtentSize-4096, 8192) }() // extents 99 and 100
	select {
	case err := <-done:
		t.Fatalf("BeginWrite returned %v with no slot free for extent 99", err)
	case <-time.After(50 * time.Millisecond):
	}
	m.EndWrite(0, 4096) // frees a slot: now it fits
	require.NoError(t, <-done)
	active := map[uint32]bool{}
	for _, e := range m.Active() {
		active[e] = true
	}
	assert.True(t, active[99] && active[100])
	assert.False(t, active[0])

	assert.ErrorIs(t, m.BeginWrite(m.Layout().DataSize-4096, 8192), disk.ErrOutOfRange)
	assert.ErrorIs(t, m.BeginWrite(-1, 1), disk.ErrOutOfRange)
}

func TestNewCurrentUUID(t *testing.T) {
	d, _ := newInternal(t, 64<<20, 67)
	m, err := Open(d, InternalPlacement, Options{Name: "d"})
	require.NoError(t, err)
	m.MarkOutOfSync(0, 1<<20)
	require.NoError(t, m.SyncBitmap())
	require.NoError(t, m.NewCurrentUUID(true, false))
	g := m.Superblock().GI
	assert.Equal(t, genid.UUIDJustCreated, g[genid.Bitmap])
	assert.Equal(t, genid.UUIDPrimaryBit, g[genid.Current]&genid.UUIDPrimaryBit)
	assert.Equal(t, uint64(256), m.OutOfSync())

	// As drbd_adm_new_c_uuid: the old bitmap UUID goes to the history,
	// the current one becomes the bitmap UUID; --clear-bitmap clears the
	// bits only.
	require.NoError(t, m.NewCurrentUUID(false, true))
	g2 := m.Superblock().GI
	// The bitmap UUID keeps bit 0: this node was Primary when it began.
	assert.Equal(t, genid.GI{g2[genid.Current], g[genid.Current], genid.UUIDJustCreated, 0}, g2)
	assert.Zero(t, g2[genid.Current]&genid.UUIDPrimaryBit)
	assert.NotEqual(t, g[genid.Current]&^genid.UUIDPrimaryBit, g2[genid.Current])
	assert.Zero(t, m.OutOfSync())
	require.NoError(t, m.Close())
	s, err := Inspect(d, InternalPlacement, "d")
	require.NoError(t, err)
	assert.Zero(t, s.Bitmap.Count(), "the cleared bitmap is persisted")
	assert.Equal(t, g2, s.Superblock.GI)
}

// Activity-log cost, reported by the issue: a working set that fits the
// log costs no metadata writes after warm-up; a walk over the disk costs
// about one transaction per new extent.
func TestActivityLogCost(t *testing.T) {
	d, _ := newInternal(t, 8<<30, 1237) // 2047 extents
	m, err := Open(d, InternalPlacement, Options{Name: "d"})
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(4, 4))
	write := func(off int64) {
		require.NoError(t, m.BeginWrite(off, 4096))
		m.EndWrite(off, 4096)
	}
	// Working set: 1000 extents (4000 MiB), random 4 KiB writes.
	hot := func() int64 { return rng.Int64N(1000)*ExtentSize + rng.Int64N(1024)*4096 }
	for i := 0; i < 20000; i++ {
		write(hot())
	}
	warm := m.Stats()
	for i := 0; i < 100000; i++ {
		write(hot())
	}
	after := m.Stats()
	assert.Equal(t, warm, after, "no metadata writes after warm-up")

	// Walk: sequential writes over all 2048 extents, 1000 of them in the log.
	m2, err := Open(d, InternalPlacement, Options{Name: "d"}) // new epoch, empty log
	require.NoError(t, err)
	before := m2.Stats()
	var newExtents int
	for off := int64(0); off+4096 <= m2.Layout().DataSize; off += 64 << 10 {
		if off%ExtentSize == 0 {
			newExtents++
		}
		require.NoError(t, m2.BeginWrite(off, 4096))
		m2.EndWrite(off, 4096)
	}
	walk := m2.Stats()
	tx := walk.ALTransactions - before.ALTransactions
	t.Logf("working set of 1000 extents: %d transactions during warm-up, %d metadata writes in 100000 writes after; walk over %d extents: %d transactions, %d evictions, %d bitmap page writes",
		warm.ALTransactions, (after.ALTransactions-warm.ALTransactions)+(after.BitmapPageWrites-warm.BitmapPageWrites)+(after.SuperblockWrites-warm.SuperblockWrites),
		newExtents, tx, walk.ALEvictions-before.ALEvictions, walk.BitmapPageWrites-before.BitmapPageWrites)
	assert.Equal(t, uint64(newExtents), tx, "one transaction per new extent when writes come one at a time")
	assert.Equal(t, uint64(newExtents-1237), walk.ALEvictions-before.ALEvictions)
}

// Concurrent writers share transactions and never see an extent leave
// the log while they hold it; run with -race.
func TestConcurrentWriters(t *testing.T) {
	d, _ := newInternal(t, 1<<30, 67) // 255 extents, 67 slots
	m, err := Open(d, InternalPlacement, Options{Name: "d"})
	require.NoError(t, err)
	var wg sync.WaitGroup
	var bad sync.Map
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for i := 0; i < 400; i++ {
				off := rng.Int64N(254)*ExtentSize + ExtentSize - 4096 // straddles two extents
				if err := m.BeginWrite(off, 8192); err != nil {
					bad.Store(i, err)
					return
				}
				active := map[uint32]bool{}
				for _, e := range m.Active() {
					active[e] = true
				}
				if !active[uint32(off/ExtentSize)] || !active[uint32(off/ExtentSize)+1] {
					bad.Store(i, errors.New("held extent not in the log"))
				}
				m.EndWrite(off, 8192)
			}
		}()
	}
	wg.Wait()
	bad.Range(func(k, v any) bool { t.Errorf("%v", v); return true })
	st := m.Stats()
	t.Logf("16×400 writes: %d transactions, %d evictions", st.ALTransactions, st.ALEvictions)
	assert.LessOrEqual(t, st.ALTransactions, st.ALEvictions+67+1)
	require.NoError(t, m.Close())
}

func TestALReplay(t *testing.T) {
	const n = 2000 // three context windows: 919 + 919 + 162
	ring := make([]byte, DefaultALSize)
	r := DefaultALSize / ALBlockSize
	core := newALCore(n)
	truth := make([]uint32, n)
	for i := range truth {
		truth[i] = FreeSlot
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for seq := 0; seq < 40; seq++ {
		var batch []pendingUpdate
		for k := 0; k < rng.IntN(5); k++ {
			s := rng.IntN(n)
			e := uint32(rng.IntN(100000))
			batch = append(batch, pendingUpdate{alUpdate{uint16(s), e}, FreeSlot})
			truth[s] = e
		}
		tx := core.makeTx(batch, 3)
		tx.encode(ring[int(tx.Seq)%r*ALBlockSize:])
		got, err := replayAL(ring, 0, "d", 3, n)
		require.NoError(t, err, "after transaction %d", seq)
		require.Equal(t, truth, got, "after transaction %d", seq)
		_, err = replayAL(ring, 0, "d", 4, n)
		require.NoError(t, err, "another epoch ignores them")

		// The block after the newest may be torn; any other required
		// one may not.
		torn := append([]byte(nil), ring...)
		next := (seq + 1) % r
		torn[next*ALBlockSize+300] ^= 1
		got, err = replayAL(torn, 0, "d", 3, n)
		require.NoError(t, err)
		require.Equal(t, truth, got)
		if seq >= 2 {
			bad := append([]byte(nil), ring...)
			bad[(seq-1)%r*ALBlockSize+300] ^= 1
			_, err = replayAL(bad, 0, "d", 3, n)
			require.ErrorIs(t, err, ErrChecksum)
		}
	}
}

func TestDump(t *testing.T) {
	d, _ := newInternal(t, 256<<20, 67)
	m, err := Open(d, InternalPlacement, Options{Name: "d"})
	require.NoError(t, err)
	require.NoError(t, m.BeginWrite(0, 4096))
	m.MarkOutOfSync(0, 3*4096)
	m.MarkOutOfSync(64*4096*8, 4096) // word 8, bit 0
	m.EndWrite(0, 4096)
	require.NoError(t, m.SyncBitmap())
	// Not closed: the log is not clean.
	s, err := Inspect(d, InternalPlacement, "d")
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, s.WriteDump(&buf, "d"))
	out := buf.String()
	for _, want := range []string{
		"version \"twinblock-v1\";\n",
		"# meta-disk internal on d\n",
		"    0x0000000000000004; 0x0000000000000000; 0x0000000000000000; 0x0000000000000000;\n",
		"    flags 0x00000000;\n",
		"la-size-sect " + fmt.Sprint(s.Superblock.DataSize/512) + ";\n",
		"# activity log: not clean, 1 extents to mark out of sync at attach:\n#   0\n",
		"# bits-set 4;\n",
		"    0x0000000000000007;\n   7 times 0x0000000000000000;\n    0x0000000000000001;\n",
	} {
		assert.Contains(t, out, want)
	}
	assert.True(t, strings.HasSuffix(out, " times 0x0000000000000000;\n}\n# bits-set 4;\n"), out[len(out)-100:])
	var bm *bitmap.Bitmap
	m.WithBitmap(func(b *bitmap.Bitmap) { bm = b })
	assert.Equal(t, uint64(4), bm.Count())
}

// TestALUpdatesNo: with the activity log disabled a write costs no
// metadata I/O, and only a crash while Primary costs a full resync
// (DRBD's attach: CRASHED_PRIMARY with MDF_AL_DISABLED). The flag that
// counts is the one recorded when the node crashed.
func TestALUpdatesNo(t *testing.T) {
	for _, tc := range []struct {
		name     string
		primary  bool // the superblock says Primary while writing
		demote   bool // ... and stops saying it before the crash
		clean    bool // Close instead of a crash
		reattach bool // the next attach has al-updates yes
		fullSync bool
		oos      uint64 // blocks out of sync after the attach, without a full sync
	}{
		{name: "crash as Primary", primary: true, fullSync: true},
		{name: "crash as Primary, reattached with al-updates yes", primary: true, reattach: true, fullSync: true},
		// Only a Primary writes through BeginWrite; a Secondary's marks
		// are made durable by SyncBitmap, with or without the log.
		{name: "crash as Secondary", primary: false, oos: 0},
		{name: "crash after demotion", primary: true, demote: true, oos: 2},
		{name: "clean detach as Primary", primary: true, clean: true, oos: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newInternal(t, 20<<20, 67)
			m, err := Open(d, InternalPlacement, Options{Name: "d", DisableAL: true})
			require.NoError(t, err)
			require.NotZero(t, m.Superblock().Flags&genid.FlagALDisabled)
			if tc.primary {
				require.NoError(t, m.Update(func(s *Superblock) { s.Flags |= genid.FlagPrimaryInd }))
			}
			before := m.Stats()
			for e := int64(0); e < 4; e++ { // four extents: four transactions with the log
				require.NoError(t, m.BeginWrite(e*ExtentSize, 4096))
				m.EndWrite(e*ExtentSize, 4096)
			}
			assert.Equal(t, before, m.Stats(), "no metadata I/O for a write")
			assert.Empty(t, m.Active())
			require.NoError(t, m.BeginWrite(ExtentSize, 8192))
			m.MarkOutOfSync(ExtentSize, 8192) // the peer did not take it
			m.EndWrite(ExtentSize, 8192)
			if tc.demote {
				require.NoError(t, m.Update(func(s *Superblock) { s.Flags &^= genid.FlagPrimaryInd }))
			}
			if tc.clean {
				require.NoError(t, m.Close())
			}
			crashed := d.CrashClone(rand.New(rand.NewPCG(1, 2)), 0)

			s, err := Inspect(crashed, InternalPlacement, "d")
			require.NoError(t, err)
			assert.Equal(t, tc.fullSync, s.FullSync)
			var dump bytes.Buffer
			require.NoError(t, s.WriteDump(&dump, "d"))
			if tc.fullSync {
				assert.Contains(t, dump.String(), "# activity log: disabled (al-updates no) and not clean after a crash as Primary: attach marks every block out of sync\n")
			}

			m2, err := Open(crashed, InternalPlacement, Options{Name: "d", DisableAL: !tc.reattach})
			require.NoError(t, err)
			if tc.fullSync {
				assert.EqualValues(t, m2.Layout().DataSize/4096, m2.OutOfSync(), "a full resync")
				require.Len(t, m2.Warnings(), 1)
				assert.Contains(t, m2.Warnings()[0], "al-updates no")
			} else {
				assert.Equal(t, tc.oos, m2.OutOfSync())
			}
			assert.Equal(t, !tc.reattach, m2.Superblock().Flags&genid.FlagALDisabled != 0, "the flag follows the configuration")
		})
	}
}
