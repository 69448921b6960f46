package status

import (
	"bufio"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The regular expressions below are the ones DRBD monitoring scripts apply
// to /proc/drbd (nagios/icinga check_drbd in Perl and Python, awk one-liners,
// collectd/munin-style counter scrapers). They show that such scripts parse
// twinblock's status file unchanged.
var (
	// Perl check_drbd, per line: minor, cs, then ro/ds (or st/ld on 8.0).
	reCheckDRBD = regexp.MustCompile(`^\s*(\d+):\s+cs:(\w+)\s+(?:st|ro):(\w+)/(\w+)\s+(?:ld|ds):(\w+)/(\w+)`)
	// Python checks that take everything up to a blank.
	rePyLoose = regexp.MustCompile(`^ *(.*): cs:(.*) ro:([^ ]*) ds:([^ ]*) .*$`)
	// Stricter Python checks, anchored on a single leading blank (minors 0-9).
	rePyStrict = regexp.MustCompile(`^ ([0-9]+): cs:([^ ]+) ro:([^ ]+) ds:([^ ]+)`)
	// The protocol letter and the flags after ds:.
	reFlags = regexp.MustCompile(`ds:\S+ ([ABC]) ([rs])([a-])([p-])([u-])`)
	// awk: a resource line starts with blanks and digits, then ": ".
	reAwkResource = regexp.MustCompile(`^[ 0-9]+: `)
	// Counter scrapers: key:value pairs on the counter line.
	reCounter = regexp.MustCompile(`(\w+):(\S+)`)
	// Resync watchers.
	reSynced = regexp.MustCompile(`(?:sync'ed|verified):\s*([\d.]+)%\s+\((\d+)/(\d+)\)([KM])`)
	reFinish = regexp.MustCompile(`finish:\s+(\d+):(\d+):(\d+)\s+speed:\s+([\d,]+)\s+\(([\d,]+)\)(?:\s+want:\s+([\d,]+))?\s+K/sec`)
	// The version line.
	reVersion = regexp.MustCompile(`^version: (\S+)`)
)

type parsedMinor struct {
	cs, role, peerRole, disk, peerDisk, proto, flags string
	counters                                         map[string]string
	synced                                           float64
	left, total                                      uint64
	unit                                             string
	finish                                           time.Duration
	speed, avg, want                                 uint64
}

// parseProcDRBD reads text the way the scripts above do, keyed by minor.
func parseProcDRBD(t *testing.T, text string) map[int]*parsedMinor {
	t.Helper()
	out := map[int]*parsedMinor{}
	var cur *parsedMinor
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if m := reCheckDRBD.FindStringSubmatch(line); m != nil {
			minor, err := strconv.Atoi(m[1])
			require.NoError(t, err)
			cur = &parsedMinor{cs: m[2], role: m[3], peerRole: m[4], disk: m[5], peerDisk: m[6]}
			out[minor] = cur
			loose := rePyLoose.FindStringSubmatch(line)
			require.NotNil(t, loose, line)
			assert.Equal(t, m[2], loose[2])
			assert.Equal(t, m[3]+"/"+m[4], loose[3])
			assert.Equal(t, m[5]+"/"+m[6], loose[4])
			if minor < 10 {
				strict := rePyStrict.FindStringSubmatch(line)
				require.NotNil(t, strict, line)
				assert.Equal(t, m[2], strict[2])
			}
			if f := reFlags.FindStringSubmatch(line); f != nil {
				cur.proto, cur.flags = f[1], f[2]+f[3]+f[4]+f[5]
			}
			continue
		}
		if reAwkResource.MatchString(line) { // Unconfigured
			fields := strings.Fields(line)
			minor, err := strconv.Atoi(strings.TrimSuffix(fields[0], ":"))
			require.NoError(t, err)
			cur = &parsedMinor{cs: strings.TrimPrefix(fields[1], "cs:")}
			out[minor] = cur
			continue
		}
		if strings.HasPrefix(line, "    ns:") {
			cur.counters = map[string]string{}
			for _, kv := range reCounter.FindAllStringSubmatch(line, -1) {
				cur.counters[kv[1]] = kv[2]
			}
			continue
		}
		if m := reSynced.FindStringSubmatch(line); m != nil {
			cur.synced, _ = strconv.ParseFloat(m[1], 64)
			cur.left, _ = strconv.ParseUint(m[2], 10, 64)
			cur.total, _ = strconv.ParseUint(m[3], 10, 64)
			cur.unit = m[4]
			continue
		}
		if m := reFinish.FindStringSubmatch(line); m != nil {
			h, _ := strconv.Atoi(m[1])
			mi, _ := strconv.Atoi(m[2])
			s, _ := strconv.Atoi(m[3])
			cur.finish = time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute + time.Duration(s)*time.Second
			cur.speed = uintNoCommas(t, m[4])
			cur.avg = uintNoCommas(t, m[5])
			if m[6] != "" {
				cur.want = uintNoCommas(t, m[6])
			}
		}
	}
	return out
}

func uintNoCommas(t *testing.T, s string) uint64 {
	v, err := strconv.ParseUint(strings.ReplaceAll(s, ",", ""), 10, 64)
	require.NoError(t, err)
	return v
}

func TestMonitoringScriptsParse(t *testing.T) {
	primary, _ := connectedPair()
	large := scenarioResource(t, "synctarget-large") // minor 7
	wfc := primary
	wfc.Name, wfc.Minor, wfc.Conn, wfc.PeerDisk, wfc.PeerRole = "w", 12, "WFConnection", "DUnknown", "Unknown"
	rs := []Resource{designExample(), large, wfc, {Name: "down", Minor: 3}}
	text := procText(t, rs...)

	require.Regexp(t, reVersion, strings.SplitN(text, "\n", 2)[0])
	got := parseProcDRBD(t, text)
	require.Len(t, got, 4)

	m0 := got[0]
	assert.Equal(t, "SyncSource", m0.cs)
	assert.Equal(t, []string{"Primary", "Secondary", "UpToDate", "Inconsistent"},
		[]string{m0.role, m0.peerRole, m0.disk, m0.peerDisk})
	assert.Equal(t, "C", m0.proto)
	assert.Equal(t, "r---", m0.flags)
	assert.Equal(t, map[string]string{
		"ns": "1048576", "nr": "0", "dw": "0", "dr": "1049600", "al": "0", "bm": "0",
		"lo": "0", "pe": "2", "ua": "0", "ap": "0", "ep": "1", "wo": "f", "oos": "2048",
	}, m0.counters)
	assert.Equal(t, 99.9, m0.synced)
	assert.Equal(t, []uint64{2, 1048576}, []uint64{m0.left, m0.total})
	assert.Equal(t, "K", m0.unit)
	assert.Equal(t, time.Second, m0.finish)
	assert.Equal(t, []uint64{524288, 524288, 102400}, []uint64{m0.speed, m0.avg, m0.want})

	m7 := got[7]
	assert.Equal(t, "SyncTarget", m7.cs)
	assert.Equal(t, 60.0, m7.synced)
	assert.Equal(t, "M", m7.unit)
	assert.Equal(t, []uint64{40 * 1024, 100 * 1024}, []uint64{m7.left, m7.total})
	assert.Equal(t, strconv.Itoa(40*1024*1024), m7.counters["oos"], "oos in KiB")

	assert.Equal(t, "WFConnection", got[12].cs)
	assert.Equal(t, "Unknown", got[12].peerRole)
	assert.Equal(t, "DUnknown", got[12].peerDisk)

	assert.Equal(t, "Unconfigured", got[3].cs)
}

// scanWords is the Prometheus node_exporter drbd collector's reading of
// /proc/drbd: every blank-separated word split on ':'; "N:" starts device
// N; the known keys give a metric of the current device; everything else
// is skipped.
func scanWords(text string) map[string]string {
	known := map[string]bool{"cs": true, "ro": true, "ds": true, "ns": true, "nr": true, "dw": true,
		"dr": true, "al": true, "bm": true, "lo": true, "pe": true, "ua": true, "ap": true, "ep": true, "oos": true}
	out := map[string]string{}
	device := "unknown"
	for _, field := range strings.Fields(text) {
		kv := strings.Split(field, ":")
		if len(kv) != 2 {
			continue
		}
		if id, err := strconv.ParseUint(kv[0], 10, 64); err == nil && kv[1] == "" {
			device = "drbd" + strconv.FormatUint(id, 10)
			continue
		}
		if known[kv[0]] {
			out[device+" "+kv[0]] = kv[1]
		}
	}
	return out
}

// TestMonitoringScriptsSkipSplitBrainLine: the split-brain line changes
// nothing that the scripts above, or node_exporter's word scanner, read:
// each resource parses the same with and without it, including the one
// that follows a split-brained resource.
func TestMonitoringScriptsSkipSplitBrainLine(t *testing.T) {
	primary, _ := connectedPair()
	primary.Minor = 1
	syncing := designExample()
	syncing.Name, syncing.Minor = "r2", 2
	tests := []struct {
		name string
		rs   []Resource
		line string // the split-brain line expected in the text
	}{
		{"alone", []Resource{splitBrained()},
			"\tsplit-brain: unresolved (uuid_compare rule 90); see: twinblock explain r0\n"},
		{"followed by another resource", []Resource{splitBrained(), primary},
			"\tsplit-brain: unresolved (uuid_compare rule 90); see: twinblock explain r0\n"},
		{"after progress lines, minor 10", []Resource{func() Resource {
			r := syncing
			r.Minor, r.SplitBrain, r.SplitBrainRule = 10, true, 100
			return r
		}(), primary}, "\tsplit-brain: unresolved (uuid_compare rule 100); see: twinblock explain r2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			with := procText(t, tt.rs...)
			require.Contains(t, with, tt.line)
			without := make([]Resource, len(tt.rs))
			for i, r := range tt.rs {
				r.SplitBrain = false
				without[i] = r
			}
			plain := procText(t, without...)
			require.NotContains(t, plain, "split-brain")

			assert.Equal(t, parseProcDRBD(t, plain), parseProcDRBD(t, with))
			assert.Equal(t, scanWords(plain), scanWords(with))
			line := strings.TrimSuffix(tt.line, "\n")
			for _, re := range []*regexp.Regexp{reCheckDRBD, rePyLoose, rePyStrict, reFlags, reAwkResource,
				reCounter, reSynced, reFinish, reVersion} {
				assert.False(t, re.MatchString(line), "%s matches %q", re, line)
			}
		})
	}
}
