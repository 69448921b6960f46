package genid

import (
	"fmt"
	"io"
	"strings"

	"github.com/twinblock/twinblock/internal/flagset"
)

const (
	Current = iota
	Bitmap
	HistoryStart
	HistoryEnd
)

const (
	// UUIDJustCreated is the current UUID of fresh metadata.
	UUIDJustCreated uint64 = 4
	// UUIDPrimaryBit is bit 0 of a UUID: set while its node was Primary
	// in that generation; masked off when UUIDs are compared.
	UUIDPrimaryBit uint64 = 1
	// UUIDNewBMOffset is what the resync source adds to its bitmap UUID
	// to make the sync UUID (protocol ≥ 96).
	UUIDNewBMOffset uint64 = 1 << 48
)

type GI [4]uint64

func (g GI) String() string {
	return fmt.Sprintf("%016X:%016X:%016X:%016X", g[Current], g[Bitmap], g[HistoryStart], g[HistoryEnd])
}

func Equal(a, b uint64) bool { return a&^UUIDPrimaryBit == b&^UUIDPrimaryBit }

func (g *GI) setCurrent(val uint64, primary bool) {
	val &^= UUIDPrimaryBit
	if primary {
		val |= UUIDPrimaryBit
	}
	g[Current] = val
}

func (g *GI) SetPrimary(primary bool) {
	if g[Current] == 0 || g[Current] == UUIDJustCreated {
		return
	}
	g.setCurrent(g[Current], primary)
}

func (g *GI) SetBitmap(val uint64) {
	if g[Bitmap] != 0 {
		g[HistoryEnd] = g[HistoryStart]
		g[HistoryStart] = g[Bitmap]
	}
	g[Bitmap] = val
}

func (g *GI) NewCurrent(val uint64, primary bool) {
	g[Bitmap] = g[Current] // with its bit 0: Primary when it began
	g.setCurrent(val, primary)
}

func (g *GI) StartResyncSource(random uint64) uint64 {
	u := g[Bitmap]
	if u != 0 && u != UUIDJustCreated {
		u += UUIDNewBMOffset
	} else {
		u = random
	}
	u &^= UUIDPrimaryBit
	g.SetBitmap(u)
	return u
}

func (g *GI) StartResyncTarget(sync uint64) {
	g.setCurrent(sync, false)
	g[Bitmap] = 0
}

func (g *GI) FinishResyncSource() {
	if g[Bitmap] == 0 {
		return
	}
	g[HistoryEnd] = g[HistoryStart]
	g[HistoryStart] = g[Bitmap]
	g[Bitmap] = 0
}

func (g *GI) FinishResyncTarget(source GI, primary bool) {
	*g = source
	g.setCurrent(source[Current], primary)
}

type Flags uint32

const (
	// FlagConsistent: the data is consistent (not in the middle of a
	// resync as target).
	FlagConsistent Flags = 1 << 0
	// FlagPrimaryInd: the node is Primary (set on promotion, cleared on
	// demotion; still set at attach means it crashed as Primary).
	FlagPrimaryInd Flags = 1 << 1
	// FlagConnectedInd: the node is connected to its peer.
	FlagConnectedInd Flags = 1 << 2
	// FlagFullSync: a full sync was decided; the bitmap is being set
	// entirely (if set at attach, set it again).
	FlagFullSync Flags = 1 << 3
	// FlagWasUpToDate: the data was UpToDate (with FlagConsistent:
	// UpToDate; without it: Outdated).
	FlagWasUpToDate Flags = 1 << 4
	// FlagPeerOutdated: the peer's disk is known Outdated or Inconsistent.
	FlagPeerOutdated Flags = 1 << 5
	// FlagCrashedPrimary: the node crashed while Primary and has not
	// seen its peer since (it will be resync source for the activity
	// log's extents).
	FlagCrashedPrimary Flags = 1 << 6
	// FlagALClean: the activity log holds nothing to replay (set on a
	// clean detach; clear while attached).
	FlagALClean Flags = 1 << 7
	// FlagALDisabled: al-updates no: the activity log is not written
	// (set at attach from the configuration); with FlagPrimaryInd and
	// without FlagALClean at attach, the whole disk is out of sync.
	FlagALDisabled Flags = 1 << 8
)

var flagNames = []flagset.Name[Flags]{
	{Flag: FlagConsistent, Name: "consistent"}, {Flag: FlagPrimaryInd, Name: "primary-ind"}, {Flag: FlagConnectedInd, Name: "connected-ind"},
	{Flag: FlagFullSync, Name: "full-sync"}, {Flag: FlagWasUpToDate, Name: "was-up-to-date"}, {Flag: FlagPeerOutdated, Name: "peer-outdated"},
	{Flag: FlagCrashedPrimary, Name: "crashed-primary"}, {Flag: FlagALClean, Name: "al-clean"}, {Flag: FlagALDisabled, Name: "al-disabled"},
}

func (f Flags) String() string { return flagset.String(f, flagNames, ",") }

func bit(f, b Flags) int {
	if f&b != 0 {
		return 1
	}
	return 0
}

func WriteShowGI(w io.Writer, g GI, f Flags) error {
	var b strings.Builder
	b.WriteString("\n" +
		"       +--<  Current data generation UUID  >-\n" +
		"       |               +--<  Bitmap's base data generation UUID  >-\n" +
		"       |               |                 +--<  younger history UUID  >-\n" +
		"       |               |                 |         +-<  older history  >-\n" +
		"       V               V                 V         V\n")
	b.WriteString(GetGI(g, f))
	b.WriteString("" +
		"                                                                    ^ ^ ^ ^ ^ ^ ^\n" +
		"                                      -<  Data consistency flag  >--+ | | | | | |\n" +
		"                             -<  Data was/is currently up-to-date  >--+ | | | | |\n" +
		"                                  -<  Node was/is currently primary  >--+ | | | |\n" +
		"                                  -<  Node was/is currently connected  >--+ | | |\n" +
		"         -<  Node was in the progress of setting all bits in the bitmap  >--+ | |\n" +
		"                        -<  The peer's disk was out-dated or inconsistent  >--+ |\n" +
		"      -<  This node was a crashed primary, and has not seen its peer since   >--+\n" +
		"\n")
	crashed, role, conn, disk, full, peer := "", "Secondary", "StandAlone", "Inconsistent", "", ""
	if f&FlagCrashedPrimary != 0 {
		crashed = " crashed"
	}
	if f&FlagPrimaryInd != 0 {
		role = "Primary"
	}
	if f&FlagConnectedInd != 0 {
		conn = "Connected"
	}
	if f&FlagConsistent != 0 {
		disk = "Outdated"
		if f&FlagWasUpToDate != 0 {
			disk = "UpToDate"
		}
	}
	if f&FlagFullSync != 0 {
		full = ", need full sync"
	}
	if f&FlagPeerOutdated != 0 {
		peer = ", peer Outdated"
	}
	fmt.Fprintf(&b, "flags:%s %s, %s, %s%s%s\n", crashed, role, conn, disk, full, peer)
	if f&FlagALClean != 0 {
		b.WriteString("meta-data: clean\n")
	} else {
		b.WriteString("meta-data: need apply-al\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func GetGI(g GI, f Flags) string {
	return fmt.Sprintf("%s:%d:%d:%d:%d:%d:%d:%d\n", g, bit(f, FlagConsistent), bit(f, FlagWasUpToDate),
		bit(f, FlagPrimaryInd), bit(f, FlagConnectedInd), bit(f, FlagFullSync), bit(f, FlagPeerOutdated),
		bit(f, FlagCrashedPrimary))
}
