package integration

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/nbd/client"
)

// The handler lines: DRBD's environment, under both prefixes. Each node
// writes to its own file, named after its peer (DRBD_PEERS), since the
// handlers section is the same in both configs.
const sbHandlerEcho = `echo $DRBD_RESOURCE $TWINBLOCK_PEERS minor=$DRBD_MINOR peer-address=$TWINBLOCK_PEER_ADDRESS disk=$DRBD_BACKING_DEV conf=$TWINBLOCK_CONF`

func sbHandlers(dir string) string {
	return fmt.Sprintf(`split-brain "%s >> %s/split-brain.$DRBD_PEERS"; initial-split-brain "%s >> %s/initial-split-brain.$TWINBLOCK_PEERS";`,
		sbHandlerEcho, dir, sbHandlerEcho, dir)
}

func peerOf(n string) string {
	if n == "a" {
		return "b"
	}
	return "a"
}

// handlerFile is the file node n's handler appends to.
func handlerFile(dir, handler, n string) string {
	return filepath.Join(dir, handler+"."+peerOf(n))
}

// handlerLine is what node n's handler writes.
func (p *pair) handlerLine(n string) string {
	peerHost := map[string]string{"a": "127.0.0.2", "b": "127.0.0.1"}[n]
	return fmt.Sprintf("r0 %s minor=0 peer-address=%s disk=%s conf=%s", peerOf(n), peerHost, p.disks[n], p.confs[n])
}

// waitHandler polls until node n's handler file has at least want
// lines (handlers run asynchronously) and checks each line; with exact,
// it must have no more.
func (p *pair) waitHandler(t *testing.T, dir, handler, n string, want int, exact bool) {
	t.Helper()
	var lines []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(handlerFile(dir, handler, n))
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) == 0 {
			lines = nil
		}
		if len(lines) >= want {
			break
		}
	}
	if !assert.GreaterOrEqual(t, len(lines), want, "node %s: the %s handler ran %d times, want at least %d", n, handler, len(lines), want) {
		return
	}
	if exact {
		assert.Len(t, lines, want, "node %s: the %s handler ran %d times, want %d", n, handler, len(lines), want)
	}
	for _, l := range lines {
		assert.Equal(t, p.handlerLine(n), l, "node %s: the %s handler's environment", n, handler)
	}
}

// liveData reads the first size bytes (the data area: internal metadata
// sits at the end) of node n's disk while its daemon runs.
func (p *pair) liveData(t *testing.T, n string, size int64) []byte {
	t.Helper()
	f, err := os.Open(p.disks[n])
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, size)
	_, err = f.ReadAt(buf, 0)
	require.NoError(t, err)
	return buf
}

// cutAndWait cuts the link and waits until both nodes noticed.
func (p *pair) cutAndWait(t *testing.T) {
	t.Helper()
	p.proxy.Cut()
	p.waitFor(t, "a", "cstate", "WFConnection", 10*time.Second)
	p.waitFor(t, "b", "cstate", "WFConnection", 10*time.Second)
}

// dialNBD opens an NBD client on node n's export.
func (p *pair) dialNBD(t *testing.T, n string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), p.nbd[n], client.Options{Export: "r0"})
	require.NoError(t, err, "NBD client on %s", n)
	return c
}

// writeAndFlush writes blocks through c and flushes; it returns what
// each block received.
func writeAndFlush(t *testing.T, c *client.Client, blocks []int64) map[int64][]byte {
	t.Helper()
	last := writeBlocks(t, c, blocks, 8)
	require.Len(t, last, len(blocks))
	require.NoError(t, c.Flush())
	return last
}

// checkBlocks asserts that data holds want's blocks.
func checkBlocks(t *testing.T, what string, data []byte, want map[int64][]byte) {
	t.Helper()
	bad := 0
	for b, w := range want {
		if string(data[b*4096:(b+1)*4096]) != string(w) {
			bad++
		}
	}
	assert.Zero(t, bad, "%s: %d of %d blocks do not hold what was written", what, bad, len(want))
}

// sameBlocks asserts that data and ref agree on blocks.
func sameBlocks(t *testing.T, what string, data, ref []byte, blocks map[int64]bool) {
	t.Helper()
	bad := 0
	for b := range blocks {
		if string(data[b*4096:(b+1)*4096]) != string(ref[b*4096:(b+1)*4096]) {
			bad++
		}
	}
	assert.Zero(t, bad, "%s: %d of %d blocks changed", what, bad, len(blocks))
}

func apply(model []byte, writes map[int64][]byte) {
	for b, w := range writes {
		copy(model[b*4096:], w)
	}
}

var reSplitBrainJSON = regexp.MustCompile(`"split-brain":\s*true`)

// checkSplitBrainShown asserts what the status verbs and the status file
// show on node n after an unresolved split brain found by rule 90.
func (p *pair) checkSplitBrainShown(t *testing.T, n string) {
	t.Helper()
	out := p.tb(t, n, "status", "r0")
	assert.Regexp(t, `(?m)^  `+peerOf(n)+` .*\bsplit-brain:yes\b`, out, "node %s: twinblock status, the peer line", n)

	js := p.tb(t, n, "status", "--json", "r0")
	assert.True(t, json.Valid([]byte(js)), "node %s: status --json is not JSON:\n%s", n, js)
	assert.Regexp(t, reSplitBrainJSON, js, "node %s: status --json", n)

	const line = "\n\tsplit-brain: unresolved (uuid_compare rule 90); see: twinblock explain r0\n"
	var st string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, err := os.ReadFile(p.statusFile(n))
		require.NoError(t, err)
		if st = string(b); strings.Contains(st, line) {
			break
		}
	}
	assert.Contains(t, st, line, "node %s: the status file", n)
	assert.Equal(t, "StandAlone", parseProcDRBD(t, st).cs, "node %s: the status file still parses as /proc/drbd", n)
}

// TestSplitBrainManualRecovery: ten times on the same pair, the link is
// cut, the Secondary promoted, both write, the link heals; both nodes
// detect the split brain (rule 90), go StandAlone, run the split-brain
// handlers, move no byte and show it in every status form; then DRBD's
// four-line procedure discards b's changes and resyncs only the blocks
// written on either side since the split. a stays Primary throughout.
func TestSplitBrainManualRecovery(t *testing.T) {
	const size = 32 << 20
	hdir := t.TempDir()
	p := newPairOpts(t, pairOpts{size: size, proxy: true, handlers: sbHandlers(hdir)})
	_, snap := p.dataArea(t, "a")
	dataSize := int64(snap.Superblock.DataSize)
	nblocks := dataSize / 4096

	p.upConnected(t)
	p.tb(t, "a", "primary", "--force", "r0")
	p.waitSynced(t, 60*time.Second)
	ca := p.dialNBD(t, "a")
	defer ca.Close()
	model := make([]byte, dataSize) // what a's export holds: zeros after the initial sync

	const rounds = 10
	for round := 0; round < rounds; round++ {
		completed := false
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			markA, markB := len(p.Node("a").Log()), len(p.Node("b").Log())

			p.cutAndWait(t)
			p.waitFor(t, "a", "role", "Primary/Unknown", 2*time.Second)
			p.waitFor(t, "b", "role", "Secondary/Unknown", 2*time.Second)
			p.tb(t, "b", "primary", "r0")
			p.waitFor(t, "b", "role", "Primary/Unknown", 2*time.Second)

			// 64 blocks on each side, 16 of them on both.
			perm := rand.Perm(int(nblocks))[:112]
			var onA, onB []int64
			for _, b := range perm[:64] {
				onA = append(onA, int64(b))
			}
			for _, b := range perm[48:] {
				onB = append(onB, int64(b))
			}
			touched := map[int64]bool{}
			for _, b := range perm {
				touched[int64(b)] = true
			}
			onlyB := map[int64]bool{}
			for _, b := range perm[64:] {
				onlyB[int64(b)] = true
			}
			onlyA := map[int64]bool{}
			for _, b := range perm[:48] {
				onlyA[int64(b)] = true
			}
			wroteA := writeAndFlush(t, ca, onA)
			cb := p.dialNBD(t, "b")
			defer cb.Close()
			wroteB := writeAndFlush(t, cb, onB)
			before := append([]byte(nil), model...)

			p.proxy.Heal()
			p.waitFor(t, "a", "cstate", "StandAlone", 15*time.Second)
			p.waitFor(t, "b", "cstate", "StandAlone", 15*time.Second)
			p.waitFor(t, "a", "role", "Primary/Unknown", 2*time.Second)
			p.waitFor(t, "b", "role", "Primary/Unknown", 2*time.Second)
			for n, mark := range map[string]int{"a": markA, "b": markB} {
				log := p.Node(n).Log()[mark:]
				assert.Contains(t, log, "uuid_compare()=100 by rule 90", "node %s", n)
				assert.Contains(t, log, "Split-Brain detected but unresolved, dropping connection!", "node %s", n)
				// split-brain: once per round (the recovery's handshake
				// resolves, so it runs none); initial-split-brain: at least
				// once per round (DRBD runs it at every handshake that finds
				// split brain, the recovery's too).
				p.waitHandler(t, hdir, "split-brain", n, round+1, true)
				p.waitHandler(t, hdir, "initial-split-brain", n, round+1, false)
			}

			// No byte moved.
			da, db := p.liveData(t, "a", dataSize), p.liveData(t, "b", dataSize)
			checkBlocks(t, "a after detection", da, wroteA)
			checkBlocks(t, "b after detection", db, wroteB)
			sameBlocks(t, "a's blocks that only b wrote", da, before, onlyB)
			sameBlocks(t, "b's blocks that only a wrote", db, before, onlyA)

			p.checkSplitBrainShown(t, "a")
			p.checkSplitBrainShown(t, "b")
			if out, err := p.tbErr("b", "explain", "r0"); assert.NoError(t, err, "twinblock explain r0 (node b): %s", out) {
				if round == 0 {
					t.Logf("twinblock explain r0 on b:\n%s", out)
				}
				assert.Contains(t, out, "rule 90")
				assert.Contains(t, strings.ToLower(out), "split brain")
				assert.Contains(t, out, "--discard-my-data")
			}

			// DRBD's procedure: b is the victim, a the survivor.
			if round == 0 {
				out, err := p.tbErr("b", "secondary", "r0")
				require.Error(t, err, "secondary with an NBD client connected: %s", out)
			}
			require.NoError(t, cb.Close())
			p.tb(t, "b", "secondary", "r0")
			p.tb(t, "b", "disconnect", "r0")
			if round%2 == 0 {
				p.tb(t, "b", "--", "--discard-my-data", "connect", "r0")
			} else {
				p.tb(t, "b", "connect", "--discard-my-data", "r0")
			}
			p.tb(t, "a", "connect", "r0")
			p.waitSynced(t, 30*time.Second)
			p.waitFor(t, "a", "role", "Primary/Secondary", 2*time.Second)
			p.waitFor(t, "b", "role", "Secondary/Primary", 2*time.Second)

			logA, logB := p.Node("a").Log()[markA:], p.Node("b").Log()[markB:]
			assert.Contains(t, logB, "uuid_compare()=100 by rule 90")
			assert.Contains(t, logB, "Split-Brain detected, manually solved. Sync from peer node")
			assert.Contains(t, logA, "Split-Brain detected, manually solved. Sync from this node")
			wire := logInt(logB, "Resync done", "wire-bytes")
			limit := 1.1 * float64(len(touched)) * 4096
			t.Logf("round %d: %d blocks written on a, %d on b, %d distinct; the resync sent %d bytes (limit %.0f)",
				round, len(wroteA), len(wroteB), len(touched), wire, limit)
			assert.Positive(t, wire, "no \"Resync done ... wire-bytes=\" on b for this round")
			assert.LessOrEqual(t, float64(wire), limit, "the resync sent more than the blocks changed since the split")

			apply(model, wroteA)
			da, db = p.liveData(t, "a", dataSize), p.liveData(t, "b", dataSize)
			sa, sb := sha256.Sum256(da), sha256.Sum256(db)
			t.Logf("round %d: sha256 a %x, b %x", round, sa, sb)
			assert.Equal(t, sa, sb, "the data areas differ after the recovery")
			assert.True(t, string(da) == string(model), "a's data is not what a wrote")
			checkBlocks(t, "b after the recovery: a's writes win", db, wroteA)
			sameBlocks(t, "b after the recovery: blocks only b wrote are back to the pre-split content", db, before, onlyB)
			assert.NotContains(t, p.tb(t, "a", "status", "r0"), "split-brain", "the split brain is resolved")
			completed = true // not reached after a fatal failure
		})
		if !completed {
			break // the pair is in no known state: stop
		}
	}
	require.NoError(t, ca.Close())
	data := p.equalData(t)
	require.True(t, string(data) == string(model), "the final data is not what a wrote")
}

// waitHandshake waits until node a's log since markA holds every line of
// wantA and node b's since markB every line of wantB, and returns both
// logs since the marks. A sync handshake logs its lines one by one, so
// the test waits for each line it checks, not for the first one.
func (p *pair) waitHandshake(t *testing.T, markA, markB int, wantA, wantB []string) (string, string) {
	t.Helper()
	missing := func(log string, want []string) []string {
		var m []string
		for _, w := range want {
			if !strings.Contains(log, w) {
				m = append(m, w)
			}
		}
		return m
	}
	var logA, logB string
	var missA, missB []string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		logA, logB = p.Node("a").Log()[markA:], p.Node("b").Log()[markB:]
		missA, missB = missing(logA, wantA), missing(logB, wantB)
		if len(missA) == 0 && len(missB) == 0 {
			return logA, logB
		}
	}
	t.Fatalf("the sync handshake's lines did not all appear within 15 s\na lacks %q:\n%s\nb lacks %q:\n%s", missA, logA, missB, logB)
	return "", ""
}

// policyPair is a pair behind a proxy, synced, with a Primary.
func policyPair(t *testing.T, net string) (*pair, int64) {
	t.Helper()
	const size = 32 << 20
	p := newPairOpts(t, pairOpts{size: size, proxy: true, net: net})
	_, snap := p.dataArea(t, "a")
	p.upConnected(t)
	p.tb(t, "a", "primary", "--force", "r0")
	p.waitSynced(t, 60*time.Second)
	return p, int64(snap.Superblock.DataSize)
}

// TestSplitBrainPolicyDiscardZeroChanges: with after-sb-0pri
// discard-zero-changes, a split brain where b was promoted but wrote
// nothing, met with both Secondary, resolves itself: b becomes
// SyncTarget and gets a's writes.
func TestSplitBrainPolicyDiscardZeroChanges(t *testing.T) {
	p, dataSize := policyPair(t, "after-sb-0pri discard-zero-changes;")
	markA, markB := len(p.Node("a").Log()), len(p.Node("b").Log())
	p.cutAndWait(t)

	ca := p.dialNBD(t, "a")
	blocks := make([]int64, 48)
	for i, b := range rand.Perm(int(dataSize / 4096))[:len(blocks)] {
		blocks[i] = int64(b)
	}
	wroteA := writeAndFlush(t, ca, blocks)
	require.NoError(t, ca.Close())
	p.tb(t, "a", "secondary", "r0")
	// b: a new data generation of its own, with no change in it.
	p.tb(t, "b", "primary", "r0")
	p.tb(t, "b", "secondary", "r0")
	p.waitFor(t, "a", "role", "Secondary/Unknown", 2*time.Second)
	p.waitFor(t, "b", "role", "Secondary/Unknown", 2*time.Second)

	p.proxy.Heal()
	logA, logB := p.waitHandshake(t, markA, markB,
		[]string{"uuid_compare()=100 by rule 90", "Split-Brain detected, 0 primaries, automatically solved. Sync from this node"},
		[]string{"uuid_compare()=100 by rule 90", "Split-Brain detected, 0 primaries, automatically solved. Sync from peer node"})
	assert.NotContains(t, logA+logB, "Split-Brain detected but unresolved")
	p.waitSynced(t, 30*time.Second)
	logB = p.Node("b").Log()[markB:]
	wire := logInt(logB, "Resync done", "wire-bytes")
	t.Logf("%d blocks written on a alone; the resync to b sent %d bytes", len(wroteA), wire)
	assert.Positive(t, wire)
	assert.LessOrEqual(t, float64(wire), 1.1*float64(len(wroteA))*4096)
	require.Equal(t, "Secondary/Secondary", strings.TrimSpace(p.tb(t, "a", "role", "r0")))

	data := p.equalData(t)
	checkBlocks(t, "after the automatic recovery", data, wroteA)
}

// TestSplitBrainPolicyDiscardSecondary: with after-sb-1pri
// discard-secondary, a split brain met with a Primary (a) and a Secondary
// (b, which was Primary and wrote while apart) resolves itself: a is the
// source, b's changes are discarded.
func TestSplitBrainPolicyDiscardSecondary(t *testing.T) {
	p, dataSize := policyPair(t, "after-sb-1pri discard-secondary;")
	markA, markB := len(p.Node("a").Log()), len(p.Node("b").Log())
	p.cutAndWait(t)

	perm := rand.Perm(int(dataSize / 4096))[:80]
	var onA, onB []int64
	for _, b := range perm[:48] {
		onA = append(onA, int64(b))
	}
	for _, b := range perm[32:] {
		onB = append(onB, int64(b))
	}
	onlyB := map[int64]bool{}
	for _, b := range perm[48:] {
		onlyB[int64(b)] = true
	}
	ca := p.dialNBD(t, "a")
	defer ca.Close()
	wroteA := writeAndFlush(t, ca, onA)
	p.tb(t, "b", "primary", "r0")
	cb := p.dialNBD(t, "b")
	writeAndFlush(t, cb, onB)
	require.NoError(t, cb.Close())
	p.tb(t, "b", "secondary", "r0")

	p.proxy.Heal()
	logA, logB := p.waitHandshake(t, markA, markB,
		[]string{"uuid_compare()=100 by rule 90", "Split-Brain detected, 1 primaries, automatically solved. Sync from this node"},
		[]string{"uuid_compare()=100 by rule 90", "Split-Brain detected, 1 primaries, automatically solved. Sync from peer node"})
	assert.NotContains(t, logA+logB, "Split-Brain detected but unresolved")
	p.waitSynced(t, 30*time.Second)
	p.waitFor(t, "a", "role", "Primary/Secondary", 2*time.Second)
	logB = p.Node("b").Log()[markB:]
	wire := logInt(logB, "Resync done", "wire-bytes")
	t.Logf("%d blocks on a, %d on b, %d distinct; the resync sent %d bytes", len(onA), len(onB), len(perm), wire)
	assert.Positive(t, wire)
	assert.LessOrEqual(t, float64(wire), 1.1*float64(len(perm))*4096)

	require.NoError(t, ca.Close())
	data := p.equalData(t)
	checkBlocks(t, "a's writes win", data, wroteA)
	sameBlocks(t, "blocks only b wrote are back to the pre-split content (zeros)", data, make([]byte, dataSize), onlyB)
}

// TestUnrelatedDataRefused: two nodes whose metadata was created
// independently and that each started data generations of their own,
// never having met, refuse each other: both StandAlone, "Unrelated data,
// aborting!", no byte moved.
//
// Forced promotions of two fresh disks alone are not enough: both bitmap
// UUIDs would be the "just created" UUID (4), and DRBD's rule 90 calls
// that a split brain. Four new-current-uuid on each disk first push the
// 4 out of the tuple, so the two tuples share nothing (rule 1000).
func TestUnrelatedDataRefused(t *testing.T) {
	const size = 16 << 20
	p := newPairOpts(t, pairOpts{size: size})
	for _, n := range []string{"a", "b"} {
		for range 4 {
			p.tb(t, n, "new-current-uuid", "r0")
		}
		t.Logf("node %s: %s", n, strings.TrimSpace(p.tb(t, n, "show-gi", "r0")))
	}
	p.start(t, "a")
	p.start(t, "b")

	// Each node alone: up, forced promotion, writes, demotion.
	wrote := map[string]map[int64][]byte{}
	alone := func(n string, blocks []int64) {
		p.tb(t, n, "up", "r0")
		p.waitFor(t, n, "cstate", "WFConnection", 5*time.Second)
		p.tb(t, n, "primary", "--force", "r0")
		c := p.dialNBD(t, n)
		wrote[n] = writeAndFlush(t, c, blocks)
		require.NoError(t, c.Close())
		p.tb(t, n, "secondary", "r0")
	}
	alone("a", []int64{0, 1, 2, 100})
	p.tb(t, "a", "disconnect", "r0")
	p.waitFor(t, "a", "cstate", "StandAlone", 5*time.Second)
	alone("b", []int64{1, 2, 3, 200})

	p.tb(t, "a", "connect", "r0")
	p.waitFor(t, "a", "cstate", "StandAlone", 15*time.Second)
	p.waitFor(t, "b", "cstate", "StandAlone", 15*time.Second)
	for _, n := range []string{"a", "b"} {
		log := p.Node(n).Log()
		assert.Contains(t, log, "uuid_compare()=-1000 by rule 1000", "node %s", n)
		assert.Contains(t, log, "Unrelated data, aborting!", "node %s", n)
		assert.NotContains(t, log, "Split-Brain detected", "node %s", n)
	}
	p.tb(t, "a", "down", "r0")
	p.tb(t, "b", "down", "r0")
	for _, n := range []string{"a", "b"} {
		d, _ := p.dataArea(t, n)
		checkBlocks(t, "node "+n, d, wrote[n])
		assert.Equal(t, make([]byte, 4096), d[4*4096:5*4096], "node %s: block 4, which nobody wrote", n)
	}
}
