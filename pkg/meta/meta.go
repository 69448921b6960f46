package meta

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/genid"
)

var (
	// ErrClosed is returned by a Meta after Close.
	ErrClosed = errors.New("meta: closed")
)

// Stats counts metadata I/O, so that tests and the status file can show
// what the activity log costs.
type Stats struct {
	SuperblockWrites uint64 // superblock updates
	ALTransactions   uint64 // activity-log transactions written
	ALEvictions      uint64 // extents that left the log
	BitmapPageWrites uint64 // 4 KiB bitmap pages written
	Flushes          uint64 // flushes of the meta (and data) device
}

// Options configure Open.
type Options struct {
	// Name is the meta device's path, used in messages.
	Name string
	// ALExtents, if not 0, is the configured al-extents; it replaces the
	// recorded one if the log's ring can hold it.
	ALExtents int
	// Data is the data device when it is not the meta device itself
	// (external metadata). It is flushed before a log transaction lets
	// extents go, so that their data writes are durable before the log
	// forgets them. Nil for internal metadata, where the meta device's
	// flush covers the data.
	Data disk.Disk
	// Logger receives warnings (a torn superblock slot, a recovery).
	Logger *slog.Logger
	// DisableAL is DRBD's `al-updates no`: BeginWrite writes no log
	// transaction (a write costs no metadata I/O however scattered the
	// writes are), and the superblock records genid.FlagALDisabled. The price
	// is DRBD's: attaching after a crash while Primary with the log
	// disabled marks the whole disk out of sync (a full resync), since
	// nothing says which extents had writes in flight.
	DisableAL bool
}

// Meta is the attached metadata of one device: the superblock, the dirty
// bitmap and the activity log. It is safe for concurrent use.
//
// Invariants (tested by the crash tests in crash_test.go):
//
//  1. The persisted superblock is the last one written completely: a
//     new version goes to the slot that does not hold the current one,
//     followed by a flush, before Update returns.
//  2. Before BeginWrite returns, the log transaction that puts the
//     written extents into the activity log is durable; a write to the
//     data area may start only then.
//  3. An extent leaves the log only when no write holds it, and only
//     after the bitmap pages that cover it are written and flushed, and
//     (external metadata) the data device is flushed.
//  4. Hence every bit set in memory but not on disk belongs to an extent
//     of the durable log, and every data write that may not have reached
//     the peer lies in a durable-log extent or under a durable bit. Open
//     after a crash (log not clean) marks the log's extents out of sync,
//     which restores "differs from the peer ⇒ marked out of sync".
//
// With the log disabled (Options.DisableAL, al-updates no), 2 and 3 do
// not hold; instead:
//
//  5. The superblock says genid.FlagALDisabled, and genid.FlagPrimaryInd whenever
//     writes may be in flight (the node is Primary: the caller persists
//     it before it writes); the bitmap is written before a superblock
//     that clears genid.FlagPrimaryInd. Open after a crash with both flags
//     set marks every block out of sync, which restores 4's conclusion.
//
// In both cases:
//
//  6. The superblock says genid.FlagALClean (Close) only after the data
//     device, and the meta device, were flushed: a crash after a clean
//     detach loses no write the log stopped covering.
type Meta struct {
	md         disk.Disk
	name       string
	data       disk.Disk
	log        *slog.Logger
	alDisabled bool // al-updates no: no log transactions (invariant 5)

	mu         sync.Mutex
	cond       *sync.Cond
	sb         Superblock
	sbBlock    []byte // the superblock block as it is on disk
	bm         *bitmap.Bitmap
	al         alCore
	committing bool
	failed     error
	closed     bool
	closeErr   error // what Close returned, returned again by later calls
	stats      Stats
	recovered  []uint32
	warnings   []string
}

// newUUID returns a random UUID with bit 0 clear.
func newUUID() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("meta: crypto/rand failed: " + err.Error()) // never happens on Linux
	}
	return binary.BigEndian.Uint64(b[:]) &^ genid.UUIDPrimaryBit
}

// Probe reads the superblock of placement p on md without changing
// anything. The warning is non-empty when one slot was torn.
func Probe(md disk.Disk, p Placement, name string) (Superblock, string, error) {
	off := SuperblockOffset(p, md.Size())
	if off < 0 || off+SuperblockSize > md.Size() {
		return Superblock{}, "", &DiskError{Err: ErrNoMetadata, Disk: name, Offset: max(off, 0),
			Detail: fmt.Sprintf("the device has only %d bytes", md.Size())}
	}
	block := make([]byte, SuperblockSize)
	if err := md.ReadAt(block, off); err != nil {
		return Superblock{}, "", fmt.Errorf("meta: read superblock of %s at offset %d: %w", name, off, err)
	}
	sb, warn, err := readSlots(block, name, off)
	if err != nil {
		return sb, warn, err
	}
	if sb.Placement != p {
		return sb, warn, &DiskError{Err: ErrInvalid, Disk: name, Offset: off,
			Detail: fmt.Sprintf("the metadata was created for meta-disk %s, the configuration says %s", sb.Placement, p)}
	}
	if sb.MDOffset != off {
		return sb, warn, &DiskError{Err: ErrInvalid, Disk: name, Offset: off,
			Detail: fmt.Sprintf("the superblock records offset %d", sb.MDOffset)}
	}
	if p.Internal && sb.Capacity != alignDown(md.Size(), 4096) {
		return sb, warn, &DiskError{Err: ErrInvalid, Disk: name, Offset: off,
			Detail: fmt.Sprintf("the backing disk had %d bytes at create-md and has %d now; resize is not supported", sb.Capacity, md.Size())}
	}
	if end := max(sb.MDOffset+SuperblockSize, sb.ALOffset+sb.ALSize, sb.BMOffset+sb.BMSize); end > md.Size() {
		return sb, warn, &DiskError{Err: ErrInvalid, Disk: name, Offset: off,
			Detail: fmt.Sprintf("the metadata reaches offset %d of a %d-byte device", end, md.Size())}
	}
	return sb, warn, nil
}

// Format writes fresh metadata for layout l on md: a new device UUID, the
// "just created" generation, an empty bitmap and activity log. It first
// destroys any superblock there, so that a crash part-way leaves no
// metadata rather than old metadata with a zeroed bitmap. The caller
// checks (with Probe) that nothing valid is overwritten unless forced.
func Format(md disk.Disk, l Layout) (Superblock, error) {
	sb := Superblock{
		Seq: 1, DataSize: l.DataSize, GI: genid.GI{genid.UUIDJustCreated, 0, 0, 0}, DeviceUUID: newUUID(),
		Flags: genid.FlagALClean, Granularity: uint32(l.Granularity), Placement: l.Placement, Capacity: l.Capacity,
		MDOffset: l.MDOffset, MDSize: l.MDSize, ALOffset: l.ALOffset, ALSize: l.ALSize,
		ALExtents: uint32(l.ALExtents), BMOffset: l.BMOffset, BMSize: l.BMSize, PeerMaxBio: 1 << 20,
	}
	if err := sb.validate(); err != nil {
		return sb, fmt.Errorf("meta: layout: %w", err)
	}
	block := make([]byte, SuperblockSize)
	steps := []struct {
		what string
		do   func() error
	}{
		{"clear the old superblock", func() error { return md.WriteAt(block, l.MDOffset, true) }},
		{"clear the activity log", func() error { return md.WriteZeroes(l.ALOffset, l.ALSize, true, false) }},
		{"clear the bitmap", func() error { return md.WriteZeroes(l.BMOffset, l.BMSize, false, false) }},
		{"flush", md.Flush},
		{"write the superblock", func() error {
			sb.encode(block[slotFor(sb.Seq)*slotStride:])
			return md.WriteAt(block, l.MDOffset, true)
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return sb, fmt.Errorf("meta: create-md: %s: %w", s.what, err)
		}
	}
	return sb, nil
}

// Open attaches the metadata of placement p on md: reads the superblock,
// loads the bitmap, and, if the activity log is not clean (a crash while
// attached), marks every extent the log holds out of sync and persists
// that. It then starts a new log epoch with an empty log, clears the
// "log clean" flag, and turns "was Primary" into "crashed Primary", as
// DRBD's attach does.
func Open(md disk.Disk, p Placement, opts Options) (*Meta, error) {
	name := opts.Name
	sb, warn, err := Probe(md, p, name)
	if err != nil {
		return nil, err
	}
	m := &Meta{md: md, name: name, data: opts.Data, log: opts.Logger, sb: sb, sbBlock: make([]byte, SuperblockSize),
		alDisabled: opts.DisableAL}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.cond = sync.NewCond(&m.mu)
	if warn != "" {
		m.warn(warn)
	}
	if err := md.ReadAt(m.sbBlock, sb.MDOffset); err != nil {
		return nil, fmt.Errorf("meta: read superblock of %s: %w", name, err)
	}
	if opts.Data != nil && opts.Data.Size() < sb.DataSize {
		return nil, &DiskError{Err: ErrInvalid, Disk: name, Offset: sb.MDOffset,
			Detail: fmt.Sprintf("the metadata is for %d bytes of data, the data device has %d", sb.DataSize, opts.Data.Size())}
	}
	if m.bm, err = loadBitmap(md, &sb, name); err != nil {
		return nil, err
	}
	switch {
	case sb.Flags&genid.FlagALClean != 0:
	case fullSyncAtAttach(sb.Flags):
		if err := m.markAll(); err != nil {
			return nil, err
		}
	default:
		if err := m.recoverAL(); err != nil {
			return nil, err
		}
	}
	n := int(m.sb.ALExtents)
	if opts.ALExtents != 0 && opts.ALExtents != n {
		if opts.ALExtents < MinALExtents || opts.ALExtents > maxALExtents(sb.ALSize) {
			return nil, fmt.Errorf("meta: al-extents %d does not fit the activity log of %s (%d..%d); run create-md to resize it",
				opts.ALExtents, name, MinALExtents, maxALExtents(sb.ALSize))
		}
		n = opts.ALExtents
	}
	m.al = newALCore(n)
	m.mu.Lock()
	defer m.mu.Unlock()
	err = m.updateLocked(func(s *Superblock) {
		s.ALExtents = uint32(n)
		s.ALEpoch++
		s.Flags &^= genid.FlagALClean | genid.FlagALDisabled
		if opts.DisableAL {
			s.Flags |= genid.FlagALDisabled
		}
		if s.Flags&genid.FlagPrimaryInd != 0 {
			s.Flags |= genid.FlagCrashedPrimary
		}
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Meta) warn(msg string) {
	m.warnings = append(m.warnings, msg)
	m.log.Warn(msg)
}

// loadBitmap reads the bitmap area.
func loadBitmap(md disk.Disk, sb *Superblock, name string) (*bitmap.Bitmap, error) {
	bm, err := bitmap.New(sb.DataSize, int(sb.Granularity))
	if err != nil {
		return nil, fmt.Errorf("meta: %w", err)
	}
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	pages := bm.Pages()
	for p := 0; p < pages; {
		n := min(pages-p, chunk/bitmap.PageSize)
		b := buf[:n*bitmap.PageSize]
		off := sb.BMOffset + int64(p)*bitmap.PageSize
		if err := md.ReadAt(b, off); err != nil {
			return nil, fmt.Errorf("meta: read bitmap of %s at offset %d: %w", name, off, err)
		}
		for i := 0; i < n; i++ {
			if err := bm.LoadPage(p+i, b[i*bitmap.PageSize:(i+1)*bitmap.PageSize]); err != nil {
				return nil, &DiskError{Err: ErrInvalid, Disk: name, Offset: off + int64(i)*bitmap.PageSize, Detail: err.Error()}
			}
		}
		p += n
	}
	bm.ClearDirtyPages()
	return bm, nil
}

// recoverAL replays the activity log after a crash and marks its extents
// out of sync, durably.
func (m *Meta) recoverAL() error {
	ring := make([]byte, m.sb.ALSize)
	if err := m.md.ReadAt(ring, m.sb.ALOffset); err != nil {
		return fmt.Errorf("meta: read activity log of %s: %w", m.name, err)
	}
	slots, err := replayAL(ring, m.sb.ALOffset, m.name, m.sb.ALEpoch, int(m.sb.ALExtents))
	if err != nil {
		return err
	}
	extents := uint64(m.sb.Layout().Extents())
	var marked uint64
	for i, e := range slots {
		if e == FreeSlot {
			continue
		}
		if uint64(e) >= extents {
			return &DiskError{Err: ErrInvalid, Disk: m.name, Offset: m.sb.ALOffset,
				Detail: fmt.Sprintf("activity log slot %d holds extent %d of %d", i, e, extents)}
		}
		m.recovered = append(m.recovered, e)
		marked += m.bm.MarkRange(int64(e)*ExtentSize, ExtentSize)
	}
	m.warn(fmt.Sprintf("%s: the activity log was not clean (a crash while attached): %d extents marked out of sync (%d blocks newly)",
		m.name, len(m.recovered), marked))
	return m.syncBitmapLocked()
}

// fullSyncAtAttach reports superblock flags after which attaching marks
// every block out of sync: a crash (the log is not clean) while Primary
// with the log disabled (DRBD's attach: CRASHED_PRIMARY and
// MDF_AL_DISABLED, "Assuming that all blocks are out of sync").
func fullSyncAtAttach(f genid.Flags) bool {
	return f&genid.FlagALClean == 0 && f&genid.FlagALDisabled != 0 && f&genid.FlagPrimaryInd != 0
}

// markAll is recoverAL for a log that was disabled: every block is
// marked out of sync, durably.
func (m *Meta) markAll() error {
	m.bm.SetAll()
	m.warn(fmt.Sprintf("%s: crashed while Primary with the activity log disabled (al-updates no): all %d blocks marked out of sync (a full resync)",
		m.name, m.bm.Bits()))
	return m.syncBitmapLocked()
}

// Recovered returns the extents the activity log held at Open after a
// crash (nil after a clean detach).
func (m *Meta) Recovered() []uint32 { return append([]uint32(nil), m.recovered...) }

// Warnings returns what Open had to say (torn slot, recovery).
func (m *Meta) Warnings() []string { return append([]string(nil), m.warnings...) }

// Layout returns the geometry.
func (m *Meta) Layout() Layout {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sb.Layout()
}

// Superblock returns a copy of the current superblock.
func (m *Meta) Superblock() Superblock {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sb
}

// Stats returns the metadata I/O counters.
func (m *Meta) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// Update applies change to a copy of the superblock and makes it durable
// (written to the other slot, then flushed) before returning; the
// in-memory superblock changes only if that succeeded. Callers persist
// genid.GI rotations and flags this way before acting on them.
func (m *Meta) Update(change func(*Superblock)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	return m.updateLocked(change)
}

func (m *Meta) updateLocked(change func(*Superblock)) error {
	if m.failed != nil {
		return m.failed
	}
	next := m.sb
	change(&next)
	if m.alDisabled && m.sb.Flags&genid.FlagPrimaryInd != 0 && next.Flags&genid.FlagPrimaryInd == 0 {
		// Invariant 5: once the superblock no longer says Primary, a
		// crash replays nothing, so the marks must be on disk first.
		if err := m.syncBitmapLocked(); err != nil {
			return err
		}
	}
	next.Seq = m.sb.Seq + 1
	if err := next.validate(); err != nil {
		return fmt.Errorf("meta: superblock update: %w", err)
	}
	block := append([]byte(nil), m.sbBlock...)
	next.encode(block[slotFor(next.Seq)*slotStride:])
	if err := m.md.WriteAt(block, next.MDOffset, true); err != nil {
		m.failed = fmt.Errorf("meta: write superblock of %s: %w", m.name, err)
		return m.failed
	}
	m.stats.SuperblockWrites++
	m.stats.Flushes++
	m.sb, m.sbBlock = next, block
	return nil
}

// NewCurrentUUID starts a new data generation (see genid.GI.NewCurrent) and
// persists it. With clearBitmap, the bitmap is emptied and the bitmap
// UUID cleared too (drbdadm new-current-uuid --clear-bitmap: the data
// is declared in sync with a peer holding the same generation).
func (m *Meta) NewCurrentUUID(primary, clearBitmap bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if clearBitmap {
		m.bm.Clear(0, m.bm.Bits()-1)
		if err := m.syncBitmapLocked(); err != nil {
			return err
		}
	}
	val := newUUID()
	return m.updateLocked(func(s *Superblock) {
		s.GI.SetBitmap(0) // an older bitmap UUID goes to the history
		s.GI.NewCurrent(val, primary)
	})
}

// MarkOutOfSync sets the bits of every block touching [off, off+n) and
// returns how many were newly set. The caller holds BeginWrite for the
// range (so invariant 4 holds through the log) or calls SyncBitmap
// before relying on the marks surviving a crash.
func (m *Meta) MarkOutOfSync(off, n int64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bm.MarkRange(off, n)
}

// SetInSync clears the bits of the blocks entirely inside [off, off+n)
// (a resync or a peer acknowledgement proved them equal) and returns
// how many were cleared. Clearing needs no immediate write: a bit that
// is still set on disk after a crash costs a resync, never data.
func (m *Meta) SetInSync(off, n int64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := int64(m.bm.Granularity())
	first := (off + g - 1) / g
	end := (off + n) / g
	if off+n >= m.sb.DataSize {
		end = int64(m.bm.Bits()) // the partial last block
	}
	if off < 0 || end <= first {
		return 0
	}
	return m.bm.Clear(uint64(first), uint64(end-1))
}

// OutOfSync returns the number of blocks marked out of sync.
func (m *Meta) OutOfSync() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bm.Count()
}

// WithBitmap runs f with the bitmap locked (for scans, merges and the
// wire encoding). Changes f makes are persisted like any other: call
// SyncBitmap after setting bits outside BeginWrite.
func (m *Meta) WithBitmap(f func(*bitmap.Bitmap)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m.bm)
}

// SyncBitmap writes every changed bitmap page and flushes.
func (m *Meta) SyncBitmap() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncBitmapLocked()
}

func (m *Meta) syncBitmapLocked() error {
	// A commit in progress writes page snapshots taken before it let go
	// of the lock; writing newer pages meanwhile could be undone by them.
	for m.committing {
		m.cond.Wait()
	}
	if m.failed != nil {
		return m.failed
	}
	pages := m.bm.DirtyPages()
	if len(pages) == 0 {
		return nil
	}
	buf := make([]byte, 0, bitmap.PageSize)
	for _, p := range pages {
		buf = m.bm.AppendPage(buf[:0], p)
		if err := m.md.WriteAt(buf, m.sb.BMOffset+int64(p)*bitmap.PageSize, false); err != nil {
			m.failed = fmt.Errorf("meta: write bitmap of %s: %w", m.name, err)
			return m.failed
		}
		m.stats.BitmapPageWrites++
	}
	if err := m.md.Flush(); err != nil {
		m.failed = fmt.Errorf("meta: flush bitmap of %s: %w", m.name, err)
		return m.failed
	}
	m.stats.Flushes++
	m.bm.ClearDirtyPages()
	return nil
}

// Close detaches cleanly: it writes the changed bitmap pages and then
// marks the activity log clean, so the next Open replays nothing. The
// caller has stopped its writes (every BeginWrite ended). After a
// metadata I/O error, Close leaves the log unclean.
func (m *Meta) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.committing {
		m.cond.Wait()
	}
	if m.closed {
		return m.closeErr
	}
	m.closed = true // no new BeginWrite, Update or NewCurrentUUID
	m.cond.Broadcast()
	m.closeErr = m.closeLocked()
	return m.closeErr
}

func (m *Meta) closeLocked() error {
	if busy := m.al.busy(); busy > 0 {
		return fmt.Errorf("meta: close of %s with %d extents still held by writes; the log stays unclean", m.name, busy)
	}
	if err := m.syncBitmapLocked(); err != nil {
		return err
	}
	// A clean log replays nothing after a crash, so every data write it
	// covered must be durable first (invariant 6); syncBitmapLocked
	// flushes only when it wrote pages.
	if m.data != nil {
		if err := m.data.Flush(); err != nil {
			return fmt.Errorf("meta: close of %s: flush the data device: %w; the log stays unclean", m.name, err)
		}
	}
	if err := m.md.Flush(); err != nil {
		return fmt.Errorf("meta: close of %s: flush: %w; the log stays unclean", m.name, err)
	}
	m.stats.Flushes++
	return m.updateLocked(func(s *Superblock) { s.Flags |= genid.FlagALClean })
}

// BeginWrite makes the activity log cover [off, off+n) before a write
// there; see invariant 2. Every successful BeginWrite is paired with one
// EndWrite of the same range once the write finished (on both nodes, or
// its blocks were marked out of sync). It blocks while the log has no
// free or releasable slot for the extents; concurrent callers share log
// transactions. With the log disabled (al-updates no) it only checks the
// range and that the metadata is usable: see invariant 5.
func (m *Meta) BeginWrite(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || n < 0 || off > m.sb.DataSize-n {
		return fmt.Errorf("meta: write of %d bytes at %d outside the %d-byte data area: %w", n, off, m.sb.DataSize, disk.ErrOutOfRange)
	}
	if m.alDisabled {
		return m.usable()
	}
	first, last := extentRange(off, n)
	// Take a reference on every extent, all or nothing: a caller never
	// waits while holding slots, so waiters cannot deadlock each other.
	for {
		if err := m.usable(); err != nil {
			return err
		}
		if m.al.canHold(first, last) {
			break
		}
		m.cond.Wait()
	}
	m.al.acquire(first, last)
	for !m.al.committed(first, last) {
		if err := m.usable(); err != nil {
			m.al.release(first, last)
			return err
		}
		if m.committing {
			m.cond.Wait()
			continue
		}
		if err := m.commitLocked(); err != nil {
			m.al.release(first, last)
			return err
		}
	}
	return nil
}

// EndWrite releases what BeginWrite took; an extent no write holds may
// leave the log later, least recently used first.
func (m *Meta) EndWrite(off, n int64) {
	if m.alDisabled {
		return // BeginWrite took nothing
	}
	first, last := extentRange(off, n)
	m.mu.Lock()
	m.al.release(first, last)
	m.mu.Unlock()
	m.cond.Broadcast()
}

func (m *Meta) usable() error {
	if m.failed != nil {
		return m.failed
	}
	if m.closed {
		return ErrClosed
	}
	return nil
}

func extentRange(off, n int64) (uint32, uint32) {
	last := off + max(n, 1) - 1
	return uint32(off / ExtentSize), uint32(last / ExtentSize)
}

// commitLocked writes one log transaction with up to ALUpdates pending
// updates. It is called with m.mu held and returns with it held, but
// releases it during the I/O; m.committing keeps others out meanwhile.
func (m *Meta) commitLocked() error {
	m.committing = true
	defer func() {
		m.committing = false
		m.cond.Broadcast()
	}()
	batch, victims := m.al.takeBatch()
	// Bitmap pages of the extents leaving the log: snapshot them now,
	// under the lock; later changes mark them dirty again.
	type page struct {
		off  int64
		data []byte
	}
	var pages []page
	g := uint64(m.sb.Granularity)
	for _, e := range victims {
		firstBit := uint64(e) * ExtentSize / g
		lastBit := min((uint64(e)+1)*ExtentSize/g, m.bm.Bits()) - 1
		for p := m.bm.PageOf(firstBit); p <= m.bm.PageOf(lastBit); p++ {
			if m.bm.PageDirty(p) {
				pages = append(pages, page{m.sb.BMOffset + int64(p)*bitmap.PageSize, m.bm.AppendPage(nil, p)})
				m.bm.ClearPageDirty(p)
			}
		}
	}
	tx := m.al.makeTx(batch, m.sb.ALEpoch)
	block := make([]byte, ALBlockSize)
	tx.encode(block)
	txOff := m.sb.ALOffset + int64(tx.Seq%uint64(m.sb.ALSize/ALBlockSize))*ALBlockSize
	m.mu.Unlock()

	var st Stats
	err := func() error {
		for _, p := range pages {
			if err := m.md.WriteAt(p.data, p.off, false); err != nil {
				return fmt.Errorf("write bitmap: %w", err)
			}
			st.BitmapPageWrites++
		}
		if len(victims) > 0 {
			if m.data != nil {
				if err := m.data.Flush(); err != nil {
					return fmt.Errorf("flush the data device: %w", err)
				}
				st.Flushes++
			}
			if err := m.md.Flush(); err != nil {
				return fmt.Errorf("flush: %w", err)
			}
			st.Flushes++
		}
		if err := m.md.WriteAt(block, txOff, true); err != nil {
			return fmt.Errorf("write activity log: %w", err)
		}
		st.Flushes++
		st.ALTransactions++
		st.ALEvictions += uint64(len(victims))
		return nil
	}()

	m.mu.Lock()
	m.stats.BitmapPageWrites += st.BitmapPageWrites
	m.stats.Flushes += st.Flushes
	m.stats.ALTransactions += st.ALTransactions
	m.stats.ALEvictions += st.ALEvictions
	if err != nil {
		m.failed = fmt.Errorf("meta: %s: %w", m.name, err)
		return m.failed
	}
	m.al.markCommitted(batch)
	return nil
}

// alCore is the in-memory activity log, pure bookkeeping: which extent
// each slot holds, how many writes hold each extent, the LRU order of the
// releasable ones, and the updates not yet in a transaction.
type alCore struct {
	written []uint32 // content as the written transactions describe it
	entries map[uint32]*alEntry
	free    []int
	lru     alLRU // entries with refs == 0, committed; head = least recently used
	pending []pendingUpdate
	cursor  int    // next context window start
	seq     uint64 // next transaction number of this epoch
}

type alEntry struct {
	extent    uint32
	slot      int
	refs      int
	committed bool
	// In lru while refs == 0 and committed.
	inLRU      bool
	prev, next *alEntry
}

// alLRU is the list of releasable entries, least recently used first.
// It is intrusive (the links live in alEntry), so that moving a hot
// extent out of it and back, as every write to it does, allocates
// nothing.
type alLRU struct {
	head, tail *alEntry
	n          int
}

func (l *alLRU) Len() int { return l.n }

// pushBack appends e, which must not be in the list.
func (l *alLRU) pushBack(e *alEntry) {
	e.inLRU, e.prev, e.next = true, l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
	l.n++
}

// remove takes e, which must be in the list, out of it.
func (l *alLRU) remove(e *alEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.inLRU, e.prev, e.next = false, nil, nil
	l.n--
}

type pendingUpdate struct {
	alUpdate
	victim uint32 // extent evicted from the slot, or FreeSlot
}

func newALCore(n int) alCore {
	c := alCore{written: make([]uint32, n), entries: make(map[uint32]*alEntry)}
	for i := n - 1; i >= 0; i-- {
		c.written[i] = FreeSlot
		c.free = append(c.free, i)
	}
	return c
}

// canHold reports whether every extent of [first, last] is in the log or
// can get a slot now.
func (c *alCore) canHold(first, last uint32) bool {
	missing, ownIdle := 0, 0
	for e := first; e <= last; e++ {
		switch ent := c.entries[e]; {
		case ent == nil:
			missing++
		case ent.inLRU:
			ownIdle++ // releasable, but this write is about to hold it
		}
	}
	return missing <= len(c.free)+c.lru.Len()-ownIdle
}

// acquire takes a reference on every extent of [first, last], giving the
// missing ones a slot (free, or the least recently used releasable one)
// and queueing the update. canHold must have said yes.
func (c *alCore) acquire(first, last uint32) {
	// Hold the extents already in the log first, so that none of them
	// is chosen as a victim for another extent of the same write.
	for e := first; e <= last; e++ {
		if ent := c.entries[e]; ent != nil {
			if ent.inLRU {
				c.lru.remove(ent)
			}
			ent.refs++
		}
	}
	for e := first; e <= last; e++ {
		ent := c.entries[e]
		if ent == nil {
			victim := FreeSlot
			var slot int
			if n := len(c.free); n > 0 {
				slot = c.free[n-1]
				c.free = c.free[:n-1]
			} else {
				old := c.lru.head
				c.lru.remove(old)
				delete(c.entries, old.extent)
				slot, victim = old.slot, old.extent
			}
			ent = &alEntry{extent: e, slot: slot, refs: 1}
			c.entries[e] = ent
			c.pending = append(c.pending, pendingUpdate{alUpdate{uint16(slot), e}, victim})
		}
	}
}

// release drops the references acquire took.
func (c *alCore) release(first, last uint32) {
	for e := first; e <= last; e++ {
		ent := c.entries[e]
		if ent == nil || ent.refs == 0 {
			panic(fmt.Sprintf("meta: release of extent %d that no write holds", e))
		}
		ent.refs--
		if ent.refs == 0 && ent.committed {
			c.lru.pushBack(ent)
		}
	}
}

func (c *alCore) committed(first, last uint32) bool {
	for e := first; e <= last; e++ {
		if !c.entries[e].committed {
			return false
		}
	}
	return true
}

// takeBatch removes up to ALUpdates pending updates, returning them and
// the extents they evict.
func (c *alCore) takeBatch() ([]pendingUpdate, []uint32) {
	n := min(len(c.pending), ALUpdates)
	batch := append([]pendingUpdate(nil), c.pending[:n]...)
	c.pending = append(c.pending[:0], c.pending[n:]...)
	var victims []uint32
	for _, u := range batch {
		if u.victim != FreeSlot {
			victims = append(victims, u.victim)
		}
	}
	return batch, victims
}

// makeTx builds the next transaction from batch: its updates, then the
// next context window of the log as it stands with them applied.
func (c *alCore) makeTx(batch []pendingUpdate, epoch uint64) alTx {
	tx := alTx{Epoch: epoch, Seq: c.seq}
	c.seq++
	for _, u := range batch {
		tx.Updates = append(tx.Updates, u.alUpdate)
		c.written[u.Slot] = u.Extent
	}
	n := min(ALContextSlots, len(c.written)-c.cursor)
	tx.CtxStart = uint16(c.cursor)
	tx.Context = append([]uint32(nil), c.written[c.cursor:c.cursor+n]...)
	c.cursor = (c.cursor + n) % len(c.written)
	return tx
}

// markCommitted records that batch is durable.
func (c *alCore) markCommitted(batch []pendingUpdate) {
	for _, u := range batch {
		ent := c.entries[u.Extent]
		if ent == nil || ent.slot != int(u.Slot) {
			continue // cannot happen: an uncommitted entry is never evicted
		}
		ent.committed = true
		if ent.refs == 0 {
			c.lru.pushBack(ent)
		}
	}
}

// busy is the number of extents held by writes.
func (c *alCore) busy() int {
	n := 0
	for _, e := range c.entries {
		if e.refs > 0 {
			n++
		}
	}
	return n
}

// Active returns the extents in the activity log now (pending updates
// included), in slot order.
func (m *Meta) Active() []uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	bySlot := make([]uint32, len(m.al.written))
	for i := range bySlot {
		bySlot[i] = FreeSlot
	}
	for e, ent := range m.al.entries {
		bySlot[ent.slot] = e
	}
	var out []uint32
	for _, e := range bySlot {
		if e != FreeSlot {
			out = append(out, e)
		}
	}
	return out
}
