package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
	"github.com/twinblock/twinblock/nbd/client"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/pkg/meta"
)

// pair is two twinblock daemons, nodes a (127.0.0.1) and b (127.0.0.2),
// each with its own disk, config file, control socket and status file:
// internal/harness's Cluster, with the test's t.
type pair struct {
	*harness.Cluster
	dir   string
	disks map[string]string
	confs map[string]string
	nbd   map[string]string // NBD listen address per node
	proxy *harness.Proxy    // between a and b when pairOpts.proxy is set
}

// newPair writes the configuration (secret per node, so that a test can
// make them differ) and creates the metadata on both disks.
func newPair(t *testing.T, size int64, secrets map[string]string, protocol string) *pair {
	t.Helper()
	return newPairOpts(t, pairOpts{size: size, secrets: secrets, protocol: protocol})
}

// pairOpts configure newPairOpts. net, disk and handlers are added to
// the resource's sections; fill, if set, writes each node's disk before
// create-md (the data area keeps it: internal metadata sits at the end).
type pairOpts struct {
	size                int64
	secrets             map[string]string
	protocol            string
	net, disk, handlers string
	fill                func(node string, f *os.File)
	// proxy puts a harness.Proxy on the link: a's config names the
	// proxy as b's address, b's config b's real one.
	proxy bool
}

func newPairOpts(t *testing.T, o pairOpts) *pair {
	t.Helper()
	if o.protocol == "" {
		o.protocol = "C"
	}
	if o.secrets == nil {
		o.secrets = map[string]string{"a": "s", "b": "s"}
	}
	var fill func(string, *os.File) error
	if o.fill != nil {
		fill = func(n string, f *os.File) error { o.fill(n, f); return nil }
	}
	dir := t.TempDir()
	c, err := harness.New(harness.Options{Dir: dir, Bin: twinblockBin, DiskSize: o.size, Proxy: o.proxy, Fill: fill,
		Config: func(v harness.Vars) string {
			return harness.Config(v, o.protocol, o.secrets[v.Self], o.net, o.disk, o.handlers)
		}})
	require.NoError(t, err)
	p := &pair{Cluster: c, dir: dir, disks: map[string]string{}, confs: map[string]string{}, nbd: map[string]string{}, proxy: c.Proxy}
	for name, n := range c.Nodes {
		p.disks[name], p.confs[name], p.nbd[name] = n.DiskPath, n.Conf, n.NBD
	}
	t.Cleanup(func() {
		for _, n := range c.Close() {
			t.Errorf("daemon %s ignored SIGTERM for 10 s", n)
		}
		if t.Failed() {
			for _, name := range c.Names {
				t.Logf("daemon %s log:\n%s", name, c.Nodes[name].Log())
			}
		}
	})
	return p
}

func (p *pair) control(n string) string    { return p.Node(n).Control }
func (p *pair) statusFile(n string) string { return p.Node(n).StatusFile }

// tb runs a twinblock verb as node n and returns its output.
func (p *pair) tb(t *testing.T, n string, args ...string) string {
	t.Helper()
	out, err := p.tbErr(n, args...)
	require.NoError(t, err, "twinblock %s (node %s): %s", strings.Join(args, " "), n, out)
	return out
}

func (p *pair) tbErr(n string, args ...string) (string, error) {
	return p.Node(n).TB(2*time.Minute, args...)
}

// start runs node n's daemon and waits for its control socket.
func (p *pair) start(t *testing.T, n string) {
	t.Helper()
	require.NoError(t, p.Node(n).Start())
}

// waitFor polls node n's one-line query verb until it prints want.
func (p *pair) waitFor(t *testing.T, n, verb, want string, within time.Duration) {
	t.Helper()
	if err := p.Node(n).WaitFor(context.Background(), verb, want, within); err != nil {
		t.Fatalf("%v\n%s", err, p.Node(n).LogTail(40))
	}
}

// dataArea reads the data area (what the export shows) of node n's disk.
func (p *pair) dataArea(t *testing.T, n string) ([]byte, *meta.Snapshot) {
	t.Helper()
	d, err := disk.OpenFile(p.disks[n], disk.FileOptions{ReadOnly: true})
	require.NoError(t, err)
	defer d.Close()
	snap, err := meta.Inspect(d, meta.InternalPlacement, p.disks[n])
	require.NoError(t, err)
	buf := make([]byte, snap.Superblock.DataSize)
	require.NoError(t, d.ReadAt(buf, 0))
	return buf, snap
}

func (p *pair) upConnected(t *testing.T) {
	t.Helper()
	p.start(t, "a")
	p.start(t, "b")
	p.tb(t, "a", "up", "r0")
	p.tb(t, "b", "up", "r0")
	p.waitFor(t, "a", "cstate", "Connected", 15*time.Second)
	p.waitFor(t, "b", "cstate", "Connected", 15*time.Second)
}

// writeBlocks writes a random 4 KiB block at each block number of blocks
// through c, from workers goroutines, and returns what each block last
// received (acknowledged writes only).
func writeBlocks(t *testing.T, c *client.Client, blocks []int64, workers int) map[int64][]byte {
	t.Helper()
	return writeBlocksHooked(t, c, blocks, workers, writeHooks{})
}

// writeHooks let a test act at given points of writeBlocksHooked.
type writeHooks struct {
	// acked, if set, is called after each acknowledged write with the
	// number acknowledged so far; each number is passed exactly once.
	acked func(n int64)
	// feed, if set, is called before blocks[i] is handed to a worker; it
	// may block to hold the remaining writes back.
	feed func(i int)
}

// writeBlocksHooked is writeBlocks with hooks.
func writeBlocksHooked(t *testing.T, c *client.Client, blocks []int64, workers int, h writeHooks) map[int64][]byte {
	t.Helper()
	var mu sync.Mutex
	last := map[int64][]byte{}
	var acks atomic.Int64
	ch := make(chan int64)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range ch {
				buf := make([]byte, 4096)
				_, _ = rand.Read(buf)
				if err := c.WriteAt(buf, b*4096, false); err != nil {
					t.Errorf("write block %d: %v", b, err)
					continue
				}
				mu.Lock()
				last[b] = buf
				mu.Unlock()
				if n := acks.Add(1); h.acked != nil {
					h.acked(n)
				}
			}
		}()
	}
	seen := make(map[int64]bool, len(blocks))
	for i, b := range blocks {
		if h.feed != nil {
			h.feed(i)
		}
		if seen[b] {
			// Two writes of one block could be in flight together, and
			// the one acknowledged last need not be the one applied
			// last: last[b] would be a guess (a 4% flake of
			// TestResyncAfterSecondaryKilled's random blocks).
			continue
		}
		seen[b] = true
		ch <- b
	}
	close(ch)
	wg.Wait()
	return last
}

// TestReplicationBothDisksEqual: two daemons, a real NBD client writing
// through the Primary during the initial sync (the application's writes
// and the resync's meet on the same blocks), then the two backing disks
// compared byte for byte.
func TestReplicationBothDisksEqual(t *testing.T) {
	const size = 64 << 20
	p := newPair(t, size, map[string]string{"a": "s3cret", "b": "s3cret"}, "C")
	p.upConnected(t)
	require.Equal(t, "Inconsistent/Inconsistent", strings.TrimSpace(p.tb(t, "a", "dstate", "r0")))

	// The first promotion needs --force (DRBD's old spelling works too).
	_, err := p.tbErr("a", "primary", "r0")
	require.Error(t, err)
	p.tb(t, "a", "--", "--overwrite-data-of-peer", "primary", "r0")
	p.waitFor(t, "b", "role", "Secondary/Primary", 5*time.Second)

	// The Secondary refuses NBD clients; the Primary serves.
	_, err = client.Dial(context.Background(), p.nbd["b"], client.Options{Export: "r0"})
	require.Error(t, err)
	c, err := client.Dial(context.Background(), p.nbd["a"], client.Options{Export: "r0"})
	require.NoError(t, err)
	blocks := make([]int64, 2000)
	for i := range blocks {
		blocks[i] = int64(i*7919) % (size / 8192) // spread over the first half
	}
	last := writeBlocks(t, c, blocks, 16)
	require.NoError(t, c.Flush())

	// secondary fails while the client is connected (DRBD: device in use).
	out, err := p.tbErr("a", "secondary", "r0")
	require.Error(t, err)
	require.Contains(t, out, "(-12) Device is held open by someone")
	require.NoError(t, c.Close())

	// The writes ran during the initial sync; it ends, and the status
	// file (DRBD 8.4's /proc/drbd) says so.
	p.waitFor(t, "b", "dstate", "UpToDate/UpToDate", 60*time.Second)
	re := regexp.MustCompile(`(?m)^ 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----$`)
	var st []byte
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !re.Match(st); time.Sleep(100 * time.Millisecond) {
		st, err = os.ReadFile(p.statusFile("a"))
		require.NoError(t, err)
	}
	require.Regexp(t, re, string(st))

	p.tb(t, "a", "down", "r0")
	p.tb(t, "b", "down", "r0")
	da, _ := p.dataArea(t, "a")
	db, _ := p.dataArea(t, "b")
	for b, want := range last {
		require.Equal(t, want, da[b*4096:(b+1)*4096], "block %d on a", b)
	}
	require.True(t, bytes.Equal(da, db), "the two data areas differ")
}

// TestReplicationSecondaryKilled: SIGKILL of the Secondary during writes.
// The Primary goes on; afterwards every block where the two disks differ
// is marked out of sync in the Primary's bitmap.
func TestReplicationSecondaryKilled(t *testing.T) {
	const size = 64 << 20
	p := newPair(t, size, map[string]string{"a": "k", "b": "k"}, "C")
	p.upConnected(t)
	p.tb(t, "a", "primary", "r0", "--force")
	c, err := client.Dial(context.Background(), p.nbd["a"], client.Options{Export: "r0"})
	require.NoError(t, err)
	defer c.Close()

	blocks := make([]int64, 6000)
	for i := range blocks {
		blocks[i] = int64(i*104729) % (size / 4096 / 2)
	}
	// The kill lands after killAfter acknowledged writes, with the
	// workers still writing; the writes from holdFrom on are held back
	// until the Secondary is dead, so some are certainly issued after it.
	const killAfter, holdFrom = 500, 3000
	reached := make(chan struct{})
	resume := make(chan struct{})
	var resumeOnce sync.Once
	release := func() { resumeOnce.Do(func() { close(resume) }) }
	var last map[int64][]byte
	done := make(chan struct{})
	defer func() { release(); <-done }() // on a failure, before c.Close
	go func() {
		defer close(done)
		last = writeBlocksHooked(t, c, blocks, 16, writeHooks{
			acked: func(n int64) {
				if n == killAfter {
					close(reached)
				}
			},
			feed: func(i int) {
				if i == holdFrom {
					<-resume
				}
			},
		})
	}()
	select {
	case <-reached:
	case <-done:
		t.Fatalf("the writer ended before %d writes were acknowledged", killAfter)
	case <-time.After(60 * time.Second):
		t.Fatalf("fewer than %d writes acknowledged within 60 s", killAfter)
	}
	p.Node("b").Kill()
	release()
	<-done
	require.NoError(t, c.Flush())
	p.waitFor(t, "a", "cstate", "WFConnection", 5*time.Second)
	p.waitFor(t, "a", "role", "Primary/Unknown", time.Second)
	require.NoError(t, c.Close())
	p.tb(t, "a", "down", "r0")

	da, snap := p.dataArea(t, "a")
	db, _ := p.dataArea(t, "b")
	for b, want := range last {
		require.Equal(t, want, da[b*4096:(b+1)*4096], "acknowledged write to block %d missing on the Primary", b)
	}
	differ := 0
	for b := int64(0); b < int64(len(da))/4096; b++ {
		if !bytes.Equal(da[b*4096:(b+1)*4096], db[b*4096:(b+1)*4096]) {
			differ++
			require.True(t, snap.Bitmap.Test(uint64(b)), "block %d differs between the nodes but is not marked out of sync", b)
		}
	}
	t.Logf("%d blocks written, %d differ after the kill, %d marked out of sync", len(last), differ, snap.Bitmap.Count())
	for _, b := range blocks[holdFrom:] {
		require.True(t, snap.Bitmap.Test(uint64(b)), "block %d was written after the kill but is not marked out of sync", b)
	}
}

// TestReplicationWrongSecret: a node with another shared secret never
// connects, and nothing the Primary writes reaches its disk.
func TestReplicationWrongSecret(t *testing.T) {
	const size = 16 << 20
	p := newPair(t, size, map[string]string{"a": "right", "b": "wrong"}, "C")
	p.start(t, "a")
	p.start(t, "b")
	p.tb(t, "a", "up", "r0")
	p.tb(t, "b", "up", "r0")
	p.waitFor(t, "a", "cstate", "StandAlone", 15*time.Second)
	p.waitFor(t, "b", "cstate", "StandAlone", 15*time.Second)
	// An attached disk cannot be reformatted under the daemon.
	out, err := p.tbErr("a", "create-md", "--force", "r0")
	require.Error(t, err)
	require.Contains(t, out, "in use")
	require.Contains(t, p.Node("a").Log()+p.Node("b").Log(), "authentication")
	p.tb(t, "a", "primary", "r0", "--force")
	c, err := client.Dial(context.Background(), p.nbd["a"], client.Options{Export: "r0"})
	require.NoError(t, err)
	buf := bytes.Repeat([]byte{0xab}, 1<<20)
	require.NoError(t, c.WriteAt(buf, 0, true))
	require.NoError(t, c.Close())
	p.tb(t, "a", "down", "r0")
	p.tb(t, "b", "down", "r0")
	db, _ := p.dataArea(t, "b")
	require.Equal(t, make([]byte, len(db)), db, "data crossed a link that failed authentication")
}

// TestDaemonBadConfig: errors name file and line, and a second daemon on
// the same control socket is refused.
func TestDaemonBadConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "bad.conf")
	require.NoError(t, os.WriteFile(conf, []byte("resource r0 {\n  net { frobnicate yes; }\n}\n"), 0o644))
	out, err := exec.Command(twinblockBin, "--config", conf, "--node", "a", "--control", filepath.Join(dir, "c.sock"), "daemon").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), conf+":2")

	p := newPair(t, 8<<20, map[string]string{"a": "x", "b": "x"}, "C")
	p.start(t, "a")
	out, err = exec.Command(twinblockBin, "--config", p.confs["a"], "--node", "a", "--control", p.control("a"), "daemon",
		"--status-file", filepath.Join(dir, "s")).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "another twinblock daemon is running")
	fi, err := os.Stat(p.control("a"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

// TestDaemonSIGTERMClean: SIGTERM on a Primary with a client connected
// finishes cleanly: the metadata afterwards says neither Primary nor
// crashed, and the activity log is clean.
func TestDaemonSIGTERMClean(t *testing.T) {
	p := newPair(t, 16<<20, map[string]string{"a": "x", "b": "x"}, "C")
	p.start(t, "a")
	p.tb(t, "a", "up", "r0")
	p.tb(t, "a", "primary", "--force", "r0")
	c, err := client.Dial(context.Background(), p.nbd["a"], client.Options{Export: "r0"})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.WriteAt(block4k(0x5a), 0, false))
	require.True(t, p.Node("a").Terminate(), "SIGTERM ignored")
	require.True(t, p.Node("a").ExitedCleanly(), p.Node("a").Log())
	_, snap := p.dataArea(t, "a")
	f := snap.Superblock.Flags
	require.Zero(t, f&genid.FlagPrimaryInd, "flags %s", f)
	require.Zero(t, f&genid.FlagCrashedPrimary, "flags %s", f)
	require.NotZero(t, f&genid.FlagALClean, "flags %s", f)
	require.Nil(t, snap.ALExtents)
}

func block4k(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }
