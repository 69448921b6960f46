package meta

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
)

// sized shows the first size bytes of a disk: the device before it grew.
type sized struct {
	disk.Disk
	size int64
}

func (s sized) Size() int64 { return s.size }

const (
	growOld = 48 << 20
	growNew = 96 << 20
)

// grownDisk returns a crashable 96 MiB disk whose first 48 MiB were a
// device with metadata: a pattern in every 4 KiB block of its data, and
// the blocks of marked (offsets) out of sync, detached cleanly.
func grownDisk(t *testing.T, marked []int64) (*disk.Crash, Layout) {
	t.Helper()
	d := disk.NewCrash(growNew)
	old := sized{d, growOld}
	l, err := ComputeLayout(InternalPlacement, growOld, growOld, DefaultGranularity, DefaultALExtents)
	require.NoError(t, err)
	_, err = Format(old, l)
	require.NoError(t, err)
	for off := int64(0); off < l.DataSize; off += 4096 {
		require.NoError(t, d.WriteAt(pattern(off), off, false))
	}
	m, err := Open(old, InternalPlacement, Options{Name: "old"})
	require.NoError(t, err)
	for _, off := range marked {
		m.MarkOutOfSync(off, 4096)
	}
	require.NoError(t, m.Close())
	require.NoError(t, d.Flush())
	// What the grown space held before (lvextend leaves garbage).
	require.NoError(t, d.WriteAt(bytes.Repeat([]byte{0xee}, 1<<20), growOld+(4<<20), false))
	require.NoError(t, d.Flush())
	return d, l
}

func pattern(off int64) []byte {
	b := make([]byte, 4096)
	for i := range b {
		b[i] = byte(off>>12) ^ byte(i)
	}
	return b
}

// TestGrow: the grown metadata describes the larger device, keeps every
// bit and every data block, and the new space reads as zeroes (the old
// metadata area and the grown space), so two nodes that each grew agree.
func TestGrow(t *testing.T) {
	marked := []int64{0, 4096 * 7, 30 << 20}
	d, old := grownDisk(t, marked)
	nl, err := Grow(d, InternalPlacement, old.Capacity, "grown")
	require.NoError(t, err)
	require.Greater(t, nl.DataSize, old.DataSize)
	require.GreaterOrEqual(t, nl.DataSize, int64(growOld))

	m, err := Open(d, InternalPlacement, Options{Name: "grown"})
	require.NoError(t, err)
	require.Equal(t, nl.DataSize, m.Layout().DataSize)
	require.Equal(t, uint64(len(marked)), m.OutOfSync(), "the old bits, and only them")
	for _, off := range marked {
		require.True(t, outOfSync(m, off), "bit of %d kept", off)
	}
	buf := make([]byte, 4096)
	for off := int64(0); off < old.DataSize; off += 4096 {
		require.NoError(t, d.ReadAt(buf, off))
		require.Equal(t, pattern(off), buf, "data block at %d", off)
	}
	zero := make([]byte, 1<<20)
	for off := old.DataSize; off < nl.DataSize; off += int64(len(zero)) {
		n := min(int64(len(zero)), nl.DataSize-off)
		got := make([]byte, n)
		require.NoError(t, d.ReadAt(got, off))
		require.Equal(t, zero[:n], got, "new data at %d is zero", off)
	}
	require.NoError(t, m.Close())
	_, err = Grow(d, InternalPlacement, nl.Capacity, "grown")
	require.ErrorIs(t, err, ErrNotGrown, "growing again without a larger device")
}

func outOfSync(m *Meta, off int64) bool {
	var set bool
	m.WithBitmap(func(b *bitmap.Bitmap) { set = b.Test(uint64(off / 4096)) })
	return set
}

// TestGrowRefusals: too small a growth, an unclean log, no metadata.
func TestGrowRefusals(t *testing.T) {
	d, old := grownDisk(t, nil)
	_, err := Grow(sized{d, growOld + (16 << 10)}, InternalPlacement, old.Capacity, "small")
	require.ErrorContains(t, err, "grow it by at least")
	_, err = Grow(d, InternalPlacement, old.Capacity+4096, "wrong")
	require.Error(t, err, "no superblock where the old capacity says")
	_, err = Grow(d, ExternalPlacement(-1), old.Capacity, "external")
	require.ErrorContains(t, err, "only internal")
	m, err := Open(sized{d, growOld}, InternalPlacement, Options{Name: "attached"})
	require.NoError(t, err)
	_, err = Grow(d, InternalPlacement, old.Capacity, "attached")
	require.ErrorContains(t, err, "not detached cleanly")
	require.NoError(t, m.Close())
}

// TestGrowCrash: a power loss at every step of Grow, each kept write
// chosen at random, leaves either the old metadata (on the old device
// size) or the new, with the data blocks intact and every block that may
// hold something other than zeroes or the old data marked.
func TestGrowCrash(t *testing.T) {
	marked := []int64{4096 * 3, 20 << 20}
	for i := 0; ; i++ {
		step, seed := i/4, uint64(i%4) // four crashes at each step
		d, old := grownDisk(t, marked)
		var clone *disk.Crash
		n := 0
		rng := rand.New(rand.NewPCG(uint64(step), seed))
		h := &hookDisk{Disk: d, before: func() {
			if n == step {
				clone = d.CrashClone(rng, 0.5)
			}
			n++
		}}
		_, err := Grow(h, InternalPlacement, old.Capacity, "crash")
		require.NoError(t, err)
		if clone == nil {
			break // past the last step
		}
		var m *Meta
		if m, err = Open(clone, InternalPlacement, Options{Name: "new"}); err != nil {
			m, err = Open(sized{clone, growOld}, InternalPlacement, Options{Name: "old"})
			require.NoError(t, err, "step %d: neither the new nor the old metadata opens", step)
		}
		dataSize := m.Layout().DataSize
		for _, off := range marked {
			require.True(t, outOfSync(m, off), "step %d: bit of %d lost", step, off)
		}
		buf := make([]byte, 4096)
		for off := int64(0); off < dataSize; off += 4096 {
			require.NoError(t, clone.ReadAt(buf, off))
			switch {
			case off < old.DataSize:
				require.Equal(t, pattern(off), buf, "step %d: data block at %d", step, off)
			case !bytes.Equal(buf, make([]byte, 4096)):
				require.True(t, outOfSync(m, off), "step %d: block %d of the new space holds data and is not marked", step, off)
			}
		}
		require.NoError(t, m.Close())
	}
}
