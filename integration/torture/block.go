package torture

import (
	"encoding/binary"
	"hash/crc32"
)

// BlockSize is the unit the ledger tracks: every write covers whole,
// aligned blocks, and every block carries its own identity.
const BlockSize = 4096

// blockMagic opens every block the writer writes.
var blockMagic = [8]byte{'T', 'W', 'B', 'L', 'E', 'D', 'G', 'R'}

// The block layout: magic, block number, write id, run nonce, filler,
// and a CRC-32C over everything before it.
const (
	offMagic  = 0
	offBlock  = 8
	offID     = 16
	offNonce  = 24
	offFiller = 32
	offCRC    = BlockSize - 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// FillBlock writes the content of block number block as written by write
// id into dst (BlockSize bytes). The filler is a function of (nonce,
// block, id), so two writes never produce the same block.
func FillBlock(dst []byte, nonce, block, id uint64) {
	_ = dst[BlockSize-1]
	copy(dst[offMagic:], blockMagic[:])
	binary.LittleEndian.PutUint64(dst[offBlock:], block)
	binary.LittleEndian.PutUint64(dst[offID:], id)
	binary.LittleEndian.PutUint64(dst[offNonce:], nonce)
	x := nonce ^ block*0x9e3779b97f4a7c15 ^ id*0xbf58476d1ce4e5b9
	for o := offFiller; o+8 <= offCRC; o += 8 {
		x = splitmix(x)
		binary.LittleEndian.PutUint64(dst[o:], x)
	}
	binary.LittleEndian.PutUint32(dst[offCRC:], crc32.Checksum(dst[:offCRC], castagnoli))
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	z := x
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// ContentKind classifies a block read back.
type ContentKind uint8

const (
	// Zero: all zeroes (never written, trimmed or zeroed).
	Zero ContentKind = iota
	// Written: a block the writer wrote for this block number in this
	// run; Content.ID names the write.
	Written
	// Torn: not zero, and not a whole block the writer wrote (wrong
	// magic or checksum).
	Torn
	// Foreign: a whole, valid block written for another block number
	// or by another run (a misdirected or stale copy).
	Foreign
)

func (k ContentKind) String() string {
	switch k {
	case Zero:
		return "zero"
	case Written:
		return "written"
	case Torn:
		return "torn"
	case Foreign:
		return "foreign"
	}
	return "ContentKind(?)"
}

// Content is what a block read back holds.
type Content struct {
	Kind  ContentKind
	ID    uint64 // Written and Foreign: the write id in the header
	Block uint64 // Foreign: the block number in the header
}

func (c Content) String() string {
	switch c.Kind {
	case Written:
		return "write " + uitoa(c.ID)
	case Foreign:
		return "foreign (block " + uitoa(c.Block) + ", write " + uitoa(c.ID) + ")"
	}
	return c.Kind.String()
}

func uitoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// DecodeBlock classifies b (BlockSize bytes) read at block number block.
func DecodeBlock(b []byte, nonce, block uint64) Content {
	_ = b[BlockSize-1]
	if [8]byte(b[offMagic:offMagic+8]) != blockMagic {
		if isZero(b) {
			return Content{Kind: Zero}
		}
		return Content{Kind: Torn}
	}
	if binary.LittleEndian.Uint32(b[offCRC:]) != crc32.Checksum(b[:offCRC], castagnoli) {
		return Content{Kind: Torn}
	}
	c := Content{Kind: Written, ID: binary.LittleEndian.Uint64(b[offID:]), Block: binary.LittleEndian.Uint64(b[offBlock:])}
	if c.Block != block || binary.LittleEndian.Uint64(b[offNonce:]) != nonce {
		c.Kind = Foreign
	}
	return c
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
