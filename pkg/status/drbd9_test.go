package status

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDRBD9Conn(t *testing.T) {
	tests := []struct{ in, conn, repl string }{
		{"", "StandAlone", "Off"},
		{"StandAlone", "StandAlone", "Off"},
		{"Disconnecting", "Disconnecting", "Off"},
		{"Unconnected", "Unconnected", "Off"},
		{"Timeout", "Timeout", "Off"},
		{"BrokenPipe", "BrokenPipe", "Off"},
		{"NetworkFailure", "NetworkFailure", "Off"},
		{"ProtocolError", "ProtocolError", "Off"},
		{"WFConnection", "Connecting", "Off"},
		{"WFReportParams", "Connecting", "Off"},
		{"TearDown", "TearDown", "Off"},
		{"Connected", "Connected", "Established"},
		{"StartingSyncS", "Connected", "StartingSyncS"},
		{"StartingSyncT", "Connected", "StartingSyncT"},
		{"WFBitMapS", "Connected", "WFBitMapS"},
		{"WFBitMapT", "Connected", "WFBitMapT"},
		{"WFSyncUUID", "Connected", "WFSyncUUID"},
		{"SyncSource", "Connected", "SyncSource"},
		{"SyncTarget", "Connected", "SyncTarget"},
		{"PausedSyncS", "Connected", "PausedSyncS"},
		{"PausedSyncT", "Connected", "PausedSyncT"},
		{"VerifyS", "Connected", "VerifyS"},
		{"VerifyT", "Connected", "VerifyT"},
		{"Ahead", "Connected", "Ahead"},
		{"Behind", "Connected", "Behind"},
		{"SomethingNew", "SomethingNew", "Off"},
	}
	for _, tt := range tests {
		c, r := DRBD9Conn(tt.in)
		assert.Equal(t, tt.conn, c, tt.in)
		assert.Equal(t, tt.repl, r, tt.in)
	}
}

func statusText(t *testing.T, verbose bool, rs ...Resource) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, WriteStatus(&b, rs, verbose))
	return b.String()
}

// TestStatusLayout pins the non-verbose layouts that users compare with
// DRBD 9's documentation, independently of the golden files.
func TestStatusLayout(t *testing.T) {
	primary, secondary := connectedPair()
	wfc := primary
	wfc.Conn, wfc.PeerRole, wfc.PeerDisk, wfc.NBDClients = "WFConnection", "Unknown", "DUnknown", 0
	diskless := Resource{Name: "r1", Configured: true, Peer: "b", Role: "Secondary",
		Conn: "StandAlone", Disk: "Diskless", PeerDisk: "DUnknown"}
	syncing := designExample()
	syncing.Sync = &SyncProgress{Total: 10000 * kiB, Left: 8766 * kiB}
	paused := syncing
	paused.Conn, paused.PausedByUser, paused.PausedByPeer = "PausedSyncS", true, true
	suspended := secondary
	suspended.Suspended = true
	noQuorum := primary
	noQuorum.Suspended, noQuorum.SuspendedWhy, noQuorum.NBDClients = true, "quorum", 0
	noQuorum.Quorum = &QuorumStatus{Epoch: 3, Primary: "alpha"}
	noPeer := secondary
	noPeer.Peer = ""
	sbNoRule := splitBrained()
	sbNoRule.SplitBrainRule = 0
	sbCleared := splitBrained()
	sbCleared.SplitBrain = false
	sbNoPeer := splitBrained()
	sbNoPeer.Peer = ""

	tests := []struct {
		name string
		rs   []Resource
		want string
	}{
		{"none", nil, "# No currently configured DRBD found.\n"},
		{"not up", []Resource{{Name: "r0"}}, "r0: No such resource\n"},
		{"connected primary, device open", []Resource{primary},
			"r0 role:Primary\n  disk:UpToDate open:yes\n  bravo role:Secondary\n    peer-disk:UpToDate\n\n"},
		{"connected secondary", []Resource{secondary},
			"r0 role:Secondary\n  disk:UpToDate\n  alpha role:Primary\n    peer-disk:UpToDate\n\n"},
		{"waiting for the peer", []Resource{wfc},
			"r0 role:Primary\n  disk:UpToDate\n  bravo connection:Connecting\n\n"},
		{"standalone diskless", []Resource{diskless},
			"r1 role:Secondary\n  disk:Diskless\n  b connection:StandAlone\n\n"},
		{"sync source", []Resource{syncing},
			"r0 role:Primary\n  disk:UpToDate open:yes\n  b role:Secondary\n    replication:SyncSource peer-disk:Inconsistent done:12.34\n\n"},
		{"paused", []Resource{paused},
			"r0 role:Primary\n  disk:UpToDate open:yes\n  b role:Secondary\n" +
				"    replication:PausedSyncS peer-disk:Inconsistent done:12.34\n" +
				"        resync-suspended:user,peer\n\n"}, // past column 80: wrapped as drbdsetup
		{"suspended", []Resource{suspended},
			"r0 role:Secondary suspended:yes\n  disk:UpToDate\n  alpha role:Primary\n    peer-disk:UpToDate\n\n"},
		{"suspended for want of quorum", []Resource{noQuorum},
			"r0 role:Primary suspended:quorum\n  disk:UpToDate quorum:no\n  bravo role:Secondary\n    peer-disk:UpToDate\n\n"},
		{"no peer configured", []Resource{noPeer}, "r0 role:Secondary\n  disk:UpToDate\n\n"},
		{"split brain", []Resource{splitBrained()},
			"r0 role:Primary\n  disk:UpToDate open:yes\n  b connection:StandAlone split-brain:yes\n\n"},
		{"split brain, rule not known", []Resource{sbNoRule},
			"r0 role:Primary\n  disk:UpToDate open:yes\n  b connection:StandAlone split-brain:yes\n\n"},
		{"a rule without SplitBrain prints nothing", []Resource{sbCleared},
			"r0 role:Primary\n  disk:UpToDate open:yes\n  b connection:StandAlone\n\n"},
		{"split brain, no peer configured: no peer line", []Resource{sbNoPeer},
			"r0 role:Primary\n  disk:UpToDate open:yes\n\n"},
		{"name order, not up in place", []Resource{secondary, {Name: "a"}, diskless},
			"a: No such resource\n" +
				"r0 role:Secondary\n  disk:UpToDate\n  alpha role:Primary\n    peer-disk:UpToDate\n\n" +
				"r1 role:Secondary\n  disk:Diskless\n  b connection:StandAlone\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, statusText(t, false, tt.rs...))
		})
	}
}

func TestStatusVerbose(t *testing.T) {
	r := designExample()
	r.Name, r.Peer = "web", "node-b"
	want := "" +
		"web role:Primary suspended:no force-io-failures:no\n" +
		"    write-ordering:flush\n" +
		"  volume:0 minor:0 disk:UpToDate quorum:yes open:yes\n" +
		// wrap_printf counts from −1 after the indentation: this line is 84
		// characters long, as drbdsetup's.
		"      read:1049600 written:0 al-writes:0 bm-writes:0 upper-pending:0 lower-pending:0\n" +
		"      al-suspended:no blocked:no\n" +
		"  node-b connection:Connected role:Secondary tls:no congested:no\n" +
		"    volume:0 replication:SyncSource peer-disk:Inconsistent done:100.00\n" +
		"        resync-suspended:no\n" +
		"        received:0 sent:1048576 out-of-sync:2048 pending:2 unacked:0 dbdt1:512.00 eta:0\n" +
		"\n"
	assert.Equal(t, want, statusText(t, true, r))

	r.Conn, r.Sync, r.PeerDisk, r.Disk = "NetworkFailure", nil, "DUnknown", "Diskless"
	want = "" +
		"web role:Primary suspended:no force-io-failures:no\n" +
		"    write-ordering:flush\n" +
		"  volume:0 minor:0 disk:Diskless client:no quorum:yes open:yes\n" +
		"      read:1049600 written:0 al-writes:0 bm-writes:0 upper-pending:0 lower-pending:0\n" +
		"      al-suspended:no blocked:no\n" +
		"  node-b connection:NetworkFailure role:Secondary tls:no congested:no\n" +
		"    volume:0 replication:Off peer-disk:DUnknown resync-suspended:no\n" +
		"        received:0 sent:1048576 out-of-sync:2048 pending:2 unacked:0\n" +
		"\n"
	assert.Equal(t, want, statusText(t, true, r))
}

// TestStatusSplitBrainVerbose: with verbose, split-brain:yes still follows
// the connection state, before the verbose-only fields.
func TestStatusSplitBrainVerbose(t *testing.T) {
	tests := []struct {
		name string
		r    func() Resource
		want string // the peer line
	}{
		{"standalone", splitBrained,
			"  b connection:StandAlone split-brain:yes role:Unknown tls:no congested:no\n"},
		{"reconnecting, not resolved yet", func() Resource {
			r := splitBrained()
			r.Conn = "WFConnection"
			return r
		}, "  b connection:Connecting split-brain:yes role:Unknown tls:no congested:no\n"},
		{"cleared", func() Resource {
			r := splitBrained()
			r.SplitBrain = false
			return r
		}, "  b connection:StandAlone role:Unknown tls:no congested:no\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := statusText(t, true, tt.r())
			assert.Contains(t, got, "\n"+tt.want)
			assert.Equal(t, strings.Contains(tt.want, "split-brain"), strings.Contains(got, "split-brain"))
		})
	}
}

func TestStatusEtaWithoutProgress(t *testing.T) {
	r := designExample()
	r.Sync.RecentBytes = 0
	assert.Contains(t, statusText(t, true, r), " dbdt1:0.00 eta:nan\n")
}

// TestWrapPrinter checks drbd-utils' wrap_printf rules: indentation only at
// the start of a line, leading blanks dropped there, a field that passes
// the last column (counted from −1 after the indentation) moves to a new
// line, trailing newline resets the column.
func TestWrapPrinter(t *testing.T) {
	var b strings.Builder
	p := &wrapPrinter{b: &b, columns: 20}
	p.printf(2, " aaaaaaaaaa") // col 9 (from −1)
	p.printf(6, " bbbbbbbbbb") // 9 + 11 = 20: fits
	p.printf(6, " c")          // 20 + 2 > 20: wraps
	p.printf(0, "\n")
	p.printf(4, "\n") // an empty line
	p.printf(3, " d\n")
	p.printf(3, "e")
	assert.Equal(t, "  aaaaaaaaaa bbbbbbbbbb\n      c\n\n   d\n   e", b.String())
}

func TestStatusDoneRounding(t *testing.T) {
	r := designExample()
	r.Sync = &SyncProgress{Total: 3, Left: 1, RecentWindow: time.Second}
	assert.Contains(t, statusText(t, false, r), " done:66.67\n")
	r.Sync = &SyncProgress{Total: 1 * giB, Left: 1 * giB}
	assert.Contains(t, statusText(t, false, r), " done:0.00\n")
	r.Sync = &SyncProgress{} // no total: no done:
	assert.NotContains(t, statusText(t, false, r), "done:")
}
