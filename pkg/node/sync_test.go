package node

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/meta"
)

// orderLog records the order of flushes of the data disk and writes to
// the meta disk.
type orderLog struct {
	mu  sync.Mutex
	ops []string
}

func (o *orderLog) add(op string) {
	o.mu.Lock()
	o.ops = append(o.ops, op)
	o.mu.Unlock()
}

type loggedData struct {
	disk.Disk
	log *orderLog
}

func (d loggedData) Flush() error { d.log.add("data-flush"); return d.Disk.Flush() }

type loggedMeta struct {
	disk.Disk
	log *orderLog
}

func (d loggedMeta) WriteAt(p []byte, off int64, fua bool) error {
	d.log.add("meta-write")
	return d.Disk.WriteAt(p, off, fua)
}

func newTestMeta(t *testing.T, size int64) (*meta.Meta, disk.Disk, *orderLog) {
	t.Helper()
	log := &orderLog{}
	mdDisk := disk.NewMem(8<<20, disk.MemOptions{})
	data := disk.NewMem(size, disk.MemOptions{})
	l, err := meta.ComputeLayout(meta.ExternalPlacement(-1), size, 8<<20, meta.DefaultGranularity, meta.DefaultALExtents)
	require.NoError(t, err)
	_, err = meta.Format(mdDisk, l)
	require.NoError(t, err)
	md, err := meta.Open(loggedMeta{mdDisk, log}, meta.ExternalPlacement(-1), meta.Options{Name: "md", Data: data})
	require.NoError(t, err)
	t.Cleanup(func() { _ = md.Close() })
	return md, loggedData{data, log}, log
}

// The sync target's bitmap: a fetched range reads as in sync for the
// engine at once, but its bits leave the metadata only at a commit, and
// only after the data disk was flushed (the bitmap on disk never claims a
// block whose resync write a crash could still lose).
func TestDurableBitmapCommitsAfterTheFlush(t *testing.T) {
	const size = 4 << 20
	md, data, log := newTestMeta(t, size)
	md.WithBitmap(func(b *bitmap.Bitmap) { b.SetAll() })
	require.NoError(t, md.SyncBitmap())
	all := int64(md.OutOfSync()) * 4096
	b := newDurableBitmap(md, data, md.Layout().DataSize)

	off, n, ok := b.NextDirty(0, 1<<20)
	require.True(t, ok)
	require.Equal(t, [2]int64{0, 1 << 20}, [2]int64{off, n})
	b.SetInSync(0, 1<<20)
	off, _, ok = b.NextDirty(0, 1<<20)
	require.True(t, ok)
	require.Equal(t, int64(1<<20), off, "the engine does not fetch a range twice")
	require.Equal(t, all-(1<<20), b.OutOfSyncBytes())
	require.Equal(t, all, int64(md.OutOfSync())*4096, "nothing cleared in the metadata before a commit")

	log.ops = nil
	require.NoError(t, b.commit())
	require.Equal(t, "data-flush", log.ops[0], "the data is flushed before the bitmap is written: %v", log.ops)
	require.Contains(t, log.ops[1:], "meta-write")
	require.Equal(t, all-(1<<20), int64(md.OutOfSync())*4096)
	require.Equal(t, all-(1<<20), b.OutOfSyncBytes())

	// A fetched range marked again before its commit is fetched again.
	b.SetInSync(2<<20, 1<<20)
	b.MarkOutOfSync(2<<20+4096, 4096)
	require.NoError(t, b.commit())
	off, n, ok = b.NextDirty(2<<20, 1<<20)
	require.True(t, ok)
	require.Equal(t, [2]int64{2 << 20, 1 << 20}, [2]int64{off, n})
}
