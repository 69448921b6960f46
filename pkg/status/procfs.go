package status

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteProcDRBD writes rs in DRBD 8.4's /proc/drbd format (drbd_seq_show):
//
//	version: twinblock <version> (api:1/proto:1)
//	 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
//	    ns:1048576 nr:0 dw:0 dr:1049600 al:0 bm:0 lo:0 pe:2 ua:0 ap:0 ep:1 wo:f oos:2048
//		[===================>] sync'ed: 99.9% (2/1048576)K
//		finish: 0:00:01 speed: 524,288 (524,288) want: 102,400 K/sec
//
// Resources appear in minor order. As DRBD does, an empty line separates two
// resources whose minors are not consecutive (and precedes the first one when
// its minor is not 0). The two progress lines (tab-indented, as DRBD's)
// follow the counter line in SyncSource, SyncTarget, VerifyS and VerifyT when
// r.Sync is set. A resource with r.SplitBrain set ends with one more line,
// twinblock's own, a tab and then:
//
//	split-brain: unresolved (uuid_compare rule 90); see: twinblock explain r0
//
// See doc.go for every difference from DRBD's text.
//
// The whole text goes to w in one Write.
func WriteProcDRBD(w io.Writer, version string, rs []Resource) error {
	var b strings.Builder
	fmt.Fprintf(&b, "version: twinblock %s (api:1/proto:1)\n", version)
	prev := -1
	for _, r := range byMinor(rs) {
		if r.Minor != prev+1 {
			b.WriteByte('\n')
		}
		prev = r.Minor
		writeProcResource(&b, r)
	}
	return flush(w, "/proc/drbd status", b.String())
}

// unconfigured reports whether /proc/drbd shows r as "cs:Unconfigured": not
// up, or (DRBD 8.4's own rule) StandAlone, Diskless and Secondary at once,
// which is how DRBD shows a minor that exists but has neither disk nor net.
func unconfigured(r Resource) bool {
	if !r.Configured {
		return true
	}
	return conn84(r.Conn) == connStandAlone && r.Disk == diskDiskless && r.Role == "Secondary"
}

func writeProcResource(b *strings.Builder, r Resource) {
	if unconfigured(r) {
		fmt.Fprintf(b, "%2d: cs:Unconfigured\n", r.Minor)
		return
	}
	proto := r.Protocol
	if proto == 0 {
		proto = ' '
	}
	wo := r.WriteOrder
	if wo == 0 {
		wo = 'f'
	}
	fmt.Fprintf(b, "%2d: cs:%s ro:%s/%s ds:%s/%s %c %c%c%c%c%c%c\n",
		r.Minor, conn84(r.Conn), role(r.Role), role(r.PeerRole), disk(r.Disk), disk(r.PeerDisk),
		proto,
		flagChar(r.Suspended, 's', 'r'),
		flagChar(r.PausedByDependency, 'a', '-'),
		flagChar(r.PausedByPeer, 'p', '-'),
		flagChar(r.PausedByUser, 'u', '-'),
		'-', // congestion reason: twinblock reports none
		'-', // activity log suspended: never
	)
	fmt.Fprintf(b, "    ns:%d nr:%d dw:%d dr:%d al:%d bm:%d lo:%d pe:%d ua:%d ap:%d ep:%d wo:%c oos:%d\n",
		kib(r.NetSent), kib(r.NetRecv), kib(r.DiskWritten), kib(r.DiskRead),
		r.ALWrites, r.BMWrites,
		r.LocalPending, r.Pending, r.Unacked, r.AppPending, r.Epochs,
		wo, kib(r.OutOfSync))
	if r.Sync != nil && isSyncing(r.Conn) {
		writeProgress(b, *r.Sync, isVerify(r))
	}
	if r.SplitBrain {
		writeSplitBrain(b, r)
	}
	if r.Quorum != nil {
		writeQuorum(b, *r.Quorum)
	}
}

// writeQuorum writes twinblock's quorum line, for quorum resources only
// (DRBD 8.4 has no quorum). Like the split-brain line it is
// tab-indented and has a blank after every colon, so the scrapers of
// the other lines read nothing new from it:
//
//	\tquorum: yes, epoch 2, Primary beta, leader gamma
//
// with "no" when this node is out of its group's majority, "none" for a
// group without a Primary, "unknown" for a leader not known, and
// ", this node Outdated" when the group holds it Outdated.
func writeQuorum(b *strings.Builder, q QuorumStatus) {
	primary, leader := q.Primary, q.Leader
	if primary == "" {
		primary = "none"
	}
	if leader == "" {
		leader = "unknown"
	}
	fmt.Fprintf(b, "\tquorum: %s, epoch %d, Primary %s, leader %s", yesNo(q.Have), q.Epoch, primary, leader)
	if q.Outdated {
		b.WriteString(", this node Outdated")
	}
	b.WriteByte('\n')
}

// writeSplitBrain writes twinblock's split-brain line, which DRBD does not
// have (DRBD 8.4 shows an unresolved split brain only as cs:StandAlone and
// in the kernel log). It is tab-indented like the progress lines and has no
// "key:value" pair without a blank after the colon, so the regex scrapers of
// cs:, ro:, ds: and the counters and node_exporter's word scanner read
// nothing new from it (monitor_test.go). Parsers that reject unknown lines
// do not: collectd's drbd plugin warns about it, a strict grammar fails.
// A rule of 0 (not known) leaves out the parenthesis.
func writeSplitBrain(b *strings.Builder, r Resource) {
	b.WriteString("\tsplit-brain: unresolved")
	if r.SplitBrainRule != 0 {
		fmt.Fprintf(b, " (uuid_compare rule %d)", r.SplitBrainRule)
	}
	fmt.Fprintf(b, "; see: twinblock explain %s\n", r.Name)
}

func flagChar(on bool, yes, no byte) byte {
	if on {
		return yes
	}
	return no
}

// progress is the arithmetic behind the two progress lines.
type progress struct {
	total, left uint64 // bytes; left ≤ total
	perMil      uint64 // done, per mille, DRBD's rounding (used by the bar)
	shown       uint64 // the per mille printed: perMil, but 999 while bytes are left
	finish      uint64 // seconds
	speed, avg  uint64 // KiB/s: over the recent window, since the start
}

// fourGiB is DRBD's switch from K to M in the progress line: rs_total above
// 4 GiB (drbd_syncer_progress: rs_total > 4UL << (30 - BM_BLOCK_SHIFT)).
const fourGiB = 4 << 30

// computeProgress applies DRBD 8.4's drbd_syncer_progress arithmetic at
// byte and nanosecond precision (DRBD counts 4 KiB bitmap bits and whole
// seconds; see doc.go for the two places where twinblock rounds differently).
func computeProgress(sp SyncProgress) progress {
	p := progress{total: sp.Total, left: sp.Left}
	switch {
	case p.left > p.total:
		// DRBD: "Maybe a logic bug somewhere. More likely just a race."
		p.left = p.total
		p.perMil = 1000
		if p.total != 0 {
			p.perMil = 0
		}
	case p.total == 0:
		p.perMil = 1000
	default:
		p.perMil = 1000 - mulDiv(p.left, 1000, p.total, false)
	}
	p.shown = p.perMil
	if p.left > 0 && p.shown == 1000 {
		p.shown = 999
	}

	p.speed = mulDiv(sp.RecentBytes, uint64(time.Second), nanos(sp.RecentWindow), false) >> 10
	p.avg = mulDiv(p.total-p.left, uint64(time.Second), nanos(sp.Elapsed), false) >> 10
	p.finish = finishSeconds(p.left, sp.RecentBytes, sp.RecentWindow)
	return p
}

// finishSeconds estimates the time to go from the recent rate, rounded up to
// whole seconds, so that it reads 0:00:00 only when nothing is left. With no
// progress in the window it falls back to DRBD's own arithmetic for that case
// (window · left / 100, left counted in 4 KiB bitmap blocks), so the field
// keeps its shape and its magnitude.
func finishSeconds(left, recentBytes uint64, window time.Duration) uint64 {
	if left == 0 {
		return 0
	}
	const sec = uint64(time.Second)
	var rt uint64
	if recentBytes == 0 {
		dt := max(uint64(window)/sec, 1)
		blocks := left/4096 + min(left%4096, 1)
		rt = mulDiv(dt, blocks, 100, false)
	} else {
		ns := mulDiv(left, nanos(window), recentBytes, true)
		rt = ns / sec
		if ns%sec != 0 {
			rt++
		}
	}
	return max(rt, 1)
}

// writeProgress writes DRBD's two tab-indented progress lines.
func writeProgress(b *strings.Builder, sp SyncProgress, verify bool) {
	p := computeProgress(sp)

	x := int(p.perMil / 50)
	b.WriteString("\t[")
	b.WriteString(strings.Repeat("=", max(x-1, 0)))
	b.WriteByte('>')
	b.WriteString(strings.Repeat(".", 20-x))
	b.WriteString("] ")
	if verify {
		b.WriteString("verified:")
	} else {
		b.WriteString("sync'ed:")
	}
	fmt.Fprintf(b, "%3d.%d%% ", p.shown/10, p.shown%10)
	if p.total > fourGiB {
		fmt.Fprintf(b, "(%d/%d)M\n", p.left>>20, p.total>>20)
	} else {
		fmt.Fprintf(b, "(%d/%d)K\n", p.left>>10, p.total>>10)
	}

	fmt.Fprintf(b, "\tfinish: %d:%02d:%02d speed: %s (%s)",
		p.finish/3600, p.finish%3600/60, p.finish%60, thousands(p.speed), thousands(p.avg))
	if sp.WantKiBps > 0 {
		b.WriteString(" want: " + thousands(sp.WantKiBps))
	}
	b.WriteString(" K/sec")
	if sp.Stalled {
		b.WriteString(" (stalled)")
	}
	b.WriteByte('\n')
}
