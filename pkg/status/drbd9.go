package status

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// DRBD 9 replication states that are not sync states.
const (
	replOff         = "Off"
	replEstablished = "Established"
)

// DRBD9Conn splits a DRBD 8.4 connection state into DRBD 9's two fields: the
// connection state of the peer link and the replication state of the peer
// device (drbd-headers drbd_strings.c).
//
//	8.4                                      connection      replication
//	StandAlone, Disconnecting, Unconnected,  (same name)     Off
//	Timeout, BrokenPipe, NetworkFailure,
//	ProtocolError, TearDown
//	WFConnection, WFReportParams             Connecting      Off
//	Connected                                Connected       Established
//	StartingSyncS/T, WFBitMapS/T,            Connected       (same name)
//	WFSyncUUID, SyncSource/Target,
//	PausedSyncS/T, VerifyS/T, Ahead, Behind
//
// DRBD 9 still has an Unconnected state (briefly, before Connecting), so
// Unconnected keeps its name. WFReportParams (TCP up, handshake not done)
// is part of Connecting in DRBD 9. An empty state is StandAlone; a name
// this table does not know is returned unchanged as the connection state
// with replication Off.
func DRBD9Conn(conn84 string) (connection, replication string) {
	switch conn84 {
	case "", connStandAlone:
		return connStandAlone, replOff
	case "Disconnecting", "Unconnected", "Timeout", "BrokenPipe", "NetworkFailure",
		"ProtocolError", "TearDown":
		return conn84, replOff
	case "WFConnection", "WFReportParams":
		return "Connecting", replOff
	case connConnected:
		return connConnected, replEstablished
	case "StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID",
		"SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT",
		"VerifyS", "VerifyT", "Ahead", "Behind":
		return connConnected, conn84
	}
	return conn84, replOff
}

// statusColumns is the width drbdsetup wraps at when stdout is not a
// terminal (wrap_printf: TIOCGWINSZ fails, 80 columns).
const statusColumns = 80

// WriteStatus writes rs in the layout of DRBD 9's `drbdadm status`
// (drbdsetup status), resources in name order, each followed by an empty
// line as drbdsetup prints them:
//
//	r0 role:Primary
//	  disk:UpToDate
//	  b role:Secondary
//	    peer-disk:UpToDate
//
// With verbose it prints what `drbdsetup status --verbose --statistics`
// prints. A resource that is not up prints "r0: No such resource" (DRBD
// prints that to stderr and exits 10; the CLI decides about the exit code),
// and an empty rs prints "# No currently configured DRBD found.". doc.go
// lists which fields appear when. The whole text goes to w in one Write.
func WriteStatus(w io.Writer, rs []Resource, verbose bool) error {
	var b strings.Builder
	if len(rs) == 0 {
		b.WriteString("# No currently configured DRBD found.\n")
	}
	for _, r := range byName(rs) {
		if !r.Configured {
			fmt.Fprintf(&b, "%s: No such resource\n", r.Name)
			continue
		}
		p := &wrapPrinter{b: &b, columns: statusColumns}
		writeStatusResource(p, r, verbose)
	}
	return flush(w, "status", b.String())
}

func writeStatusResource(p *wrapPrinter, r Resource, verbose bool) {
	connection, replication := DRBD9Conn(r.Conn)

	// Resource line (resource_status).
	p.printf(0, "%s", r.Name)
	p.printf(4, " role:%s", role(r.Role))
	if verbose || r.Suspended {
		susp := yesNo(r.Suspended)
		if r.Suspended && r.SuspendedWhy != "" {
			susp = r.SuspendedWhy
		}
		p.printf(4, " suspended:%s", susp)
	}
	if verbose {
		p.printf(4, " force-io-failures:no")
		p.printf(4, "\n")
		p.printf(4, " write-ordering:%s", writeOrdering(r.WriteOrder))
	}
	p.printf(0, "\n")

	// Device line (device_status), volume 0 of a one-volume resource.
	indent := 2
	if verbose {
		p.printf(indent, "volume:0")
		indent = 6
		p.printf(indent, " minor:%d", r.Minor)
	}
	p.printf(indent, " disk:%s", disk(r.Disk))
	if verbose && r.Disk == diskDiskless {
		p.printf(indent, " client:no")
	}
	if have := r.Quorum == nil || r.Quorum.Have; verbose || !have {
		p.printf(indent, " quorum:%s", yesNo(have))
	}
	if verbose || r.NBDClients > 0 {
		p.printf(indent, " open:%s", yesNo(r.NBDClients > 0))
	}
	if verbose {
		p.printf(6, "\n")
		p.printf(6, " read:%d", kib(r.DiskRead))
		p.printf(6, " written:%d", kib(r.DiskWritten))
		p.printf(6, " al-writes:%d", r.ALWrites)
		p.printf(6, " bm-writes:%d", r.BMWrites)
		p.printf(6, " upper-pending:%d", r.AppPending)
		p.printf(6, " lower-pending:%d", r.LocalPending)
		p.printf(6, " al-suspended:no")
		p.printf(6, " blocked:no")
	}
	p.printf(6, "\n")

	// Connection line (connection_status). Without a peer there is no
	// connection object to show, as in DRBD before "connect".
	if r.Peer != "" {
		p.printf(2, "%s", r.Peer)
		if verbose || connection != connConnected {
			p.printf(6, " connection:%s", connection)
		}
		if r.SplitBrain {
			p.printf(6, " split-brain:yes") // twinblock's own field
		}
		if verbose || connection == connConnected {
			p.printf(6, " role:%s", role(r.PeerRole))
		}
		if verbose {
			p.printf(6, " tls:no")
			p.printf(6, " congested:no")
		}
		p.printf(0, "\n")
		if verbose || connection == connConnected {
			writeStatusPeerDevice(p, r, replication, verbose)
		}
	}
	p.printf(0, "\n")
}

// writeStatusPeerDevice writes the peer device line (peer_device_status)
// and, with verbose, its statistics (print_peer_device_statistics).
func writeStatusPeerDevice(p *wrapPrinter, r Resource, replication string, verbose bool) {
	indent := 4
	if verbose {
		p.printf(indent, "volume:0")
		indent = 8
	}
	if verbose || (replication != replOff && replication != replEstablished) {
		p.printf(indent, " replication:%s", replication)
		indent = 8
	}
	p.printf(indent, " peer-disk:%s", disk(r.PeerDisk))
	if verbose && r.PeerDisk == diskDiskless {
		p.printf(indent, " peer-client:no")
	}
	indent = 8
	sync := r.Sync != nil && r.Sync.Total > 0
	if sync {
		p.printf(indent, " done:%.2f", percentDone(*r.Sync))
	}
	if susp := resyncSuspended(r); verbose || susp != "no" {
		p.printf(indent, " resync-suspended:%s", susp)
	}
	if verbose {
		p.printf(indent, "\n")
		p.printf(indent, " received:%d", kib(r.NetRecv))
		p.printf(indent, " sent:%d", kib(r.NetSent))
		p.printf(indent, " out-of-sync:%d", kib(r.OutOfSync))
		p.printf(indent, " pending:%d", r.Pending)
		p.printf(indent, " unacked:%d", r.Unacked)
		if sync {
			p.printf(indent, " dbdt1:%.2f", recentMiBps(*r.Sync))
			if eta, ok := etaSeconds(*r.Sync); ok {
				p.printf(indent, " eta:%.0f", eta)
			} else {
				p.printf(indent, " eta:nan") // glibc's %.0f of NAN
			}
		}
	}
	p.printf(0, "\n")
}

// percentDone is drbdsetup's "done:": 100·(total − left)/total.
func percentDone(sp SyncProgress) float64 {
	left := min(sp.Left, sp.Total)
	return 100 * float64(sp.Total-left) / float64(sp.Total)
}

// recentMiBps is drbdsetup's db1/dt1 in MiB/s: the rate over the recent
// window (drbdsetup guards a zero window with 1 ms).
func recentMiBps(sp SyncProgress) float64 {
	dt := sp.RecentWindow.Seconds()
	if sp.RecentWindow <= 0 {
		dt = float64(time.Millisecond) / float64(time.Second)
	}
	return float64(sp.RecentBytes) / dt / (1 << 20)
}

// etaSeconds is drbdsetup's estimate, dt1·left/db1; not ok without progress
// in the window.
func etaSeconds(sp SyncProgress) (float64, bool) {
	if sp.RecentBytes == 0 {
		return math.NaN(), false
	}
	dt := sp.RecentWindow.Seconds()
	if sp.RecentWindow <= 0 {
		dt = float64(time.Millisecond) / float64(time.Second)
	}
	return dt * float64(sp.Left) / float64(sp.RecentBytes), true
}

// resyncSuspended is DRBD 9's resync-suspended value: "no", or the reasons
// joined by commas in drbdsetup's order (user, peer, dependency).
func resyncSuspended(r Resource) string {
	var why []string
	if r.PausedByUser {
		why = append(why, "user")
	}
	if r.PausedByPeer {
		why = append(why, "peer")
	}
	if r.PausedByDependency {
		why = append(why, "dependency")
	}
	if len(why) == 0 {
		return "no"
	}
	return strings.Join(why, ",")
}

// writeOrdering names a wo: character as DRBD 9 does (write_ordering_str).
func writeOrdering(c byte) string {
	switch c {
	case 'n':
		return "none"
	case 'd':
		return "drain"
	case 'b':
		return "barrier"
	}
	return "flush"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// wrapPrinter reproduces drbd-utils' wrap_printf, which lays out drbdsetup
// status: each call prints one field; leading newlines end the line; at
// the start of a line the field's leading blanks give way to indent
// spaces; a field that would pass the last column starts a new line.
// Like wrap_printf it counts the column from -1 after the indentation
// (the indentation itself is not counted), so lines break where
// drbdsetup's break, not at exactly 80 characters. One deliberate
// difference: wrap_printf takes "column 0" for "start of line", so after a
// one-character name (column -1 + 1) it indents the next field again
// ("  b      role:Secondary"); we track the start of a line apart from the
// column and print "  b role:Secondary".
type wrapPrinter struct {
	b       *strings.Builder
	columns int
	col     int
	midLine bool // something has been printed on the current line
}

func (p *wrapPrinter) printf(indent int, format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	for strings.HasPrefix(s, "\n") {
		p.newline()
		s = s[1:]
	}
	if s == "" {
		return
	}
	if p.midLine && p.col > 0 && p.col+len(s) > p.columns {
		p.newline()
	}
	if !p.midLine {
		s = strings.TrimLeft(s, " ")
		p.b.WriteString(strings.Repeat(" ", indent))
		p.col = -1
		p.midLine = true
	}
	p.b.WriteString(s)
	p.col += len(s)
	if strings.HasSuffix(s, "\n") {
		p.col, p.midLine = 0, false
	}
}

func (p *wrapPrinter) newline() {
	p.b.WriteByte('\n')
	p.col, p.midLine = 0, false
}
