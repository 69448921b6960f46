package status

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/quick"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func procText(t *testing.T, rs ...Resource) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, WriteProcDRBD(&b, "0.1.0", rs))
	return b.String()
}

// TestProcDRBDDesignExample pins DESIGN.md's example byte for byte,
// independently of the golden files.
func TestProcDRBDDesignExample(t *testing.T) {
	assert.Equal(t, designProcDRBD, procText(t, designExample()))
}

func TestProcDRBDLines(t *testing.T) {
	primary, _ := connectedPair()
	standalone := Resource{Name: "s", Minor: 5, Configured: true, Role: "Primary",
		Conn: "StandAlone", Disk: "UpToDate", Protocol: 'C'}
	tests := []struct {
		name string
		r    Resource
		want []string // lines after the version line
	}{
		{"unconfigured", Resource{Name: "r0", Minor: 0}, []string{" 0: cs:Unconfigured"}},
		{"unconfigured two digits", Resource{Name: "r0", Minor: 0, Configured: false}, []string{" 0: cs:Unconfigured"}},
		{"8.4 rule: StandAlone Diskless Secondary is Unconfigured",
			Resource{Name: "r", Minor: 0, Configured: true, Role: "Secondary", Conn: "StandAlone", Disk: "Diskless"},
			[]string{" 0: cs:Unconfigured"}},
		{"connected", primary, []string{
			" 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----",
			"    ns:8388608 nr:0 dw:8388608 dr:3145728 al:117 bm:4 lo:1 pe:3 ua:0 ap:2 ep:1 wo:f oos:0",
		}},
		{"standalone primary, empty peer fields, no protocol", func() Resource {
			r := standalone
			r.Protocol = 0
			r.WriteOrder = 0
			return r
		}(), []string{
			"",
			" 5: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   r-----",
			"    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:0 wo:f oos:0",
		}},
		{"flags", func() Resource {
			r := primary
			r.Suspended, r.PausedByDependency, r.PausedByPeer, r.PausedByUser = true, true, true, true
			r.Protocol, r.WriteOrder = 'A', 'd'
			return r
		}(), []string{
			" 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate A sapu--",
			"    ns:8388608 nr:0 dw:8388608 dr:3145728 al:117 bm:4 lo:1 pe:3 ua:0 ap:2 ep:1 wo:d oos:0",
		}},
		{"no progress lines in PausedSyncS", func() Resource {
			r := designExample()
			r.Conn, r.PausedByUser = "PausedSyncS", true
			return r
		}(), []string{
			" 0: cs:PausedSyncS ro:Primary/Secondary ds:UpToDate/Inconsistent C r--u--",
			"    ns:1048576 nr:0 dw:0 dr:1049600 al:0 bm:0 lo:0 pe:2 ua:0 ap:0 ep:1 wo:f oos:2048",
		}},
		{"split brain: one line after the counters", splitBrained(), []string{
			" 0: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown C r-----",
			"    ns:0 nr:0 dw:65536 dr:0 al:12 bm:3 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:65536",
			"\tsplit-brain: unresolved (uuid_compare rule 90); see: twinblock explain r0",
		}},
		{"split brain, rule 100, resource name filled in", func() Resource {
			r := splitBrained()
			r.Name, r.Minor, r.Role, r.SplitBrainRule = "web-data", 1, "Secondary", 100
			return r
		}(), []string{
			"",
			" 1: cs:StandAlone ro:Secondary/Unknown ds:UpToDate/DUnknown C r-----",
			"    ns:0 nr:0 dw:65536 dr:0 al:12 bm:3 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:65536",
			"\tsplit-brain: unresolved (uuid_compare rule 100); see: twinblock explain web-data",
		}},
		{"split brain, rule not known", func() Resource {
			r := splitBrained()
			r.SplitBrainRule = 0
			return r
		}(), []string{
			" 0: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown C r-----",
			"    ns:0 nr:0 dw:65536 dr:0 al:12 bm:3 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:65536",
			"\tsplit-brain: unresolved; see: twinblock explain r0",
		}},
		{"a rule without SplitBrain prints nothing", func() Resource {
			r := splitBrained()
			r.SplitBrain = false
			return r
		}(), []string{
			" 0: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown C r-----",
			"    ns:0 nr:0 dw:65536 dr:0 al:12 bm:3 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:65536",
		}},
		{"split brain comes after the progress lines", func() Resource {
			r := designExample()
			r.SplitBrain, r.SplitBrainRule = true, 41
			return r
		}(), []string{
			" 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----",
			"    ns:1048576 nr:0 dw:0 dr:1049600 al:0 bm:0 lo:0 pe:2 ua:0 ap:0 ep:1 wo:f oos:2048",
			"\t[===================>] sync'ed: 99.9% (2/1048576)K",
			"\tfinish: 0:00:01 speed: 524,288 (524,288) want: 102,400 K/sec",
			"\tsplit-brain: unresolved (uuid_compare rule 41); see: twinblock explain r0",
		}},
		{"no split-brain line without a counter line (cs:Unconfigured)", func() Resource {
			r := splitBrained()
			r.Role, r.Disk = "Secondary", "Diskless"
			return r
		}(), []string{" 0: cs:Unconfigured"}},
		{"no progress lines without Sync", func() Resource {
			r := designExample()
			r.Sync = nil
			return r
		}(), []string{
			" 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----",
			"    ns:1048576 nr:0 dw:0 dr:1049600 al:0 bm:0 lo:0 pe:2 ua:0 ap:0 ep:1 wo:f oos:2048",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := "version: twinblock 0.1.0 (api:1/proto:1)\n" + strings.Join(tt.want, "\n") + "\n"
			assert.Equal(t, want, procText(t, tt.r))
		})
	}
}

func TestProcDRBDOrderAndGaps(t *testing.T) {
	rs := []Resource{
		{Name: "c", Minor: 4},
		{Name: "a", Minor: 1},
		{Name: "z", Minor: 0},
		{Name: "b", Minor: 2},
		{Name: "d", Minor: 10},
	}
	want := "version: twinblock 0.1.0 (api:1/proto:1)\n" +
		" 0: cs:Unconfigured\n" +
		" 1: cs:Unconfigured\n" +
		" 2: cs:Unconfigured\n" +
		"\n" +
		" 4: cs:Unconfigured\n" +
		"\n" +
		"10: cs:Unconfigured\n"
	assert.Equal(t, want, procText(t, rs...))
	assert.Equal(t, "version: twinblock x (api:1/proto:1)\n", func() string {
		var b bytes.Buffer
		require.NoError(t, WriteProcDRBD(&b, "x", nil))
		return b.String()
	}())
}

// progressLines renders only the two progress lines of sp.
func progressLines(sp SyncProgress, conn string) string {
	r := Resource{Name: "r", Configured: true, Role: "Primary", Conn: conn, Disk: "UpToDate", Sync: &sp}
	var b bytes.Buffer
	_ = WriteProcDRBD(&b, "v", []Resource{r})
	lines := strings.SplitAfterN(b.String(), "\n", 4)
	return lines[3]
}

func TestProgressLines(t *testing.T) {
	tests := []struct {
		name string
		sp   SyncProgress
		conn string
		want string
	}{
		{"start: 21-character bar, nothing done", SyncProgress{Total: 4 * giB, Left: 4 * giB, RecentWindow: 18 * time.Second},
			"SyncTarget",
			"\t[>....................] sync'ed:  0.0% (4194304/4194304)K\n" +
				"\tfinish: 52:25:43 speed: 0 (0) K/sec\n"}, // DRBD: 18 s · 1048576 bits / 100
		{"half", SyncProgress{Total: 100 * miB, Left: 50 * miB, Elapsed: 10 * time.Second,
			RecentBytes: 90 * miB, RecentWindow: 18 * time.Second},
			"SyncTarget",
			"\t[=========>..........] sync'ed: 50.0% (51200/102400)K\n" +
				"\tfinish: 0:00:10 speed: 5,120 (5,120) K/sec\n"},
		{"exactly 4 GiB stays in K", SyncProgress{Total: 4 * giB, Left: 1 * giB, Elapsed: time.Hour,
			RecentBytes: 18 * miB, RecentWindow: 18 * time.Second},
			"SyncSource",
			"\t[==============>.....] sync'ed: 75.0% (1048576/4194304)K\n" +
				"\tfinish: 0:17:04 speed: 1,024 (873) K/sec\n"},
		{"above 4 GiB is in M", SyncProgress{Total: 4*giB + 4096, Left: 1*giB + 512*kiB, Elapsed: time.Hour,
			RecentBytes: 18 * miB, RecentWindow: 18 * time.Second},
			"SyncSource",
			"\t[==============>.....] sync'ed: 75.0% (1024/4096)M\n" +
				"\tfinish: 0:17:05 speed: 1,024 (873) K/sec\n"},
		{"verify", SyncProgress{Total: 1 * giB, Left: 100 * miB, Elapsed: time.Minute,
			RecentBytes: 180 * miB, RecentWindow: 18 * time.Second, WantKiBps: 1},
			"VerifyS",
			"\t[=================>..] verified: 90.3% (102400/1048576)K\n" +
				"\tfinish: 0:00:10 speed: 10,240 (15,769) want: 1 K/sec\n"},
		{"stalled, DRBD's fallback estimate", SyncProgress{Total: 2 * giB, Left: 1536 * miB, Elapsed: 40 * time.Minute,
			RecentWindow: 200 * time.Second, Stalled: true, WantKiBps: 250},
			"SyncTarget",
			"\t[====>...............] sync'ed: 25.0% (1572864/2097152)K\n" +
				"\tfinish: 218:27:12 speed: 0 (218) want: 250 K/sec (stalled)\n"},
		{"done", SyncProgress{Total: 1 * giB, Left: 0, Elapsed: 2 * time.Second, RecentBytes: 512 * miB, RecentWindow: time.Second},
			"SyncSource",
			"\t[===================>] sync'ed:100.0% (0/1048576)K\n" +
				"\tfinish: 0:00:00 speed: 524,288 (524,288) K/sec\n"},
		{"left above total is clamped, as DRBD", SyncProgress{Total: 1 * miB, Left: 2 * miB},
			"SyncSource",
			"\t[>....................] sync'ed:  0.0% (1024/1024)K\n" +
				"\tfinish: 0:00:02 speed: 0 (0) K/sec\n"},
		{"empty resync", SyncProgress{},
			"SyncSource",
			"\t[===================>] sync'ed:100.0% (0/0)K\n" +
				"\tfinish: 0:00:00 speed: 0 (0) K/sec\n"},
		{"tiny remainder reads 99.9% and at least 1 s", SyncProgress{Total: 1 * giB, Left: 4 * kiB, Elapsed: time.Hour,
			RecentBytes: 1 * giB, RecentWindow: time.Second},
			"SyncTarget",
			"\t[===================>] sync'ed: 99.9% (4/1048576)K\n" +
				"\tfinish: 0:00:01 speed: 1,048,576 (291) K/sec\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, progressLines(tt.sp, tt.conn))
		})
	}
}

// TestProgressBarShape checks the bar against DRBD's rule for every per
// mille: x = ‰/50, then x−1 '=', '>', 20−x '.'.
func TestProgressBarShape(t *testing.T) {
	for perMil := uint64(0); perMil <= 1000; perMil++ {
		sp := SyncProgress{Total: 1000 * 4096, Left: (1000 - perMil) * 4096}
		p := computeProgress(sp)
		require.Equal(t, perMil, p.perMil)
		x := int(perMil / 50)
		bar := "[" + strings.Repeat("=", max(x-1, 0)) + ">" + strings.Repeat(".", 20-x) + "]"
		require.True(t, strings.HasPrefix(progressLines(sp, "SyncSource"), "\t"+bar+" "), "per mille %d", perMil)
	}
}

// drbdThousands is DRBD 8.4's seq_printf_with_thousands_grouping, the
// reference for thousands below 10⁹.
func drbdThousands(v uint64) string {
	switch {
	case v >= 1000000:
		return fmt.Sprintf("%d,%03d,%03d", v/1000000, v%1000000/1000, v%1000)
	case v >= 1000:
		return fmt.Sprintf("%d,%03d", v/1000, v%1000)
	}
	return fmt.Sprint(v)
}

func TestThousands(t *testing.T) {
	for _, v := range []uint64{0, 7, 999, 1000, 1001, 524288, 999999, 1000000, 102400, 999999999} {
		assert.Equal(t, drbdThousands(v), thousands(v), "%d", v)
	}
	assert.Equal(t, "1,000,000,000", thousands(1e9))
	assert.Equal(t, "18,446,744,073,709,551,615", thousands(^uint64(0)))
	require.NoError(t, quick.CheckEqual(
		func(v uint32) string { return drbdThousands(uint64(v) % 1e9) },
		func(v uint32) string { return thousands(uint64(v) % 1e9) }, nil))
}

func TestMulDiv(t *testing.T) {
	assert.Equal(t, uint64(3), mulDiv(7, 3, 7, false))
	assert.Equal(t, uint64(1), mulDiv(5, 1, 3, false))
	assert.Equal(t, uint64(2), mulDiv(5, 1, 3, true))
	assert.Equal(t, uint64(2), mulDiv(4, 1, 2, true))
	assert.Equal(t, uint64(3), mulDiv(5, 1, 2, true))
	// 1 PiB · 18 s in ns overflows 64 bits on the way, not in the result.
	assert.Equal(t, uint64(1<<50)*18, mulDiv(1<<50, 18*uint64(time.Second), uint64(time.Second), false))
	assert.Equal(t, ^uint64(0), mulDiv(^uint64(0), ^uint64(0), 1, false))
}

type failWriter struct{}

var errBroken = errors.New("broken pipe")

func (failWriter) Write([]byte) (int, error) { return 0, errBroken }

// countWriter counts Write calls.
type countWriter struct {
	bytes.Buffer
	calls int
}

func (c *countWriter) Write(p []byte) (int, error) { c.calls++; return c.Buffer.Write(p) }

func (c *countWriter) WriteString(s string) (int, error) { c.calls++; return c.Buffer.WriteString(s) }

func TestWritersWriteOnceAndWrapErrors(t *testing.T) {
	rs := []Resource{designExample(), {Name: "r1", Minor: 1}}
	writers := map[string]func(w *countWriter) error{
		"proc":   func(w *countWriter) error { return WriteProcDRBD(w, "v", rs) },
		"status": func(w *countWriter) error { return WriteStatus(w, rs, true) },
		"json":   func(w *countWriter) error { return WriteJSON(w, rs) },
	}
	for name, write := range writers {
		var w countWriter
		require.NoError(t, write(&w), name)
		assert.Equal(t, 1, w.calls, name)
	}
	for _, err := range []error{
		WriteProcDRBD(failWriter{}, "v", rs),
		WriteStatus(failWriter{}, rs, false),
		WriteJSON(failWriter{}, rs),
	} {
		require.ErrorIs(t, err, errBroken)
		assert.True(t, strings.HasPrefix(err.Error(), "status: "), err.Error())
	}
}

// TestInputNotModified: the formatters sort a copy.
func TestInputNotModified(t *testing.T) {
	rs := []Resource{{Name: "b", Minor: 2}, {Name: "a", Minor: 1}}
	var b bytes.Buffer
	require.NoError(t, WriteProcDRBD(&b, "v", rs))
	require.NoError(t, WriteStatus(&b, rs, false))
	require.NoError(t, WriteJSON(&b, rs))
	assert.Equal(t, "b", rs[0].Name)
}
