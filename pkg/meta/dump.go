package meta

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/genid"
)

// Snapshot is metadata read without attaching: what dump-md shows.
type Snapshot struct {
	Superblock Superblock
	Warning    string         // a torn superblock slot
	Bitmap     *bitmap.Bitmap // as on disk
	// ALExtents are the extents a crash recovery would mark (the log is
	// not clean), nil when it is clean.
	ALExtents []uint32
	// FullSync: attaching will mark every block out of sync (a crash
	// while Primary with the log disabled, al-updates no).
	FullSync bool
}

// Inspect reads the superblock, the bitmap and, if it is not clean, the
// activity log of placement p on md, changing nothing.
func Inspect(md disk.Disk, p Placement, name string) (*Snapshot, error) {
	sb, warn, err := Probe(md, p, name)
	if err != nil {
		return nil, err
	}
	bm, err := loadBitmap(md, &sb, name)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{Superblock: sb, Warning: warn, Bitmap: bm, FullSync: fullSyncAtAttach(sb.Flags)}
	if sb.Flags&genid.FlagALClean == 0 && !s.FullSync {
		ring := make([]byte, sb.ALSize)
		if err := md.ReadAt(ring, sb.ALOffset); err != nil {
			return nil, fmt.Errorf("meta: read activity log of %s: %w", name, err)
		}
		slots, err := replayAL(ring, sb.ALOffset, name, sb.ALEpoch, int(sb.ALExtents))
		if err != nil {
			return nil, err
		}
		s.ALExtents = []uint32{}
		for _, e := range slots {
			if e != FreeSlot {
				s.ALExtents = append(s.ALExtents, e)
			}
		}
	}
	return s, nil
}

// WriteDump prints the snapshot in the spirit of drbdmeta dump-md: the
// geometry as comments, the generation identifiers and flags, the
// scalar fields, and the bitmap as 64-bit words with runs collapsed
// ("N times 0xWORD;").
func (s *Snapshot) WriteDump(w io.Writer, name string) error {
	bw := bufio.NewWriter(w)
	sb := &s.Superblock
	fmt.Fprintf(bw, "version \"twinblock-v%d\";\n\n", Version)
	fmt.Fprintf(bw, "# meta-disk %s on %s\n", sb.Placement, name)
	fmt.Fprintf(bw, "# md_offset %d\n# md_size %d\n# al_offset %d\n# al_size %d\n# bm_offset %d\n# bm_size %d\n",
		sb.MDOffset, sb.MDSize, sb.ALOffset, sb.ALSize, sb.BMOffset, sb.BMSize)
	fmt.Fprintf(bw, "# superblock sequence %d\n", sb.Seq)
	if s.Warning != "" {
		fmt.Fprintf(bw, "# warning: %s\n", s.Warning)
	}
	fmt.Fprintf(bw, "\nuuid {\n    0x%016X; 0x%016X; 0x%016X; 0x%016X;\n    flags 0x%08X;\n}\n",
		sb.GI[genid.Current], sb.GI[genid.Bitmap], sb.GI[genid.HistoryStart], sb.GI[genid.HistoryEnd], uint32(sb.Flags))
	fmt.Fprintf(bw, "# flags: %s\n", sb.Flags)
	fmt.Fprintf(bw, "# al-extents %d;\n", sb.ALExtents)
	fmt.Fprintf(bw, "la-size-sect %d;\n", sb.DataSize/512)
	fmt.Fprintf(bw, "bm-byte-per-bit %d;\n", sb.Granularity)
	fmt.Fprintf(bw, "device-uuid 0x%016X;\n", sb.DeviceUUID)
	fmt.Fprintf(bw, "la-peer-max-bio-size %d;\n", sb.PeerMaxBio)
	fmt.Fprintf(bw, "al-stripes 1;\nal-stripe-size-4k %d;\n", sb.ALSize/4096)
	fmt.Fprintf(bw, "al-epoch %d;\n", sb.ALEpoch)
	if sb.QuorumEpoch != 0 {
		fmt.Fprintf(bw, "quorum-epoch %d;\n", sb.QuorumEpoch)
	}
	switch {
	case s.FullSync:
		fmt.Fprintf(bw, "# activity log: disabled (al-updates no) and not clean after a crash as Primary: attach marks every block out of sync\n")
	case s.ALExtents == nil:
		fmt.Fprintf(bw, "# activity log: clean\n")
	default:
		fmt.Fprintf(bw, "# activity log: not clean, %d extents to mark out of sync at attach:", len(s.ALExtents))
		for i, e := range s.ALExtents {
			if i%16 == 0 {
				fmt.Fprintf(bw, "\n#  ")
			}
			fmt.Fprintf(bw, " %d", e)
		}
		fmt.Fprintln(bw)
	}
	bm := s.Bitmap
	fmt.Fprintf(bw, "# bm-bytes %d;\n# bits-set %d;\n", (bm.Bits()+7)/8, bm.Count())
	fmt.Fprintf(bw, "bm {\n")
	words := (bm.Bits() + 63) / 64
	var (
		run     uint64
		runWord uint64
		page    []byte
		inLine  int
	)
	flush := func() {
		switch {
		case run == 0:
			return
		case run == 1:
			if inLine == 0 {
				bw.WriteString("   ")
			}
			fmt.Fprintf(bw, " 0x%016X;", runWord)
			if inLine++; inLine == 4 {
				bw.WriteString("\n")
				inLine = 0
			}
		default:
			if inLine > 0 {
				bw.WriteString("\n")
				inLine = 0
			}
			fmt.Fprintf(bw, "   %d times 0x%016X;\n", run, runWord)
		}
		run = 0
	}
	for i := uint64(0); i < words; i++ {
		j := i % (bitmap.PageSize / 8)
		if j == 0 {
			page = bm.AppendPage(page[:0], int(i/(bitmap.PageSize/8)))
		}
		word := binary.LittleEndian.Uint64(page[j*8:])
		if run > 0 && word != runWord {
			flush()
		}
		runWord = word
		run++
	}
	flush()
	if inLine > 0 {
		bw.WriteString("\n")
	}
	fmt.Fprintf(bw, "}\n# bits-set %d;\n", bm.Count())
	return bw.Flush()
}
