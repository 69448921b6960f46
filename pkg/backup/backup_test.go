package backup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/splitbrain"
)

const bs = BlockSize

// patterned is a Mem disk of size bytes whose block i holds the byte
// i+1 repeated, except the blocks listed in zero, which hold zeroes.
func patterned(size int64, zero ...int64) *disk.Mem {
	m := disk.NewMem(size, disk.MemOptions{})
	buf := make([]byte, size)
	for i := int64(0); i*bs < size; i++ {
		end := min((i+1)*bs, size)
		for k := i * bs; k < end; k++ {
			buf[k] = byte(i + 1)
		}
	}
	for _, z := range zero {
		clear(buf[z*bs : min((z+1)*bs, size)])
	}
	if err := m.WriteAt(buf, 0, false); err != nil {
		panic(err)
	}
	return m
}

// cowFixture is a cowDisk over a patterned disk with an armed journal in
// a temporary directory.
type cowFixture struct {
	orig []byte // the disk's content before any write
	mem  *disk.Mem
	ptr  atomic.Pointer[journal]
	cow  *cowDisk
	j    *journal
}

func newCowFixture(t *testing.T, size int64, zero ...int64) *cowFixture {
	t.Helper()
	f := &cowFixture{mem: patterned(size, zero...)}
	f.orig = append([]byte(nil), f.mem.Bytes()...)
	f.j = newJournal(filepath.Join(t.TempDir(), FileName("r0", time.Unix(0, 0))), size, "test journal")
	f.ptr.Store(f.j)
	f.cow = &cowDisk{Disk: f.mem, j: &f.ptr}
	return f
}

// image returns the image file's content.
func (f *cowFixture) image(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(f.j.img)
	require.NoError(t, err)
	return b
}

func (f *cowFixture) index(t *testing.T) *Index {
	t.Helper()
	x, err := ReadIndex(f.j.idx())
	require.NoError(t, err)
	return x
}

// op is one mutating call on the cowDisk.
type op struct {
	kind     string // write, trim, zeroes
	off, n   int64
	fill     byte
	disarmed bool // the journal is not armed during the call
}

func (f *cowFixture) do(t *testing.T, o op) {
	t.Helper()
	if o.disarmed {
		f.ptr.Store(nil)
		defer f.ptr.Store(f.j)
	}
	var err error
	switch o.kind {
	case "write":
		err = f.cow.WriteAt(bytes.Repeat([]byte{o.fill}, int(o.n)), o.off, false)
	case "trim":
		err = f.cow.Trim(o.off, o.n, false)
	case "zeroes":
		err = f.cow.WriteZeroes(o.off, o.n, false, false)
	default:
		t.Fatalf("op %q", o.kind)
	}
	require.NoError(t, err)
}

// TestCowDiskSaves: every block a mutating call touches is saved whole,
// with its content before the first overwrite, exactly once; a disarmed
// journal saves nothing.
func TestCowDiskSaves(t *testing.T) {
	const size = 16 * bs
	for _, tc := range []struct {
		name  string
		size  int64
		zero  []int64
		ops   []op
		runs  []Run // the index, in order
		files bool  // the files exist
	}{
		{
			name: "one write saves its block",
			ops:  []op{{kind: "write", off: 2 * bs, n: bs, fill: 0xAA}},
			runs: []Run{{2 * bs, bs}}, files: true,
		},
		{
			name: "a block overwritten twice is saved once, with the first content",
			ops:  []op{{kind: "write", off: 2 * bs, n: bs, fill: 0xAA}, {kind: "write", off: 2 * bs, n: bs, fill: 0xBB}},
			runs: []Run{{2 * bs, bs}}, files: true,
		},
		{
			name: "a write over partial blocks saves the whole blocks",
			ops:  []op{{kind: "write", off: 3*bs + 4000, n: 200, fill: 0xAA}},
			runs: []Run{{3 * bs, 2 * bs}}, files: true,
		},
		{
			name: "a write over saved and unsaved blocks saves the unsaved runs",
			ops: []op{
				{kind: "write", off: 5 * bs, n: 100, fill: 0xAA},
				{kind: "write", off: 7 * bs, n: bs, fill: 0xAA},
				{kind: "write", off: 4 * bs, n: 5 * bs, fill: 0xBB},
			},
			runs: []Run{{5 * bs, bs}, {7 * bs, bs}, {4 * bs, bs}, {6 * bs, bs}, {8 * bs, bs}}, files: true,
		},
		{
			name: "trim and write-zeroes save too",
			ops:  []op{{kind: "trim", off: 0, n: 2 * bs}, {kind: "zeroes", off: 10 * bs, n: 3 * bs}},
			runs: []Run{{0, 2 * bs}, {10 * bs, 3 * bs}}, files: true,
		},
		{
			name:  "disarmed writes save nothing and create no file",
			ops:   []op{{kind: "write", off: 0, n: 4 * bs, fill: 0xAA, disarmed: true}},
			files: false,
		},
		{
			name: "a block written while disarmed is saved with its content then",
			ops: []op{
				{kind: "write", off: bs, n: bs, fill: 0xAA, disarmed: true},
				{kind: "write", off: bs, n: bs, fill: 0xBB},
			},
			runs: []Run{{bs, bs}}, files: true,
		},
		{
			name: "an all-zero block is listed and stays a hole",
			zero: []int64{6},
			ops:  []op{{kind: "write", off: 6 * bs, n: bs, fill: 0xAA}},
			runs: []Run{{6 * bs, bs}}, files: true,
		},
		{
			name: "the short last block of the data area",
			size: 4*bs + 100,
			ops:  []op{{kind: "write", off: 4*bs + 10, n: 50, fill: 0xAA}},
			runs: []Run{{4 * bs, 100}}, files: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sz := tc.size
			if sz == 0 {
				sz = size
			}
			f := newCowFixture(t, sz, tc.zero...)
			// The model: what each block held before its first armed write.
			want := map[int64][]byte{}
			cur := append([]byte(nil), f.orig...)
			for _, o := range tc.ops {
				if !o.disarmed {
					for b := o.off / bs; b*bs < o.off+o.n; b++ {
						if _, ok := want[b]; !ok {
							want[b] = append([]byte(nil), cur[b*bs:min((b+1)*bs, sz)]...)
						}
					}
				}
				f.do(t, o)
				cur = append(cur[:0], f.mem.Bytes()...)
			}
			_, err := os.Stat(f.j.img)
			if !tc.files {
				assert.True(t, errors.Is(err, os.ErrNotExist), "no image: %v", err)
				assert.Zero(t, f.j.blocks())
				return
			}
			require.NoError(t, err)
			x := f.index(t)
			assert.Equal(t, tc.runs, x.Runs)
			assert.False(t, x.Complete)
			assert.Equal(t, "test journal", x.Header)
			img := f.image(t)
			require.Len(t, img, int(sz), "the image is the data area's size")
			assert.Equal(t, uint64(len(want)), f.j.blocks())
			for b, old := range want {
				assert.Equal(t, old, img[b*bs:min((b+1)*bs, sz)], "block %d: the content before the first overwrite", b)
			}
			// Blocks not saved are holes (zeroes).
			for b := int64(0); b*bs < sz; b++ {
				if _, ok := want[b]; !ok {
					assert.True(t, disk.AllZero(img[b*bs:min((b+1)*bs, sz)]), "block %d was not saved", b)
				}
			}
			n, files, err := f.j.complete()
			require.NoError(t, err)
			assert.True(t, files)
			assert.Equal(t, uint64(len(want)), n)
			assert.True(t, f.index(t).Complete)
		})
	}
}

// orderLog records the order of calls in a shared log.
type orderLog struct {
	mu  sync.Mutex
	ops []string
}

func (o *orderLog) add(op string) {
	o.mu.Lock()
	o.ops = append(o.ops, op)
	o.mu.Unlock()
}

// recDisk records the calls on a disk in a shared log.
type recDisk struct {
	disk.Disk
	log *orderLog
}

func (d recDisk) ReadAt(p []byte, off int64) error {
	d.log.add(fmt.Sprintf("read %d+%d", off, len(p)))
	return d.Disk.ReadAt(p, off)
}

func (d recDisk) WriteAt(p []byte, off int64, fua bool) error {
	d.log.add(fmt.Sprintf("write %d+%d", off, len(p)))
	return d.Disk.WriteAt(p, off, fua)
}

// TestCowDiskDurableBeforeWrite: the old blocks are read, the image and
// then the index synced before the write reaches the disk, once per
// call whatever the number of runs; a call with nothing new to save goes
// straight to the disk.
func TestCowDiskDurableBeforeWrite(t *testing.T) {
	log := &orderLog{}
	mem := patterned(16 * bs)
	j := newJournal(filepath.Join(t.TempDir(), "r0-discarded-x.img"), 16*bs, "h")
	j.syncFile = func(f *os.File) error {
		kind := "img"
		if strings.HasSuffix(f.Name(), ".blocks") {
			kind = "idx"
		}
		log.add("sync " + kind)
		return fdatasync(f)
	}
	var ptr atomic.Pointer[journal]
	ptr.Store(j)
	c := &cowDisk{Disk: recDisk{mem, log}, j: &ptr}
	take := func() []string {
		log.mu.Lock()
		defer log.mu.Unlock()
		ops := log.ops
		log.ops = nil
		return ops
	}

	require.NoError(t, c.WriteAt(make([]byte, bs), 2*bs, false))
	assert.Equal(t, []string{"sync img", "sync idx", // the files created
		"read 8192+4096", "sync img", "sync idx", "write 8192+4096"}, take())

	require.NoError(t, c.WriteAt(make([]byte, bs), 2*bs, false))
	assert.Equal(t, []string{"write 8192+4096"}, take(), "a saved block is not saved again")

	// Blocks 1..4, block 2 saved: two runs, one sync of each file.
	require.NoError(t, c.WriteAt(make([]byte, 4*bs), bs, false))
	assert.Equal(t, []string{"read 4096+4096", "read 12288+8192", "sync img", "sync idx", "write 4096+16384"}, take())

	x, err := ReadIndex(j.idx())
	require.NoError(t, err)
	assert.Equal(t, []Run{{2 * bs, bs}, {bs, bs}, {3 * bs, 2 * bs}}, x.Runs)
}

// failSync fails the image's sync.
func TestCowDiskSaveFailureFailsTheWrite(t *testing.T) {
	mem := patterned(8 * bs)
	j := newJournal(filepath.Join(t.TempDir(), "r0-discarded-x.img"), 8*bs, "h")
	boom := errors.New("boom")
	j.syncFile = func(*os.File) error { return boom }
	var ptr atomic.Pointer[journal]
	ptr.Store(j)
	c := &cowDisk{Disk: mem, j: &ptr}
	err := c.WriteAt(bytes.Repeat([]byte{0xEE}, bs), bs, false)
	require.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), "backup-discarded")
	assert.Equal(t, patterned(8*bs).Bytes(), mem.Bytes(), "the write did not reach the disk")
	assert.Zero(t, j.blocks())
}

// TestCowDiskConcurrent: concurrent calls on distinct blocks (the
// applier runs non-overlapping writes in parallel) all save their
// blocks' old content.
func TestCowDiskConcurrent(t *testing.T) {
	const blocks = 64
	f := newCowFixture(t, blocks*bs)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := int64(w); b < blocks; b += 8 {
				for range 2 {
					assert.NoError(t, f.cow.WriteAt(bytes.Repeat([]byte{0xF0 | byte(w)}, bs), b*bs, false))
				}
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, f.orig, f.image(t), "every block's first content")
	assert.Len(t, f.index(t).Runs, blocks)
}

// TestJournalReopen: an incomplete index (the daemon stopped during the
// resync) reopens armed as a discard, with its saved set: the blocks it
// lists are not saved again, others are; a torn last line is dropped;
// a complete index is not reopened.
func TestJournalReopen(t *testing.T) {
	f := newCowFixture(t, 16*bs)
	f.do(t, op{kind: "write", off: 2 * bs, n: 2 * bs, fill: 0xAA})
	f.do(t, op{kind: "write", off: 9 * bs, n: bs, fill: 0xAA})
	n, files := f.j.suspend()
	require.True(t, files)
	require.EqualValues(t, 3, n)
	// A crash while the index line of a next save was written.
	idx, err := os.OpenFile(f.j.idx(), os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = idx.WriteString("45056 40")
	require.NoError(t, err)
	require.NoError(t, idx.Close())

	img, err := unfinished(filepath.Dir(f.j.img), "r0")
	require.NoError(t, err)
	require.Equal(t, f.j.img, img)

	j, err := openJournal(f.j.img, 16*bs)
	require.NoError(t, err)
	assert.True(t, j.discard)
	assert.EqualValues(t, 3, j.blocks())
	raw, err := os.ReadFile(j.idx())
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(string(raw), "36864 4096\n"), "the torn line is gone:\n%s", raw)

	f.ptr.Store(j)
	f.do(t, op{kind: "write", off: 2 * bs, n: 4 * bs, fill: 0xBB}) // blocks 2,3 saved; 4,5 not
	x := f.index(t)
	assert.Equal(t, []Run{{2 * bs, 2 * bs}, {9 * bs, bs}, {4 * bs, 2 * bs}}, x.Runs)
	_, files, err = j.complete()
	require.NoError(t, err)
	require.True(t, files)
	assert.Equal(t, append(append(bytes.Repeat([]byte{0}, 2*bs), f.orig[2*bs:6*bs]...), bytes.Repeat([]byte{0}, 3*bs)...), f.image(t)[:9*bs])

	_, err = openJournal(f.j.img, 16*bs)
	assert.Error(t, err, "a complete index is not reopened")
	img, err = unfinished(filepath.Dir(f.j.img), "r0")
	require.NoError(t, err)
	assert.Empty(t, img, "the newest index is complete: nothing to resume")

	// The wrong size is refused.
	require.NoError(t, os.WriteFile(IndexPath(f.j.img), []byte("# h\n0 4096\n"), 0o600))
	_, err = openJournal(f.j.img, 8*bs)
	assert.ErrorContains(t, err, "the data area")
}

// TestJournalAbandonAndMaterialize: a journal that saved blocks for a
// connection that discards nothing removes its files; a discard creates
// its (empty) files at once.
func TestJournalAbandonAndMaterialize(t *testing.T) {
	f := newCowFixture(t, 8*bs)
	f.do(t, op{kind: "write", off: 0, n: bs, fill: 1})
	n, files := f.j.abandon()
	assert.True(t, files)
	assert.EqualValues(t, 1, n)
	for _, p := range []string{f.j.img, f.j.idx()} {
		_, err := os.Stat(p)
		assert.True(t, errors.Is(err, os.ErrNotExist), "%s removed", p)
	}
	f.do(t, op{kind: "write", off: bs, n: bs, fill: 1}) // closed: saves nothing
	_, err := os.Stat(f.j.img)
	assert.True(t, errors.Is(err, os.ErrNotExist))

	g := newCowFixture(t, 8*bs)
	g.j.note("a note before the files")
	require.NoError(t, g.j.materialize())
	x := g.index(t)
	assert.Empty(t, x.Runs)
	assert.False(t, x.Complete)
	raw, err := os.ReadFile(g.j.idx())
	require.NoError(t, err)
	assert.Equal(t, "# test journal\n# a note before the files\n", string(raw))
	n, files, err = g.j.complete()
	require.NoError(t, err)
	assert.True(t, files)
	assert.Zero(t, n)
}

// TestParseDiscardedIndex: the index's grammar; errors name the line.
func TestParseDiscardedIndex(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       *Index
		err        string
	}{
		{
			name: "complete",
			text: "# head\n0 4096\n# a note\n\n8192 12288\ncomplete\n",
			want: &Index{Header: "head", Runs: []Run{{0, 4096}, {8192, 12288}}, Complete: true, Valid: 44},
		},
		{
			name: "incomplete",
			text: "# head\n4096 100\n",
			want: &Index{Header: "head", Runs: []Run{{4096, 100}}, Valid: 16},
		},
		{
			name: "torn last line",
			text: "# head\n4096 4096\n8192 40",
			want: &Index{Header: "head", Runs: []Run{{4096, 4096}}, Valid: 17, Torn: true},
		},
		{
			name: "complete without its newline",
			text: "# head\n4096 4096\ncomplete",
			want: &Index{Header: "head", Runs: []Run{{4096, 4096}}, Complete: true, Valid: 25},
		},
		{name: "three fields", text: "# h\n0 4096\n0 4096 1\n", err: "x.blocks:3: "},
		{name: "a word", text: "# h\nfoo\n", err: "x.blocks:2: \"foo\": want OFFSET LENGTH"},
		{name: "negative offset", text: "-4096 4096\n", err: "x.blocks:1: "},
		{name: "unaligned offset", text: "# h\n\n100 4096\n", err: "x.blocks:3: \"100 4096\": offset 100 is not a multiple of 4096"},
		{name: "zero length", text: "0 0\n", err: "x.blocks:1: "},
		{name: "hex", text: "0x1000 4096\n", err: "x.blocks:1: "},
		{name: "a run after complete", text: "0 4096\ncomplete\n4096 4096\n", err: "x.blocks:3: \"4096 4096\" after the \"complete\" line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, err := ParseIndex(strings.NewReader(tc.text), "x.blocks")
			if tc.err != "" {
				require.ErrorIs(t, err, ErrBadIndex)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, x)
		})
	}
	x := &Index{Runs: []Run{{0, 4096}, {8192, 100}}}
	assert.NoError(t, x.CheckRuns(8292))
	assert.ErrorIs(t, x.CheckRuns(8291), ErrBadIndex)
	b, n := x.Blocks()
	assert.EqualValues(t, 2, b)
	assert.EqualValues(t, 4196, n)
}

// TestIsDiscardOfSelf: which handshakes discard this node's data.
func TestIsDiscardOfSelf(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    splitbrain.Outcome
		want bool
	}{
		{"--discard-my-data here", splitbrain.Outcome{SplitBrain: true, Decision: splitbrain.TargetBitmap}, true},
		{"full sync after rule 100", splitbrain.Outcome{SplitBrain: true, Decision: splitbrain.TargetBitmap * 2}, true},
		{"the peer is the victim", splitbrain.Outcome{SplitBrain: true, Decision: splitbrain.SourceBitmap}, false},
		{"an ordinary resync as target", splitbrain.Outcome{Decision: splitbrain.TargetBitmap}, false},
		{"refused (rr-conflict)", splitbrain.Outcome{SplitBrain: true, Decision: splitbrain.TargetBitmap, Refuse: "I am primary"}, false},
		{"unresolved", splitbrain.Outcome{SplitBrain: true, Decision: splitbrain.SplitBrainDrop, Refuse: "dropping"}, false},
	} {
		assert.Equal(t, tc.want, IsDiscardOfSelf(tc.o), tc.name)
	}
}

func TestDiscardedFileName(t *testing.T) {
	at := time.Date(2024, 3, 9, 7, 5, 3, 0, time.FixedZone("CET", 3600))
	assert.Equal(t, "r0-discarded-20240309T060503Z.img", FileName("r0", at))
	assert.Equal(t, "r0-discarded-20240309T060503Z.img.blocks", IndexPath(FileName("r0", at)))
}
