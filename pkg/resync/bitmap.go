package resync

import "github.com/twinblock/twinblock/bitmap"

// BitmapOf adapts a *bitmap.Bitmap covering size bytes to Bitmap. with must
// run its argument with the bitmap locked: pkg/meta's Meta.WithBitmap, or a
// mutex's Lock/Unlock around it.
//
// The adapter follows pkg/meta's rules: SetInSync clears only the blocks
// entirely inside the range, plus the partial last block of the device
// when the range reaches the device's end; MarkOutOfSync sets every block
// the range touches. Bits set through the adapter are persisted like any
// other change made under WithBitmap (the caller runs Meta.SyncBitmap after
// a verify); cleared bits need no immediate write.
//
// NextDirty looks at no more than max/granularity bits past the first
// dirty one, so walking a fully dirty device costs O(size) overall, not
// O(size²). A granularity above max yields one block anyway.
func BitmapOf(size int64, with func(func(*bitmap.Bitmap))) Bitmap {
	return &lockedBitmap{size: size, with: with}
}

type lockedBitmap struct {
	size int64
	with func(func(*bitmap.Bitmap))
}

func (l *lockedBitmap) NextDirty(off, limit int64) (runOff, runLen int64, ok bool) {
	l.with(func(b *bitmap.Bitmap) { runOff, runLen, ok = b.NextRun(off, limit, l.size, nil) })
	return runOff, runLen, ok
}

func (l *lockedBitmap) SetInSync(off, n int64) {
	l.with(func(b *bitmap.Bitmap) {
		g := int64(b.Granularity())
		first := (off + g - 1) / g
		end := (off + n) / g
		if off+n >= l.size {
			end = int64(b.Bits())
		}
		if off < 0 || end <= first {
			return
		}
		b.Clear(uint64(first), uint64(end-1))
	})
}

func (l *lockedBitmap) MarkOutOfSync(off, n int64) {
	l.with(func(b *bitmap.Bitmap) { b.MarkRange(off, n) })
}

func (l *lockedBitmap) OutOfSyncBytes() int64 {
	var n int64
	l.with(func(b *bitmap.Bitmap) { n = int64(b.Count()) * int64(b.Granularity()) })
	return n
}
