package status

import (
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"time"
)

// Resource is one resource's state at one moment, as the daemon sees it.
//
// The state fields hold DRBD 8.4 names (the names /proc/drbd shows); the
// DRBD 9 forms (WriteStatus, WriteJSON) are derived from them with DRBD9Conn.
// Empty state strings print as DRBD's "don't know" names: Role and PeerRole
// as Unknown, Disk and PeerDisk as DUnknown, Conn as StandAlone.
type Resource struct {
	Name       string
	Minor      int    // from the config's device /dev/nbdN or /dev/drbdN (N), else the resource's index
	Configured bool   // false: not up yet → "N: cs:Unconfigured"
	Self, Peer string // node names

	Role, PeerRole string // "Primary", "Secondary", "Unknown"

	// Conn is the DRBD 8.4 connection state name: StandAlone, Disconnecting,
	// Unconnected, Timeout, BrokenPipe, NetworkFailure, ProtocolError,
	// WFConnection, WFReportParams, TearDown, Connected, StartingSyncS,
	// StartingSyncT, WFBitMapS, WFBitMapT, WFSyncUUID, SyncSource,
	// SyncTarget, PausedSyncS, PausedSyncT, VerifyS, VerifyT, Ahead, Behind.
	Conn string

	// Disk and PeerDisk: Diskless, Attaching, Failed, Negotiating,
	// Inconsistent, Outdated, DUnknown, Consistent, UpToDate.
	Disk, PeerDisk string

	Protocol byte // 'A', 'B', 'C'; 0 prints a blank, as DRBD without a net config

	Suspended bool // I/O suspended (flag char 's' vs 'r')

	// Size is the device's size in bytes, as its export shows it (0 when
	// unknown: no disk and no peer).
	Size uint64
	// NodeID and PeerNodeID: twinblock has no node-id keyword (DRBD 9's);
	// a host's id is the place of its `on` section in the resource (0
	// or 1), the same on every node.
	NodeID, PeerNodeID int
	// SuspendedWhy is DRBD 9's reason for Suspended ("quorum": held for
	// want of quorum, on-no-quorum suspend-io); "" prints "yes".
	SuspendedWhy string

	PausedByUser, PausedByPeer, PausedByDependency bool // the u / p / a flag chars

	// Counters, as /proc/drbd wants them but in BYTES (converted to KiB,
	// rounding down, where DRBD shows KiB):
	NetSent, NetRecv, DiskWritten, DiskRead uint64

	ALWrites, BMWrites uint64 // metadata write counts (al:, bm:)

	LocalPending, Pending, Unacked, AppPending, Epochs int64 // lo pe ua ap ep

	// APInFlight: bytes of application writes sent to the peer and not
	// yet acknowledged by it (DRBD 9's ap-in-flight, which it counts in
	// sectors). RSInFlight: bytes of resync requested and not yet
	// arrived (rs-in-flight).
	APInFlight, RSInFlight int64

	WriteOrder byte // 'f' flush, 'd' drain, 'n' none, 'b' barrier; 0 prints 'f'

	OutOfSync uint64 // bytes

	Sync *SyncProgress // non-nil in SyncSource/SyncTarget/PausedSync*/Verify*

	NBDClients int // open NBD sessions (DRBD 9 status shows "open:yes")

	Address, PeerAddress string // "host:port" of this node and of the peer

	// SplitBrain: the last connection attempt found split brain that no
	// policy resolved ("Split-Brain detected but unresolved, dropping
	// connection!"); the node stays StandAlone until the administrator
	// resolves it. Cleared by the next handshake that completes.
	SplitBrain bool
	// SplitBrainRule is the drbd_uuid_compare rule that found it (41, 90 or 100).
	SplitBrainRule int

	// KernelDevice is the kernel NBD device of the host's device line
	// ("" none); KernelAttached: the export is attached to it now;
	// KernelError: why the last attach failed ("" none).
	KernelDevice   string
	KernelAttached bool
	KernelError    string

	// Quorum is the resource's quorum group as this node sees it (options
	// { quorum majority; }); nil without quorum.
	Quorum *QuorumStatus
}

// QuorumStatus is a quorum resource's view of its group.
type QuorumStatus struct {
	Have     bool   // this node is in a majority of the group now
	Epoch    uint64 // the group's epoch (raised by each promotion)
	Primary  string // the node the group names Primary ("" none)
	Leader   string // the group's raft leader ("" unknown)
	Outdated bool   // the group holds this node Outdated
}

// SyncProgress is resync or verify progress (filled by the resync code).
type SyncProgress struct {
	Total, Left uint64 // bytes

	Verify bool // "verified:" instead of "sync'ed:"

	// Elapsed is the time since the start, excluding paused time (for the
	// average speed).
	Elapsed time.Duration

	// RecentBytes and RecentWindow are the rate over the last sync mark
	// window (DRBD: a mark about 18 s old): bytes done in the window and its
	// length. They give the current speed and the finish estimate.
	RecentBytes  uint64
	RecentWindow time.Duration

	// Stalled is set when that mark is older than 180 s.
	Stalled bool

	// WantKiBps is c_sync_rate, the controller's target; 0 omits "want:".
	WantKiBps uint64
}

// DRBD state names used by the formatters.
const (
	connStandAlone = "StandAlone"
	connConnected  = "Connected"
	roleUnknown    = "Unknown"
	diskUnknown    = "DUnknown"
	diskDiskless   = "Diskless"
)

// role returns r, or Unknown when r is empty.
func role(r string) string { return orDefault(r, roleUnknown) }

// disk returns d, or DUnknown when d is empty.
func disk(d string) string { return orDefault(d, diskUnknown) }

// conn84 returns the DRBD 8.4 connection state, StandAlone when empty.
func conn84(c string) string { return orDefault(c, connStandAlone) }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// kib converts a byte count to KiB, rounding down, as DRBD's sectors/2.
func kib(b uint64) uint64 { return b >> 10 }

// isSyncing reports whether an 8.4 state is one in which /proc/drbd prints
// the progress lines: SyncSource, SyncTarget, VerifyS, VerifyT (drbd_seq_show;
// not PausedSync*, which DRBD leaves without progress lines).
func isSyncing(c string) bool {
	switch c {
	case "SyncSource", "SyncTarget", "VerifyS", "VerifyT":
		return true
	}
	return false
}

// isVerify reports whether the progress is an online verify.
func isVerify(r Resource) bool {
	return r.Conn == "VerifyS" || r.Conn == "VerifyT" || (r.Sync != nil && r.Sync.Verify)
}

// byMinor returns a copy of rs sorted by minor (ties by name), the order of
// /proc/drbd.
func byMinor(rs []Resource) []Resource {
	out := slices.Clone(rs)
	slices.SortStableFunc(out, func(a, b Resource) int {
		if a.Minor != b.Minor {
			return a.Minor - b.Minor
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// byName returns a copy of rs sorted by name, the order of drbdsetup status
// (sort_resources in drbd-utils).
func byName(rs []Resource) []Resource {
	out := slices.Clone(rs)
	slices.SortStableFunc(out, func(a, b Resource) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// thousands formats v with a comma every three digits: 524288 → "524,288".
// DRBD's seq_printf_with_thousands_grouping gives the same result for every
// value below 10⁹ KiB/s; above that DRBD stops grouping, we do not.
func thousands(v uint64) string {
	s := fmt.Sprint(v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// mulDiv returns a·b/c rounded down, or rounded up when up is set, without
// overflow (a·b may exceed 64 bits: a petabyte times a window in
// nanoseconds). c must not be 0. A result above 64 bits saturates.
func mulDiv(a, b, c uint64, up bool) uint64 {
	x := new(big.Int).Mul(new(big.Int).SetUint64(a), new(big.Int).SetUint64(b))
	d := new(big.Int).SetUint64(c)
	q, m := new(big.Int).QuoRem(x, d, new(big.Int))
	if up && m.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsUint64() {
		return ^uint64(0)
	}
	return q.Uint64()
}

// nanos returns d in nanoseconds, at least one second when d is not
// positive (DRBD's "if (!dt) dt++" guard against dividing by zero).
func nanos(d time.Duration) uint64 {
	if d <= 0 {
		return uint64(time.Second)
	}
	return uint64(d)
}

// flush writes the finished text in one Write, so a reader of a pipe or a
// partial consumer never sees half a resource, and wraps the error.
func flush(w io.Writer, what string, s string) error {
	if _, err := io.WriteString(w, s); err != nil {
		return fmt.Errorf("status: writing %s: %w", what, err)
	}
	return nil
}
