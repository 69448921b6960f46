package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/twinblock/twinblock/pkg/genid"
)

// On-disk identification.
const (
	// Magic starts every superblock slot: "twmd".
	Magic uint32 = 0x74776d64
	// Version is the superblock format this code writes and reads.
	Version uint32 = 1
	// slotSize is the encoded size of one superblock slot; slots sit at
	// offsets 0 and slotStride of the 4 KiB superblock block.
	slotSize   = 512
	slotStride = 2048
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// Errors reading metadata. Each is wrapped in a *DiskError naming the
// device and offset.
var (
	// ErrNoMetadata: no superblock magic where the metadata should be.
	ErrNoMetadata = errors.New("no twinblock metadata")
	// ErrChecksum: a superblock slot or log transaction fails its CRC32C.
	ErrChecksum = errors.New("metadata checksum mismatch")
	// ErrInvalid: the checksum is right but the content is not (an
	// unknown version, a geometry that does not fit the device).
	ErrInvalid = errors.New("invalid metadata")
)

// DiskError is a metadata error at one place of one device, worded
// "metadata checksum mismatch on DISK at offset N (what)".
type DiskError struct {
	Err    error  // ErrNoMetadata, ErrChecksum or ErrInvalid
	Disk   string // the meta device's path
	Offset int64
	Detail string
}

func (e *DiskError) Error() string {
	s := fmt.Sprintf("%v on %s at offset %d", e.Err, e.Disk, e.Offset)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

func (e *DiskError) Unwrap() error { return e.Err }

// Superblock is the decoded content of one superblock slot. All sizes and
// offsets are in bytes; offsets are absolute on the meta device.
type Superblock struct {
	Seq         uint64 // slot sequence: the valid slot with the higher one is current
	DataSize    int64  // usable data size (DRBD's la_size)
	GI          genid.GI
	DeviceUUID  uint64 // random at create-md; names this metadata
	Flags       genid.Flags
	Granularity uint32 // bytes per bitmap bit (bm_bytes_per_bit)
	Placement   Placement
	Capacity    int64 // backing disk size (4 KiB aligned) at create-md
	MDOffset    int64
	MDSize      int64
	ALOffset    int64
	ALSize      int64
	ALExtents   uint32 // activity-log slots in use
	ALEpoch     uint64 // log transactions of another epoch are ignored
	BMOffset    int64
	BMSize      int64
	PeerMaxBio  uint32 // la_peer_max_bio_size
	// QuorumEpoch is the highest quorum epoch under which this disk has
	// seen a Primary serve, its own node's included: the floor of the
	// epoch fence (replication.EpochFence), which refuses an older
	// Primary. 0 without quorum. (Version 1 superblocks written before
	// it hold 0 there.)
	QuorumEpoch uint64
}

// Byte offsets inside a slot (big-endian, as DRBD's superblock).
const (
	offMagic       = 0
	offVersion     = 4
	offSeq         = 8
	offDataSize    = 16
	offGI          = 24 // 4 × 8
	offDeviceUUID  = 56
	offFlags       = 64
	offGranularity = 68
	offPlacement   = 72 // u32 kind: 0 internal, 1 external flexible, 2 external indexed
	offIndex       = 76 // i32
	offCapacity    = 80
	offMDOffset    = 88
	offMDSize      = 96
	offALOffset    = 104
	offALSize      = 112
	offALExtents   = 120
	offPeerMaxBio  = 124
	offALEpoch     = 128
	offBMOffset    = 136
	offBMSize      = 144
	offQuorumEpoch = 152
	offEnd         = 160 // zero up to offCRC
	offCRC         = slotSize - 4
)

// encode writes sb into a slotSize buffer.
func (sb *Superblock) encode(b []byte) {
	clear(b[:slotSize])
	be := binary.BigEndian
	be.PutUint32(b[offMagic:], Magic)
	be.PutUint32(b[offVersion:], Version)
	be.PutUint64(b[offSeq:], sb.Seq)
	be.PutUint64(b[offDataSize:], uint64(sb.DataSize))
	for i, u := range sb.GI {
		be.PutUint64(b[offGI+8*i:], u)
	}
	be.PutUint64(b[offDeviceUUID:], sb.DeviceUUID)
	be.PutUint32(b[offFlags:], uint32(sb.Flags))
	be.PutUint32(b[offGranularity:], sb.Granularity)
	kind, idx := uint32(0), int32(-1)
	if !sb.Placement.Internal {
		kind = 1
		if sb.Placement.Index >= 0 {
			kind, idx = 2, int32(sb.Placement.Index)
		}
	}
	be.PutUint32(b[offPlacement:], kind)
	be.PutUint32(b[offIndex:], uint32(idx))
	be.PutUint64(b[offCapacity:], uint64(sb.Capacity))
	be.PutUint64(b[offMDOffset:], uint64(sb.MDOffset))
	be.PutUint64(b[offMDSize:], uint64(sb.MDSize))
	be.PutUint64(b[offALOffset:], uint64(sb.ALOffset))
	be.PutUint64(b[offALSize:], uint64(sb.ALSize))
	be.PutUint32(b[offALExtents:], sb.ALExtents)
	be.PutUint32(b[offPeerMaxBio:], sb.PeerMaxBio)
	be.PutUint64(b[offALEpoch:], sb.ALEpoch)
	be.PutUint64(b[offBMOffset:], uint64(sb.BMOffset))
	be.PutUint64(b[offBMSize:], uint64(sb.BMSize))
	be.PutUint64(b[offQuorumEpoch:], sb.QuorumEpoch)
	be.PutUint32(b[offCRC:], crc32.Checksum(b[:offCRC], crc32c))
}

// slotState classifies a slot before decoding it.
type slotState int

const (
	slotEmpty slotState = iota // no magic: never written (or zeroed)
	slotTorn                   // magic but a wrong checksum
	slotValid
)

// decodeSuperblock decodes one slot. It reports slotEmpty without magic,
// slotTorn on a checksum mismatch, and an error (ErrInvalid) for a
// checksummed slot whose content cannot be right.
func decodeSuperblock(b []byte) (Superblock, slotState, error) {
	var sb Superblock
	if len(b) < slotSize {
		return sb, slotEmpty, fmt.Errorf("%w: superblock slot of %d bytes", ErrInvalid, len(b))
	}
	be := binary.BigEndian
	if be.Uint32(b[offMagic:]) != Magic {
		return sb, slotEmpty, nil
	}
	if crc32.Checksum(b[:offCRC], crc32c) != be.Uint32(b[offCRC:]) {
		return sb, slotTorn, nil
	}
	if v := be.Uint32(b[offVersion:]); v != Version {
		return sb, slotValid, fmt.Errorf("%w: format version %d, this twinblock reads %d", ErrInvalid, v, Version)
	}
	sb.Seq = be.Uint64(b[offSeq:])
	sb.DataSize = int64(be.Uint64(b[offDataSize:]))
	for i := range sb.GI {
		sb.GI[i] = be.Uint64(b[offGI+8*i:])
	}
	sb.DeviceUUID = be.Uint64(b[offDeviceUUID:])
	sb.Flags = genid.Flags(be.Uint32(b[offFlags:]))
	sb.Granularity = be.Uint32(b[offGranularity:])
	switch kind, idx := be.Uint32(b[offPlacement:]), int32(be.Uint32(b[offIndex:])); {
	case kind == 0 && idx == -1:
		sb.Placement = InternalPlacement
	case kind == 1 && idx == -1:
		sb.Placement = ExternalPlacement(-1)
	case kind == 2 && idx >= 0:
		sb.Placement = ExternalPlacement(int(idx))
	default:
		return sb, slotValid, fmt.Errorf("%w: placement kind %d index %d", ErrInvalid, kind, idx)
	}
	sb.Capacity = int64(be.Uint64(b[offCapacity:]))
	sb.MDOffset = int64(be.Uint64(b[offMDOffset:]))
	sb.MDSize = int64(be.Uint64(b[offMDSize:]))
	sb.ALOffset = int64(be.Uint64(b[offALOffset:]))
	sb.ALSize = int64(be.Uint64(b[offALSize:]))
	sb.ALExtents = be.Uint32(b[offALExtents:])
	sb.PeerMaxBio = be.Uint32(b[offPeerMaxBio:])
	sb.ALEpoch = be.Uint64(b[offALEpoch:])
	sb.BMOffset = int64(be.Uint64(b[offBMOffset:]))
	sb.BMSize = int64(be.Uint64(b[offBMSize:]))
	sb.QuorumEpoch = be.Uint64(b[offQuorumEpoch:])
	if err := sb.validate(); err != nil {
		return sb, slotValid, err
	}
	return sb, slotValid, nil
}

// maxDevice bounds every size and offset a superblock may record (1 EiB),
// so that sums and products of them cannot overflow an int64.
const maxDevice = int64(1) << 60

// validate checks that the geometry is self-consistent and bounded, so
// that nothing read from it can send I/O outside the metadata, overflow
// an offset computation, or size a bitmap or log buffer absurdly. (Probe
// then checks the areas against the device's actual size.)
func (sb *Superblock) validate() error {
	g := int64(sb.Granularity)
	inRange := func(x, lo, hi int64) bool { return x >= lo && x <= hi }
	aligned := func(xs ...int64) bool {
		for _, x := range xs {
			if x%4096 != 0 {
				return false
			}
		}
		return true
	}
	switch {
	case g < DefaultGranularity || g > 1<<20 || g&(g-1) != 0:
		return fmt.Errorf("%w: bitmap granularity %d", ErrInvalid, g)
	case sb.ALExtents < MinALExtents || sb.ALExtents > MaxALExtents:
		return fmt.Errorf("%w: al-extents %d", ErrInvalid, sb.ALExtents)
	case !inRange(sb.Capacity, 4096, maxDevice) || !inRange(sb.DataSize, 4096, sb.Capacity) || !aligned(sb.Capacity, sb.DataSize):
		return fmt.Errorf("%w: data size %d of capacity %d", ErrInvalid, sb.DataSize, sb.Capacity)
	case !inRange(sb.ALSize, DefaultALSize, ALRingSize(MaxALExtents)) || !aligned(sb.ALSize) ||
		int(sb.ALExtents) > maxALExtents(sb.ALSize):
		return fmt.Errorf("%w: activity log of %d bytes for %d extents", ErrInvalid, sb.ALSize, sb.ALExtents)
	}
	// The bitmap must cover the data and be no larger than DRBD would
	// make it (or an indexed slot's).
	needBits := (sb.DataSize + g - 1) / g
	maxBM := max(bitmapBytes(sb.Capacity, DefaultGranularity), IndexedSize)
	switch {
	case !inRange(sb.BMSize, (needBits+7)/8, maxBM) || !aligned(sb.BMSize):
		return fmt.Errorf("%w: bitmap of %d bytes for %d bytes of data", ErrInvalid, sb.BMSize, sb.DataSize)
	case !inRange(sb.MDOffset, 0, maxDevice) || !inRange(sb.ALOffset, 0, maxDevice) || !inRange(sb.BMOffset, 0, maxDevice) ||
		!aligned(sb.MDOffset, sb.ALOffset, sb.BMOffset) ||
		!inRange(sb.MDSize, SuperblockSize+sb.ALSize+sb.BMSize, maxDevice):
		return fmt.Errorf("%w: metadata offsets md %d al %d bm %d, size %d", ErrInvalid, sb.MDOffset, sb.ALOffset, sb.BMOffset, sb.MDSize)
	}
	return nil
}

// Layout returns the geometry the superblock records.
func (sb *Superblock) Layout() Layout {
	return Layout{
		Placement: sb.Placement, Granularity: int(sb.Granularity), ALExtents: int(sb.ALExtents),
		Capacity: sb.Capacity, DataSize: sb.DataSize, MDOffset: sb.MDOffset, MDSize: sb.MDSize,
		ALOffset: sb.ALOffset, ALSize: sb.ALSize, BMOffset: sb.BMOffset, BMSize: sb.BMSize,
	}
}

// readSlots decodes the two slots of the superblock block found at off
// and returns the current one (the valid slot with the higher sequence),
// plus a warning when the other slot is torn. A block whose slots are
// both empty is ErrNoMetadata; one with no valid slot but a torn one is
// ErrChecksum at that slot.
func readSlots(block []byte, name string, off int64) (Superblock, string, error) {
	var (
		best    Superblock
		found   bool
		torn    = -1
		invalid error
	)
	for i := 0; i < 2; i++ {
		sb, st, err := decodeSuperblock(block[i*slotStride:])
		switch {
		case err != nil:
			invalid = &DiskError{Err: ErrInvalid, Disk: name, Offset: off + int64(i*slotStride),
				Detail: "superblock: " + err.Error()}
		case st == slotTorn && torn < 0:
			torn = i
		case st == slotValid && (!found || sb.Seq > best.Seq):
			best, found = sb, true
		}
	}
	switch {
	case invalid != nil:
		return best, "", invalid
	case !found && torn >= 0:
		return best, "", &DiskError{Err: ErrChecksum, Disk: name, Offset: off + int64(torn*slotStride), Detail: "superblock"}
	case !found:
		return best, "", &DiskError{Err: ErrNoMetadata, Disk: name, Offset: off, Detail: "run create-md"}
	}
	warn := ""
	if torn >= 0 {
		warn = fmt.Sprintf("superblock slot at offset %d of %s fails its checksum (a write torn by a crash); using the other slot, sequence %d",
			off+int64(torn*slotStride), name, best.Seq)
	}
	return best, warn, nil
}

// slotFor is the slot a superblock of sequence seq is written to: the
// one not holding seq-1, so that a torn write never damages the current
// superblock.
func slotFor(seq uint64) int { return int(seq & 1) }
