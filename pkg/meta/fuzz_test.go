package meta

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/genid"
)

// FuzzDecodeSuperblock: any 4 KiB block decodes to an error or to a
// superblock whose geometry validates and which re-encodes to the same
// slot; it never panics.
func FuzzDecodeSuperblock(f *testing.F) {
	l, _ := ComputeLayout(InternalPlacement, 1<<30, 1<<30, 4096, 1237)
	sb := Superblock{Seq: 3, DataSize: l.DataSize, GI: genid.GI{9, 8, 7, 6}, Flags: genid.FlagConsistent, Granularity: 4096,
		Placement: l.Placement, Capacity: l.Capacity, MDOffset: l.MDOffset, MDSize: l.MDSize, ALOffset: l.ALOffset,
		ALSize: l.ALSize, ALExtents: 1237, BMOffset: l.BMOffset, BMSize: l.BMSize}
	block := make([]byte, SuperblockSize)
	sb.encode(block)
	f.Add(append([]byte(nil), block...), false)
	sb.Seq++
	sb.Placement = ExternalPlacement(3)
	sb.encode(block[slotStride:])
	f.Add(append([]byte(nil), block...), true)
	f.Add(make([]byte, SuperblockSize), true)
	f.Fuzz(func(t *testing.T, b []byte, fixCRC bool) {
		if len(b) < SuperblockSize {
			b = append(b, make([]byte, SuperblockSize-len(b))...)
		}
		if fixCRC { // let mutations reach the checks behind the checksum
			for _, s := range []int{0, slotStride} {
				binary.BigEndian.PutUint32(b[s+offCRC:], crc32.Checksum(b[s:s+offCRC], crc32c))
			}
		}
		got, _, err := readSlots(b[:SuperblockSize], "fuzz", 0)
		if err != nil {
			return
		}
		if err := got.validate(); err != nil {
			t.Fatalf("decoded an invalid superblock: %v", err)
		}
		again := make([]byte, slotSize)
		got.encode(again)
		back, st, err := decodeSuperblock(again)
		if err != nil || st != slotValid || back != got {
			t.Fatalf("re-encode: %v %v %+v vs %+v", err, st, back, got)
		}
		// Reading it from a small device must fail cleanly or read
		// within the device: no huge allocation, no panic.
		const devSize = 4 << 20
		md := disk.NewMem(devSize, disk.MemOptions{})
		off := SuperblockOffset(got.Placement, devSize)
		if off >= 0 && off+SuperblockSize <= devSize {
			_ = md.WriteAt(b[:SuperblockSize], off, false)
			if s, err := Inspect(md, got.Placement, "fuzz"); err == nil && s.Bitmap.Bits() > devSize*8 {
				t.Fatalf("a %d-byte device yields a bitmap of %d bits", devSize, s.Bitmap.Bits())
			}
		}
	})
}

// FuzzDecodeALTx: a log block decodes to an error or to a transaction
// within the log's bounds, and replaying a ring of such blocks never
// panics nor returns a slot out of range.
func FuzzDecodeALTx(f *testing.F) {
	core := newALCore(1237)
	block := make([]byte, ALBlockSize)
	tx := core.makeTx([]pendingUpdate{{alUpdate{5, 77}, FreeSlot}, {alUpdate{1200, 3}, FreeSlot}}, 1)
	tx.encode(block)
	f.Add(append([]byte(nil), block...), uint16(1237), true)
	tx = core.makeTx(nil, 1)
	tx.encode(block)
	f.Add(append([]byte(nil), block...), uint16(1237), false)
	f.Add(make([]byte, ALBlockSize), uint16(67), true)
	f.Fuzz(func(t *testing.T, b []byte, n uint16, fixCRC bool) {
		nslots := MinALExtents + int(n)%(MaxALExtents-MinALExtents+1)
		if len(b) < ALBlockSize {
			b = append(b, make([]byte, ALBlockSize-len(b))...)
		}
		if fixCRC {
			binary.BigEndian.PutUint32(b[alOffCRC:], crc32.Checksum(b[:alOffCRC], crc32c))
		}
		tx, st, err := decodeALTx(b[:ALBlockSize], nslots)
		if err == nil && st == slotValid {
			if len(tx.Updates) > ALUpdates || int(tx.CtxStart)+len(tx.Context) > nslots {
				t.Fatalf("transaction out of bounds: %d updates, context %d+%d", len(tx.Updates), tx.CtxStart, len(tx.Context))
			}
			for _, u := range tx.Updates {
				if int(u.Slot) >= nslots {
					t.Fatalf("slot %d of %d", u.Slot, nslots)
				}
			}
		}
		// A ring of eight variants of the block, numbered as a real
		// ring would be, so that the replay loop is reached.
		ring := make([]byte, DefaultALSize)
		for p := 0; p < DefaultALSize/ALBlockSize; p++ {
			blk := ring[p*ALBlockSize : (p+1)*ALBlockSize]
			copy(blk, b[:ALBlockSize])
			if len(b) >= (p+2)*ALBlockSize {
				copy(blk, b[(p+1)*ALBlockSize:])
			}
			if fixCRC {
				binary.BigEndian.PutUint64(blk[alOffEpoch:], tx.Epoch)
				binary.BigEndian.PutUint64(blk[alOffSeq:], uint64(p+8*int(n%4)))
				binary.BigEndian.PutUint32(blk[alOffCRC:], crc32.Checksum(blk[:alOffCRC], crc32c))
			}
		}
		slots, err := replayAL(ring, 0, "fuzz", tx.Epoch, nslots)
		if err == nil && len(slots) != nslots {
			t.Fatalf("replay returned %d slots of %d", len(slots), nslots)
		}
	})
}
