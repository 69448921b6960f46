package status

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites the file with -update.
func golden(t *testing.T, name string, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file; run go test ./pkg/status -update")
	assert.Equal(t, string(want), got, "%s differs; if the change is intended, run go test ./pkg/status -update", path)
}

const (
	kiB = 1 << 10
	miB = 1 << 20
	giB = 1 << 30
)

// designExample is the resource behind DESIGN.md's /proc/drbd example. The
// example was written by hand with round numbers, so the timing inputs are
// the ones that give exactly its text: 1 GiB − 2 KiB done at 512 MiB/s takes
// a hair under 2 s (Elapsed), the last mark saw 512 MiB in 1 s, and the
// 2 KiB left take a few microseconds, which the finish time rounds up to
// 0:00:01.
func designExample() Resource {
	return Resource{
		Name: "r0", Minor: 0, Configured: true,
		Self: "a", Peer: "b",
		Role: "Primary", PeerRole: "Secondary",
		Conn: "SyncSource", Disk: "UpToDate", PeerDisk: "Inconsistent",
		Protocol: 'C',
		NetSent:  1048576 * kiB, DiskRead: 1049600 * kiB,
		Pending: 2, Epochs: 1, WriteOrder: 'f',
		OutOfSync: 2048 * kiB,
		Sync: &SyncProgress{
			Total:        1048576 * kiB,
			Left:         2 * kiB,
			Elapsed:      1999995 * time.Microsecond,
			RecentBytes:  512 * miB,
			RecentWindow: time.Second,
			WantKiBps:    102400,
		},
		NBDClients:  1,
		Address:     "10.0.0.1:7789",
		PeerAddress: "10.0.0.2:7789",
	}
}

// designProcDRBD is DESIGN.md's "Status file" example, byte for byte.
const designProcDRBD = "version: twinblock 0.1.0 (api:1/proto:1)\n" +
	" 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----\n" +
	"    ns:1048576 nr:0 dw:0 dr:1049600 al:0 bm:0 lo:0 pe:2 ua:0 ap:0 ep:1 wo:f oos:2048\n" +
	"\t[===================>] sync'ed: 99.9% (2/1048576)K\n" +
	"\tfinish: 0:00:01 speed: 524,288 (524,288) want: 102,400 K/sec\n"

// splitBrained is a Primary left StandAlone by a split brain that no policy
// resolved: drbd_uuid_compare rule 90 (both bitmap UUIDs equal), after-sb
// policies "disconnect". It wrote 64 MiB alone since the split.
func splitBrained() Resource {
	return Resource{
		Name: "r0", Minor: 0, Configured: true,
		Self: "a", Peer: "b",
		Role: "Primary", PeerRole: "Unknown",
		Conn: "StandAlone", Disk: "UpToDate", PeerDisk: "DUnknown",
		Protocol: 'C', WriteOrder: 'f',
		DiskWritten: 64 * miB, ALWrites: 12, BMWrites: 3, Epochs: 1,
		OutOfSync:  64 * miB,
		NBDClients: 1,
		Address:    "10.0.0.1:7789", PeerAddress: "10.0.0.2:7789",
		SplitBrain: true, SplitBrainRule: 90,
	}
}

// scenario is one snapshot rendered into every golden form.
type scenario struct {
	name string
	rs   []Resource
}

func connectedPair() (primary, secondary Resource) {
	primary = Resource{
		Name: "r0", Minor: 0, Configured: true,
		Self: "alpha", Peer: "bravo",
		Role: "Primary", PeerRole: "Secondary",
		Conn: "Connected", Disk: "UpToDate", PeerDisk: "UpToDate",
		Protocol: 'C',
		NetSent:  8 * giB, DiskWritten: 8 * giB, DiskRead: 3*giB + 1023,
		ALWrites: 117, BMWrites: 4,
		LocalPending: 1, Pending: 3, AppPending: 2, Epochs: 1,
		WriteOrder:  'f',
		NBDClients:  2,
		Address:     "192.168.10.1:7789",
		PeerAddress: "192.168.10.2:7789",
	}
	secondary = primary
	secondary.Self, secondary.Peer = "bravo", "alpha"
	secondary.Role, secondary.PeerRole = "Secondary", "Primary"
	secondary.NetSent, secondary.NetRecv = 0, 8*giB
	secondary.DiskRead, secondary.ALWrites, secondary.BMWrites = 0, 0, 0
	secondary.LocalPending, secondary.Pending, secondary.Unacked, secondary.AppPending = 1, 0, 3, 0
	secondary.NBDClients = 0
	secondary.Address, secondary.PeerAddress = primary.PeerAddress, primary.Address
	return primary, secondary
}

func scenarios() []scenario {
	primary, secondary := connectedPair()

	standalone := Resource{
		Name: "r1", Minor: 1, Configured: true, Self: "alpha", Peer: "bravo",
		Role: "Secondary", PeerRole: "Unknown",
		Conn: "StandAlone", Disk: "Diskless", PeerDisk: "DUnknown",
		Protocol: 'C', WriteOrder: 'f',
	}

	wfc := primary
	wfc.Conn, wfc.PeerRole, wfc.PeerDisk = "WFConnection", "Unknown", "DUnknown"
	wfc.OutOfSync = 36 * miB
	wfc.Pending, wfc.Unacked = 0, 0

	large := Resource{
		Name: "big", Minor: 7, Configured: true, Self: "bravo", Peer: "alpha",
		Role: "Secondary", PeerRole: "Primary",
		Conn: "SyncTarget", Disk: "Inconsistent", PeerDisk: "UpToDate",
		Protocol: 'C', WriteOrder: 'f',
		NetRecv: 60 * giB, DiskWritten: 60 * giB,
		OutOfSync: 40 * giB,
		Pending:   8, LocalPending: 8, Epochs: 1,
		Sync: &SyncProgress{
			Total:        100 * giB,
			Left:         40 * giB,
			Elapsed:      10 * time.Minute,
			RecentBytes:  1800 * miB,
			RecentWindow: 18 * time.Second,
			WantKiBps:    102400,
		},
		Address: "[fd00::2]:7790", PeerAddress: "[fd00::1]:7790",
	}

	stalled := large
	stalled.Name, stalled.Minor = "stuck", 3
	stalled.Sync = &SyncProgress{
		Total:        2 * giB,
		Left:         1536 * miB,
		Elapsed:      40 * time.Minute,
		RecentBytes:  0,
		RecentWindow: 200 * time.Second,
		Stalled:      true,
		WantKiBps:    250,
	}
	stalled.OutOfSync = 1536 * miB
	stalled.NetRecv, stalled.DiskWritten = 512*miB, 512*miB

	paused := primary
	paused.Name, paused.Conn, paused.PeerDisk = "r2", "PausedSyncS", "Inconsistent"
	paused.Minor = 2
	paused.PausedByUser = true
	paused.OutOfSync = 300 * miB
	paused.Sync = &SyncProgress{Total: 1 * giB, Left: 300 * miB, Elapsed: 12 * time.Second,
		RecentBytes: 0, RecentWindow: 18 * time.Second}

	verify := secondary
	verify.Name, verify.Conn = "r3", "VerifyT"
	verify.Minor = 3
	verify.Sync = &SyncProgress{Total: 10 * giB, Left: 6 * giB, Verify: true, Elapsed: 40 * time.Second,
		RecentBytes: 1800 * miB, RecentWindow: 18 * time.Second}

	start := primary
	start.Name, start.Conn, start.PeerDisk = "r4", "SyncSource", "Inconsistent"
	start.Minor = 4
	start.Suspended = true
	start.PausedByPeer, start.PausedByDependency = true, true
	start.Sync = &SyncProgress{Total: 3 * giB, Left: 3 * giB, RecentWindow: 3 * time.Second}
	start.OutOfSync = 3 * giB

	return []scenario{
		{"empty", nil},
		{"unconfigured", []Resource{{Name: "r0", Minor: 0}}},
		{"standalone-diskless", []Resource{standalone}},
		{"connected-primary", []Resource{primary}},
		{"connected-secondary", []Resource{secondary}},
		{"wfconnection", []Resource{wfc}},
		{"syncsource-design", []Resource{designExample()}},
		{"synctarget-large", []Resource{large}},
		{"stalled", []Resource{stalled}},
		{"paused", []Resource{paused}},
		{"verify", []Resource{verify}},
		{"sync-start-flags", []Resource{start}},
		{"several", []Resource{large, wfc, {Name: "r9", Minor: 4}, standalone}},
		{"split-brain", []Resource{splitBrained()}},
	}
}

// scenarioResource returns the single resource of the named scenario.
func scenarioResource(t *testing.T, name string) Resource {
	t.Helper()
	for _, sc := range scenarios() {
		if sc.name == name {
			require.Len(t, sc.rs, 1)
			return sc.rs[0]
		}
	}
	t.Fatalf("no scenario %q", name)
	return Resource{}
}
