package meta

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Activity-log transaction format: one 4 KiB block, big-endian, CRC32C
// over the block with the checksum field last. The numbers match DRBD's
// al_transaction_on_disk: up to 64 slot updates and a window of 919
// context slots per transaction.
const (
	// ALMagic starts every transaction: "twal".
	ALMagic uint32 = 0x7477616c
	// ALUpdates is the most slot updates one transaction carries.
	ALUpdates = 64
	// ALContextSlots is the size of the context window.
	ALContextSlots = 919
	// FreeSlot is the extent number of an empty slot.
	FreeSlot uint32 = 0xFFFFFFFF

	alOffMagic    = 0
	alOffVersion  = 4 // u16
	alOffNUpdates = 6 // u16
	alOffEpoch    = 8
	alOffSeq      = 16
	alOffCtxStart = 24 // u16
	alOffCtxCount = 26 // u16
	alOffUpSlots  = 32 // ALUpdates × u16
	alOffUpExts   = alOffUpSlots + 2*ALUpdates
	alOffContext  = alOffUpExts + 4*ALUpdates // ALContextSlots × u32
	alOffCRC      = ALBlockSize - 4
)

// The transaction layout must fit its block.
var _ [alOffCRC - (alOffContext + 4*ALContextSlots)]struct{}

// alUpdate sets one slot to an extent (FreeSlot to empty it).
type alUpdate struct {
	Slot   uint16
	Extent uint32
}

// alTx is one decoded transaction. Context holds the values of slots
// [CtxStart, CtxStart+len(Context)) after the updates were applied, so
// that replaying the last transactions of the ring restores every slot
// even when the update that set it has been overwritten.
type alTx struct {
	Epoch    uint64
	Seq      uint64
	Updates  []alUpdate
	CtxStart uint16
	Context  []uint32
}

func (tx *alTx) encode(b []byte) {
	clear(b[:ALBlockSize])
	be := binary.BigEndian
	be.PutUint32(b[alOffMagic:], ALMagic)
	be.PutUint16(b[alOffVersion:], 1)
	be.PutUint16(b[alOffNUpdates:], uint16(len(tx.Updates)))
	be.PutUint64(b[alOffEpoch:], tx.Epoch)
	be.PutUint64(b[alOffSeq:], tx.Seq)
	be.PutUint16(b[alOffCtxStart:], tx.CtxStart)
	be.PutUint16(b[alOffCtxCount:], uint16(len(tx.Context)))
	for i, u := range tx.Updates {
		be.PutUint16(b[alOffUpSlots+2*i:], u.Slot)
		be.PutUint32(b[alOffUpExts+4*i:], u.Extent)
	}
	for i, e := range tx.Context {
		be.PutUint32(b[alOffContext+4*i:], e)
	}
	be.PutUint32(b[alOffCRC:], crc32.Checksum(b[:alOffCRC], crc32c))
}

// decodeALTx decodes a transaction block for a log of nslots slots. It
// returns slotEmpty without magic, slotTorn on a checksum mismatch, and
// ErrInvalid for a checksummed block that cannot be right.
func decodeALTx(b []byte, nslots int) (alTx, slotState, error) {
	var tx alTx
	if len(b) < ALBlockSize {
		return tx, slotEmpty, fmt.Errorf("%w: log block of %d bytes", ErrInvalid, len(b))
	}
	be := binary.BigEndian
	if be.Uint32(b[alOffMagic:]) != ALMagic {
		return tx, slotEmpty, nil
	}
	if crc32.Checksum(b[:alOffCRC], crc32c) != be.Uint32(b[alOffCRC:]) {
		return tx, slotTorn, nil
	}
	if v := be.Uint16(b[alOffVersion:]); v != 1 {
		return tx, slotValid, fmt.Errorf("%w: log transaction version %d", ErrInvalid, v)
	}
	n := int(be.Uint16(b[alOffNUpdates:]))
	tx.Epoch = be.Uint64(b[alOffEpoch:])
	tx.Seq = be.Uint64(b[alOffSeq:])
	tx.CtxStart = be.Uint16(b[alOffCtxStart:])
	nctx := int(be.Uint16(b[alOffCtxCount:]))
	if n > ALUpdates || nctx > ALContextSlots || int(tx.CtxStart)+nctx > nslots {
		return tx, slotValid, fmt.Errorf("%w: log transaction with %d updates, context %d+%d of %d slots",
			ErrInvalid, n, tx.CtxStart, nctx, nslots)
	}
	tx.Updates = make([]alUpdate, n)
	for i := range tx.Updates {
		tx.Updates[i] = alUpdate{Slot: be.Uint16(b[alOffUpSlots+2*i:]), Extent: be.Uint32(b[alOffUpExts+4*i:])}
		if int(tx.Updates[i].Slot) >= nslots {
			return tx, slotValid, fmt.Errorf("%w: log update of slot %d of %d", ErrInvalid, tx.Updates[i].Slot, nslots)
		}
	}
	tx.Context = make([]uint32, nctx)
	for i := range tx.Context {
		tx.Context[i] = be.Uint32(b[alOffContext+4*i:])
	}
	return tx, slotValid, nil
}

// replayAL reads the ring (ring bytes starting at device offset base) and
// returns the extents the log held when it was last written: the slots
// after replaying, in sequence order, every transaction of epoch that
// the ring still holds.
//
// Transactions of an epoch are numbered from 0 and written at position
// seq mod R. If the newest valid one is S, the R-1 before it (or all
// since 0) must be intact: the block after S may be torn by the crash
// that interrupted transaction S+1, but no other. A required transaction
// that is missing or fails its checksum is corruption, reported with its
// offset, and nothing is replayed.
func replayAL(ring []byte, base int64, name string, epoch uint64, nslots int) ([]uint32, error) {
	r := len(ring) / ALBlockSize
	byPos := make([]*alTx, r)
	state := make([]slotState, r)
	var newest *alTx
	for p := 0; p < r; p++ {
		tx, st, err := decodeALTx(ring[p*ALBlockSize:], nslots)
		state[p] = st
		if err != nil {
			return nil, &DiskError{Err: ErrInvalid, Disk: name, Offset: base + int64(p*ALBlockSize), Detail: "activity log: " + err.Error()}
		}
		if st != slotValid || tx.Epoch != epoch {
			continue
		}
		if int(tx.Seq%uint64(r)) != p {
			return nil, &DiskError{Err: ErrInvalid, Disk: name, Offset: base + int64(p*ALBlockSize),
				Detail: fmt.Sprintf("activity log transaction %d at ring position %d", tx.Seq, p)}
		}
		byPos[p] = &tx
		if newest == nil || tx.Seq > newest.Seq {
			newest = byPos[p]
		}
	}
	slots := make([]uint32, nslots)
	for i := range slots {
		slots[i] = FreeSlot
	}
	if newest == nil {
		return slots, nil
	}
	first := uint64(0)
	if newest.Seq >= uint64(r-1) {
		first = newest.Seq - uint64(r-2)
	}
	for seq := first; seq <= newest.Seq; seq++ {
		p := int(seq % uint64(r))
		tx := byPos[p]
		if tx == nil || tx.Seq != seq {
			err := &DiskError{Err: ErrInvalid, Disk: name, Offset: base + int64(p*ALBlockSize),
				Detail: fmt.Sprintf("activity log transaction %d is missing (newest is %d)", seq, newest.Seq)}
			if state[p] == slotTorn {
				err.Err, err.Detail = ErrChecksum, fmt.Sprintf("activity log transaction %d", seq)
			}
			return nil, err
		}
		for _, u := range tx.Updates {
			slots[u.Slot] = u.Extent
		}
		copy(slots[tx.CtxStart:], tx.Context)
	}
	return slots, nil
}
