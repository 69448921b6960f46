package meta

import (
	"errors"
	"fmt"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/genid"
)

// ErrNotGrown: the backing device is not larger than the data the
// metadata describes.
var ErrNotGrown = errors.New("the backing device did not grow")

// Grow moves the metadata of a backing device that grew (drbdadm resize,
// DRBD's drbd_md_set_sector_offsets on a new size) and returns the new
// layout. The metadata must be detached cleanly (not open), and
// oldCapacity is the capacity it was created or last grown for (its
// Layout's). Only internal metadata is grown (external metadata is
// refused: not implemented).
//
// The data area grows from the old data size to the new one. The bits
// of the old data are kept. Everything new is zeroed on this disk, so
// that the two nodes, each zeroing its own, agree on it without a
// resync: the grown space first, then (internal metadata) the old
// metadata area, which becomes data.
//
// Crash safety: the old metadata is untouched until the new superblock
// is written and flushed, after the new bitmap and activity log; the
// old metadata area is marked out of sync in the new bitmap before that
// superblock, and cleared only after it was zeroed and flushed. A crash
// therefore leaves the old metadata or the new, with every block that
// may differ from the peer marked. With internal metadata the new
// metadata area must lie wholly beyond the old end, or the old could be
// overwritten before the new superblock exists: a smaller growth is
// refused.
func Grow(md disk.Disk, p Placement, oldCapacity int64, name string) (Layout, error) {
	if !p.Internal {
		return Layout{}, errors.New("meta: resize: only internal metadata can be resized (meta-disk internal)")
	}
	off := SuperblockOffset(p, oldCapacity)
	block := make([]byte, SuperblockSize)
	if err := md.ReadAt(block, off); err != nil {
		return Layout{}, fmt.Errorf("meta: resize: read the superblock of %s at offset %d: %w", name, off, err)
	}
	old, _, err := readSlots(block, name, off)
	if err != nil {
		return Layout{}, fmt.Errorf("meta: resize: %w", err)
	}
	if old.Placement != p || old.MDOffset != off || (p.Internal && old.Capacity != oldCapacity) {
		return Layout{}, &DiskError{Err: ErrInvalid, Disk: name, Offset: off,
			Detail: fmt.Sprintf("resize: the superblock at offset %d is not the metadata of a %d-byte device", off, oldCapacity)}
	}
	if old.Flags&genid.FlagALClean == 0 {
		return Layout{}, fmt.Errorf("meta: resize: the metadata of %s was not detached cleanly (attach and detach it first)", name)
	}
	dataDev := md.Size()
	nl, err := ComputeLayout(p, dataDev, dataDev, int(old.Granularity), int(old.ALExtents))
	if err != nil {
		return Layout{}, fmt.Errorf("meta: resize: %w", err)
	}
	if nl.DataSize <= old.DataSize {
		return Layout{}, fmt.Errorf("meta: resize of %s: %w (data %d bytes, the device allows %d; shrinking is not supported)",
			name, ErrNotGrown, old.DataSize, nl.DataSize)
	}
	if nl.BMOffset < oldCapacity {
		return Layout{}, fmt.Errorf("meta: resize of %s: the device grew by %d bytes; grow it by at least %d, so that the new metadata (%d bytes) fits beyond the old end",
			name, dataDev-oldCapacity, nl.MDSize+(oldCapacity-alignDown(oldCapacity, 4096)), nl.MDSize)
	}

	// The new bitmap: the old bits, and the old metadata area marked.
	oldBM, err := loadBitmap(md, &old, name)
	if err != nil {
		return Layout{}, err
	}
	bm, err := bitmap.New(nl.DataSize, int(old.Granularity))
	if err != nil {
		return Layout{}, fmt.Errorf("meta: resize: %w", err)
	}
	for i := uint64(0); ; {
		first, ok := oldBM.NextSet(i)
		if !ok {
			break
		}
		last, ok := oldBM.NextClear(first)
		if !ok {
			last = oldBM.Bits()
		}
		bm.Set(first, last-1)
		i = last
	}
	oldMD := oldCapacity - old.DataSize // internal: the old metadata area, now data
	bm.MarkRange(old.DataSize, oldMD)

	sb := old
	sb.Seq = old.Seq + 1
	sb.DataSize, sb.Capacity = nl.DataSize, nl.Capacity
	sb.MDOffset, sb.MDSize = nl.MDOffset, nl.MDSize
	sb.ALOffset, sb.ALSize = nl.ALOffset, nl.ALSize
	sb.BMOffset, sb.BMSize = nl.BMOffset, nl.BMSize
	if err := sb.validate(); err != nil {
		return Layout{}, fmt.Errorf("meta: resize: layout: %w", err)
	}
	writeBitmap := func(pages []int) error {
		buf := make([]byte, 0, bitmap.PageSize)
		for _, pg := range pages {
			buf = bm.AppendPage(buf[:0], pg)
			if err := md.WriteAt(buf, nl.BMOffset+int64(pg)*bitmap.PageSize, false); err != nil {
				return err
			}
		}
		return nil
	}
	all := make([]int, bm.Pages())
	for i := range all {
		all[i] = i
	}
	newSB := make([]byte, SuperblockSize)
	sb.encode(newSB[slotFor(sb.Seq)*slotStride:])
	first, last, _ := bm.BlocksOf(old.DataSize, oldMD)
	steps := []struct {
		what string
		do   func() error
	}{
		{"zero the grown space", func() error { return md.WriteZeroes(oldCapacity, nl.BMOffset-oldCapacity, false, false) }},
		{"write the new bitmap", func() error {
			if err := md.WriteZeroes(nl.BMOffset, nl.BMSize, false, false); err != nil {
				return err
			}
			return writeBitmap(all)
		}},
		{"clear the new activity log", func() error { return md.WriteZeroes(nl.ALOffset, nl.ALSize, true, false) }},
		{"flush", md.Flush},
		{"write the new superblock", func() error { return md.WriteAt(newSB, nl.MDOffset, true) }},
		{"zero the old metadata area", func() error { return md.WriteZeroes(old.DataSize, oldMD, false, false) }},
		{"flush", md.Flush},
		{"clear the old metadata area's bits", func() error {
			bm.Clear(first, last)
			var pages []int
			for pg := bm.PageOf(first); pg <= bm.PageOf(last); pg++ {
				pages = append(pages, pg)
			}
			return writeBitmap(pages)
		}},
		{"flush", md.Flush},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return Layout{}, fmt.Errorf("meta: resize of %s: %s: %w", name, s.what, err)
		}
	}
	return nl, nil
}
