package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/nbd/client"
)

// fillRandom writes n random bytes at the start of f.
func fillRandom(t *testing.T, f *os.File, n int64) []byte {
	t.Helper()
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	_, err := f.WriteAt(buf, 0)
	require.NoError(t, err)
	return buf
}

// logInt returns the last value of key=N in the lines of log that
// contain marker (slog's text format), or -1.
func logInt(log, marker, key string) int64 {
	re := regexp.MustCompile(`\b` + regexp.QuoteMeta(key) + `=(\d+)`)
	v := int64(-1)
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, marker) {
			continue
		}
		if m := re.FindStringSubmatch(l); m != nil {
			v, _ = strconv.ParseInt(m[1], 10, 64)
		}
	}
	return v
}

// procDRBD is what a monitoring script written for DRBD 8.4 reads from
// /proc/drbd: the state line, the counters and, while syncing, the
// progress lines.
type procDRBD struct {
	cs, ro, ds string
	oosKiB     int64
	syncing    bool
	permil     int64 // sync'ed x.y% as per-mille
	leftKiB    int64
	totalKiB   int64
	finish     string
	speed      int64
	want       int64
}

var (
	reState    = regexp.MustCompile(`(?m)^ *0: cs:(\S+) ro:(\S+) ds:(\S+) [ABC] [rs][-a][-p][-u][-\w][-s]$`)
	reCounters = regexp.MustCompile(`(?m)^    ns:\d+ nr:\d+ dw:\d+ dr:\d+ al:\d+ bm:\d+ lo:\d+ pe:\d+ ua:\d+ ap:\d+ ep:\d+ wo:[bfdn] oos:(\d+)$`)
	reBar      = regexp.MustCompile(`(?m)^\t\[(=*)>(\.*)\] (?:sync'ed|verified): *(\d+)\.(\d)% \((\d+)/(\d+)\)([KM])$`)
	reFinish   = regexp.MustCompile(`(?m)^\tfinish: (\d+:\d\d:\d\d) speed: ([\d,]+) \(([\d,]+)\)(?: want: ([\d,]+))? K/sec(?: \(stalled\))?$`)
)

func parseProcDRBD(t *testing.T, text string) procDRBD {
	t.Helper()
	var p procDRBD
	m := reState.FindStringSubmatch(text)
	require.NotNil(t, m, "no state line in\n%s", text)
	p.cs, p.ro, p.ds = m[1], m[2], m[3]
	m = reCounters.FindStringSubmatch(text)
	require.NotNil(t, m, "no counters line in\n%s", text)
	p.oosKiB, _ = strconv.ParseInt(m[1], 10, 64)
	bar := reBar.FindStringSubmatch(text)
	if bar == nil {
		return p
	}
	p.syncing = true
	// DRBD's bar: x-1 '=' (none at x = 0), '>', 20-x '.', x = permil/50.
	x := len(bar[1]) + 1
	if len(bar[1]) == 0 && len(bar[2]) == 20 {
		x = 0
	}
	require.Equal(t, 20-x, len(bar[2]), "the bar: %q", bar[0])
	whole, _ := strconv.ParseInt(bar[3], 10, 64)
	frac, _ := strconv.ParseInt(bar[4], 10, 64)
	p.permil = whole*10 + frac
	require.Equal(t, int(p.permil/50), x, "the bar's length follows the per-mille: %q", bar[0])
	p.leftKiB, _ = strconv.ParseInt(bar[5], 10, 64)
	p.totalKiB, _ = strconv.ParseInt(bar[6], 10, 64)
	if bar[7] == "M" {
		p.leftKiB, p.totalKiB = p.leftKiB<<10, p.totalKiB<<10
	}
	fin := reFinish.FindStringSubmatch(text)
	require.NotNil(t, fin, "no finish line in\n%s", text)
	p.finish = fin[1]
	p.speed, _ = strconv.ParseInt(strings.ReplaceAll(fin[2], ",", ""), 10, 64)
	if fin[4] != "" {
		p.want, _ = strconv.ParseInt(strings.ReplaceAll(fin[4], ",", ""), 10, 64)
	}
	return p
}

func (p *pair) procDRBD(t *testing.T, n string) procDRBD {
	t.Helper()
	b, err := os.ReadFile(p.statusFile(n))
	require.NoError(t, err)
	return parseProcDRBD(t, string(b))
}

// waitSynced waits until both nodes are Connected and UpToDate.
func (p *pair) waitSynced(t *testing.T, within time.Duration) {
	t.Helper()
	p.waitFor(t, "b", "dstate", "UpToDate/UpToDate", within)
	p.waitFor(t, "a", "dstate", "UpToDate/UpToDate", 5*time.Second)
	p.waitFor(t, "a", "cstate", "Connected", 5*time.Second)
	p.waitFor(t, "b", "cstate", "Connected", 5*time.Second)
}

// equalData takes both nodes down and compares their data areas.
func (p *pair) equalData(t *testing.T) []byte {
	t.Helper()
	p.tb(t, "a", "down", "r0")
	p.tb(t, "b", "down", "r0")
	da, _ := p.dataArea(t, "a")
	db, _ := p.dataArea(t, "b")
	if !bytes.Equal(da, db) {
		diff := 0
		for i := 0; i < len(da); i += 4096 {
			if !bytes.Equal(da[i:i+4096], db[i:i+4096]) {
				diff++
			}
		}
		t.Fatalf("the data areas differ in %d blocks of 4 KiB", diff)
	}
	return da
}

// TestResyncInitialFullSync: a fresh pair, a's disk holding data; the
// forced promotion copies all of it to b, with compression (the data is
// half zeros, half compressible text) and the progress in the status
// file, parsed as a DRBD monitoring script parses /proc/drbd.
func TestResyncInitialFullSync(t *testing.T) {
	const size = 96 << 20
	var want []byte
	p := newPairOpts(t, pairOpts{size: size,
		net:  "compression s2;",
		disk: "c-plan-ahead 0; resync-rate 24M;", // fixed rate: about 3 s
		fill: func(n string, f *os.File) {
			if n != "a" {
				return
			}
			want = make([]byte, 48<<20)
			for i := 0; i < len(want); i += 64 {
				copy(want[i:], fmt.Sprintf("block %12d of twinblock's initial sync test..\n", i))
			}
			_, err := f.WriteAt(want, 0)
			require.NoError(t, err)
		}})
	p.upConnected(t)
	p.tb(t, "a", "primary", "--force", "r0")

	var seen []procDRBD
	var watched string
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		st := p.procDRBD(t, "a")
		if st.syncing {
			seen = append(seen, st)
			if watched == "" {
				// status --watch redraws with a progress bar.
				ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
				out, _ := exec.CommandContext(ctx, twinblockBin, "--config", p.confs["a"], "--node", "a",
					"--control", p.control("a"), "status", "--watch", "r0").Output()
				cancel()
				watched = string(out)
			}
		}
		if st.cs == "Connected" && st.ds == "UpToDate/UpToDate" {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.NotEmpty(t, seen, "the status file never showed the resync")
	for _, st := range seen {
		require.Equal(t, "SyncSource", st.cs)
		require.Equal(t, "Primary/Secondary", st.ro)
		require.Equal(t, "UpToDate/Inconsistent", st.ds)
		require.Equal(t, st.oosKiB, st.leftKiB, "oos: and the left of the bar agree")
		require.LessOrEqual(t, st.leftKiB, st.totalKiB)
		// DRBD's per-mille, at byte precision (pkg/status's doc says why).
		wantPermil := 1000 - st.leftKiB*1000/st.totalKiB
		if st.leftKiB > 0 && wantPermil == 1000 {
			wantPermil = 999
		}
		require.Equal(t, wantPermil, st.permil, "the per-mille")
	}
	t.Logf("%d status samples during the sync; last: %+v", len(seen), seen[len(seen)-1])
	require.Regexp(t, `replication:SyncSource peer-disk:Inconsistent done:\d+\.\d\d`, watched)
	require.Regexp(t, `r0 SyncSource \[#*\.*\] +\d+\.\d\d% +\d+\.\d MiB/s +eta `, watched)
	p.waitSynced(t, 60*time.Second)

	// twinblock status (DRBD 9's layout) and the log of the target.
	out := p.tb(t, "b", "status", "r0")
	require.Contains(t, out, "disk:UpToDate")
	logB := p.Node("b").Log()
	require.Contains(t, logB, "uuid_compare()")
	wire := logInt(logB, "Resync done", "wire-bytes")
	require.Positive(t, wire)
	require.Less(t, wire, int64(len(want))/2, "compressible data and zeros must not cross raw (%d bytes sent)", wire)
	t.Logf("initial sync of %d MiB sent %d bytes", size>>20, wire)

	data := p.equalData(t)
	require.Equal(t, want, data[:len(want)])
}

// TestResyncAfterSecondaryKilled: the Secondary is killed, the Primary
// writes on alone, the Secondary returns and gets exactly what changed.
func TestResyncAfterSecondaryKilled(t *testing.T) {
	const size = 128 << 20
	p := newPairOpts(t, pairOpts{size: size})
	p.upConnected(t)
	p.tb(t, "a", "primary", "--force", "r0")
	p.waitSynced(t, 60*time.Second)

	p.Node("b").Kill()
	p.waitFor(t, "a", "cstate", "WFConnection", 10*time.Second)
	c, err := client.Dial(context.Background(), p.nbd["a"], client.Options{Export: "r0"})
	require.NoError(t, err)
	defer c.Close()
	// 1% of the device, in random blocks.
	nblocks := c.Size() / 4096
	blocks := make([]int64, nblocks/100)
	for i := range blocks {
		var b [8]byte
		_, _ = rand.Read(b[:])
		blocks[i] = int64(uint64(b[0])|uint64(b[1])<<8|uint64(b[2])<<16) % nblocks
	}
	last := writeBlocks(t, c, blocks, 8)
	require.NoError(t, c.Flush())
	dirty := int64(len(last)) * 4096
	var oos int64
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if oos = p.procDRBD(t, "a").oosKiB << 10; oos >= dirty {
			break // the file is rewritten once a second
		}
	}
	require.GreaterOrEqual(t, oos, dirty, "every block written alone is out of sync")

	p.start(t, "b")
	p.tb(t, "b", "up", "r0")
	p.waitSynced(t, 60*time.Second)
	logB := p.Node("b").Log()
	require.Contains(t, logB, "uuid_compare()=-1 by rule 50")
	wire := logInt(logB, "Resync done", "wire-bytes")
	t.Logf("%d blocks written while b was down (%d bytes), %d out of sync, resync sent %d bytes", len(last), dirty, oos, wire)
	require.Positive(t, wire)
	require.LessOrEqual(t, float64(wire), 1.1*float64(dirty), "the resync sent more than 1.1× the dirty bytes")
	require.NoError(t, c.Close())
	data := p.equalData(t)
	for b, w := range last {
		require.Equal(t, w, data[b*4096:(b+1)*4096])
	}
}

// TestResyncInterruptedBySIGKILL: a full sync killed three times, target,
// source, target, resumes each time with what was left and completes.
func TestResyncInterruptedBySIGKILL(t *testing.T) {
	const size = 128 << 20
	var src []byte
	p := newPairOpts(t, pairOpts{size: size,
		disk: "c-plan-ahead 0; resync-rate 24M;", // about 5 s in all
		fill: func(n string, f *os.File) {
			if n == "a" {
				src = fillRandom(t, f, 120<<20)
			}
		}})
	p.upConnected(t)
	p.tb(t, "a", "primary", "--force", "r0")
	total := int64(-1)
	for i, victim := range []string{"b", "a", "b"} {
		// Let it make progress, then kill.
		var before procDRBD
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			before = p.procDRBD(t, "b")
			if before.syncing && before.totalKiB > 0 && before.leftKiB < before.totalKiB*(10-int64(2*i+2))/10 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		require.True(t, before.syncing, "round %d: no resync in progress: %+v", i, before)
		if total < 0 {
			total = before.totalKiB
		}
		t.Logf("round %d: killing %s at %d/%d KiB left", i, victim, before.leftKiB, before.totalKiB)
		p.Node(victim).Kill()
		if victim == "a" {
			// b's status file is live: wait until b noticed.
			p.waitFor(t, "b", "cstate", "WFConnection", 10*time.Second)
		}
		p.start(t, victim)
		p.tb(t, victim, "up", "r0")
		// The resync resumes: what is left now is what was left then,
		// plus at most what the last second (one checkpoint) did.
		var after procDRBD
		deadline = time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			// The restarted daemon's file says Unconfigured until it
			// rewrites it after up (at least once a second).
			if st, err := os.ReadFile(p.statusFile("b")); err == nil && reState.Match(st) {
				if after = parseProcDRBD(t, string(st)); after.syncing {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		require.True(t, after.syncing, "round %d: the resync did not resume: %+v", i, after)
		slack := int64(24<<10) * 2 // KiB: two seconds at the configured rate
		require.LessOrEqual(t, after.leftKiB, before.leftKiB+slack, "round %d: the resync went back", i)
		require.Less(t, after.totalKiB, total, "round %d: the resync started over", i)
	}
	p.waitSynced(t, 60*time.Second)
	data := p.equalData(t)
	require.Equal(t, src, data[:len(src)])
}

// TestResyncCsumsIdenticalDisks: both disks already hold the same data;
// with csums-alg the initial full sync sends digests, not data.
func TestResyncCsumsIdenticalDisks(t *testing.T) {
	const size = 64 << 20
	var same []byte
	p := newPairOpts(t, pairOpts{size: size,
		net: "csums-alg sha256;",
		fill: func(n string, f *os.File) {
			if same == nil {
				same = make([]byte, 60<<20)
				_, _ = rand.Read(same)
			}
			_, err := f.WriteAt(same, 0)
			require.NoError(t, err)
		}})
	p.upConnected(t)
	p.tb(t, "a", "primary", "--force", "r0")
	p.waitSynced(t, 60*time.Second)
	logB := p.Node("b").Log()
	wire := logInt(logB, "Resync done", "wire-bytes")
	skipped := logInt(logB, "Resync done", "same-csum-blocks")
	t.Logf("full-bitmap resync of identical disks: %d bytes of data sent, %d blocks skipped by checksum", wire, skipped)
	require.GreaterOrEqual(t, wire, int64(0))
	require.Less(t, wire, int64(size)/20, "more than 5%% of the volume crossed")
	require.Greater(t, skipped*4096, int64(len(same))*9/10)
	p.equalData(t)
}

// TestVerifyFindsCorruption: blocks corrupted on b behind the daemon's
// back are found by online verify (log line, out-of-sync handler), and the
// Primary resyncs them at once (it renegotiates the connection).
func TestVerifyFindsCorruption(t *testing.T) {
	const size = 64 << 20
	dir := t.TempDir()
	marker := filepath.Join(dir, "oos-handler")
	p := newPairOpts(t, pairOpts{size: size,
		net:      "verify-alg crc32c;",
		handlers: fmt.Sprintf(`out-of-sync "echo $DRBD_RESOURCE peer $DRBD_PEERS >> %s";`, marker),
		fill: func(n string, f *os.File) {
			if n == "a" {
				fillRandom(t, f, 32<<20)
			}
		}})
	p.upConnected(t)
	p.tb(t, "a", "primary", "--force", "r0")
	p.waitSynced(t, 60*time.Second)

	// Corrupt three blocks of b's backing file, two of them adjacent.
	f, err := os.OpenFile(p.disks["b"], os.O_RDWR, 0)
	require.NoError(t, err)
	for _, blk := range []int64{5, 6, 4000} {
		_, err := f.WriteAt(bytes.Repeat([]byte{0xee}, 4096), blk*4096)
		require.NoError(t, err)
	}
	require.NoError(t, f.Close())

	p.tb(t, "a", "verify", "r0")
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(p.Node("a").Log(), "Online verify done") {
		time.Sleep(100 * time.Millisecond)
	}
	require.Contains(t, p.Node("a").Log(), "Online verify done; found 3 4k block out of sync!")
	p.waitFor(t, "b", "cstate", "Connected", 10*time.Second)
	require.Contains(t, p.Node("b").Log(), "found 3 4k block out of sync!")
	// The Primary does not stay Connected UpToDate/UpToDate over the
	// marks (DRBD would, showing oos:12): it renegotiates, and the
	// handshake resyncs the three blocks from it.
	p.waitSynced(t, 30*time.Second)
	require.Contains(t, p.Node("a").Log()+p.Node("b").Log(), "blocks marked out of sync while connected in sync: renegotiating")
	require.Zero(t, p.procDRBD(t, "a").oosKiB)
	// Both nodes run the out-of-sync handler, as DRBD's VerifyS and VerifyT do.
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(marker); strings.Count(string(b), "\n") >= 2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, _ := os.ReadFile(marker)
	require.ElementsMatch(t, []string{"r0 peer a", "r0 peer b"}, strings.Split(strings.TrimSpace(string(got)), "\n"),
		"the out-of-sync handler ran once on each node, with DRBD's environment")

	// A disconnect and connect finds nothing left to resync.
	p.tb(t, "a", "disconnect", "r0")
	p.tb(t, "a", "connect", "r0")
	p.waitSynced(t, 30*time.Second)
	require.Zero(t, p.procDRBD(t, "a").oosKiB)
	p.equalData(t)
}

// TestResyncPrimaryTargetReadsFromPeer: invalidate on the Primary makes
// it a SyncTarget that serves blocks not yet resynced from the peer: a
// client never sees the (corrupted) local copy.
func TestResyncPrimaryTargetReadsFromPeer(t *testing.T) {
	const size = 64 << 20
	var src []byte
	p := newPairOpts(t, pairOpts{size: size,
		fill: func(n string, f *os.File) {
			if n == "a" {
				src = fillRandom(t, f, 48<<20)
			}
		}})
	p.upConnected(t)
	p.tb(t, "a", "primary", "--force", "r0")
	p.waitSynced(t, 60*time.Second)

	// a's local copy of the last 16 MiB of data goes bad behind its back.
	f, err := os.OpenFile(p.disks["a"], os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(make([]byte, 16<<20), 32<<20)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	// Paused, so that the reads come before the resync.
	p.tb(t, "a", "pause-sync", "r0")
	p.tb(t, "a", "invalidate", "r0")
	p.waitFor(t, "a", "cstate", "PausedSyncT", 10*time.Second)
	p.waitFor(t, "b", "cstate", "PausedSyncS", 10*time.Second)
	require.Contains(t, string(must(os.ReadFile(p.statusFile("a")))), "ds:Inconsistent/UpToDate C r--u--")
	require.Equal(t, "Primary/Secondary", strings.TrimSpace(p.tb(t, "a", "role", "r0")))
	c, err := client.Dial(context.Background(), p.nbd["a"], client.Options{Export: "r0"})
	require.NoError(t, err)
	defer c.Close()
	got := make([]byte, 16<<20)
	require.NoError(t, c.ReadAt(got, 32<<20))
	require.Equal(t, src[32<<20:48<<20], got, "a read of a block not yet resynced came from the local disk")
	require.NoError(t, c.Close())
	p.tb(t, "a", "resume-sync", "r0")
	p.waitSynced(t, 60*time.Second)
	data := p.equalData(t)
	require.Equal(t, src, data[:len(src)])
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
