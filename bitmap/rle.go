package bitmap

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrRLE is wrapped by every decoding error.
var ErrRLE = errors.New("bitmap: malformed run-length encoding")

// EncodeRLE appends the run-length form of b to dst: uvarint(Bits), then
// alternating clear and set run lengths as uvarints, starting with a clear
// run (0 when bit 0 is set). The runs add up to Bits exactly. A bitmap
// with few runs (the usual case: a few dirty regions) encodes to a few
// bytes, whatever its size.
func (b *Bitmap) EncodeRLE(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, b.nbits)
	var pos uint64
	set := false
	for pos < b.nbits {
		var next uint64
		var ok bool
		if set {
			next, ok = b.NextClear(pos)
		} else {
			next, ok = b.NextSet(pos)
		}
		if !ok {
			next = b.nbits
		}
		dst = binary.AppendUvarint(dst, next-pos)
		pos = next
		set = !set
	}
	return dst
}

// MergeRLE ORs an encoded bitmap into b, which must have the same number
// of bits. Nothing is changed if the encoding is malformed.
func (b *Bitmap) MergeRLE(data []byte) error {
	runs, err := b.parseRLE(data)
	if err != nil {
		return err
	}
	var pos uint64
	for i, n := range runs {
		if i%2 == 1 {
			b.Set(pos, pos+n-1)
		}
		pos += n
	}
	return nil
}

// MergeRLEResized ORs an encoded bitmap of any number of bits into b:
// the bits both cover (the peer's bitmap after one of the two disks grew
// and the other not yet: the blocks beyond the smaller one are outside
// the size both hold). Nothing is changed if the encoding is malformed.
func (b *Bitmap) MergeRLEResized(data []byte) error {
	nbits, n := binary.Uvarint(data)
	if n <= 0 {
		return fmt.Errorf("%w: no bit count", ErrRLE)
	}
	if nbits == b.nbits {
		return b.MergeRLE(data)
	}
	other := &Bitmap{nbits: nbits}
	runs, err := other.parseRLE(data)
	if err != nil {
		return err
	}
	var pos uint64
	for i, run := range runs {
		if i%2 == 1 && pos < b.nbits {
			b.Set(pos, min(pos+run, b.nbits)-1)
		}
		pos += run
	}
	return nil
}

// DecodeRLE replaces b's content with an encoded bitmap of the same
// number of bits. Nothing is changed if the encoding is malformed.
func (b *Bitmap) DecodeRLE(data []byte) error {
	if _, err := b.parseRLE(data); err != nil {
		return err
	}
	if b.nbits > 0 {
		b.Clear(0, b.nbits-1)
	}
	return b.MergeRLE(data)
}

// parseRLE validates data against b's geometry and returns the runs.
func (b *Bitmap) parseRLE(data []byte) ([]uint64, error) {
	nbits, n := binary.Uvarint(data)
	if n <= 0 {
		return nil, fmt.Errorf("%w: no bit count", ErrRLE)
	}
	if nbits != b.nbits {
		return nil, fmt.Errorf("%w: %d bits encoded, bitmap has %d", ErrRLE, nbits, b.nbits)
	}
	data = data[n:]
	var runs []uint64
	var total uint64
	for len(data) > 0 {
		run, n := binary.Uvarint(data)
		if n <= 0 {
			return nil, fmt.Errorf("%w: bad run length after %d runs", ErrRLE, len(runs))
		}
		if run == 0 && len(runs) > 0 {
			return nil, fmt.Errorf("%w: empty run %d", ErrRLE, len(runs))
		}
		if run > nbits-total {
			return nil, fmt.Errorf("%w: runs exceed %d bits", ErrRLE, nbits)
		}
		total += run
		runs = append(runs, run)
		data = data[n:]
	}
	if total != nbits {
		return nil, fmt.Errorf("%w: runs cover %d of %d bits", ErrRLE, total, nbits)
	}
	return runs, nil
}
