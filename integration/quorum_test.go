package integration

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
	"github.com/twinblock/twinblock/nbd/client"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/meta"
)

// TestQuorumFailover: three real daemons, a and b with disks and the
// diskless witness w (options { quorum majority; }). The promotion is
// the group's: b is refused while a is Primary; a is SIGKILLed, and b's
// promotion is granted once the group counts a gone (the time is
// logged). b serves every write a acknowledged, and more; a, back,
// learns it was replaced, is resynced from b, and both disks end equal.
func TestQuorumFailover(t *testing.T) {
	_, a, b := quorumCluster(t, quorumOpts{})
	ctx := context.Background()
	out, err := b.TB(30*time.Second, "primary", "r0")
	require.Error(t, err, "b promoted while a is Primary: %s", out)
	require.Contains(t, out, "another node is Primary")

	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	want := bytes.Repeat([]byte("quorum-failover!"), (1<<20)/16)
	require.NoError(t, cl.WriteAt(want, 4096, true))
	_ = cl.Close()

	killed := time.Now()
	a.Kill()
	promoteWhenGranted(t, b, 50*time.Millisecond, "another node is Primary")
	promoted := time.Since(killed)
	t.Logf("a SIGKILLed; b's promotion granted after %v (one verb every 50 ms)", promoted.Round(time.Millisecond))
	// The status file's quorum line, and status --json's.
	require.Eventually(t, func() bool {
		st, err := os.ReadFile(b.StatusFile)
		return err == nil && strings.Contains(string(st), "\tquorum: yes, epoch 2, Primary b, leader ")
	}, 10*time.Second, 100*time.Millisecond, "b's status file has no quorum line for epoch 2")
	js, err := b.TB(10*time.Second, "status", "--json", "r0")
	require.NoError(t, err, js)
	require.Contains(t, js, `"epoch": 2`)

	cl, err = client.Dial(ctx, b.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	got := make([]byte, len(want))
	require.NoError(t, cl.ReadAt(got, 4096))
	require.True(t, bytes.Equal(want, got), "b lacks a write a acknowledged")
	more := bytes.Repeat([]byte("written-on-b...!"), (1<<20)/16)
	require.NoError(t, cl.WriteAt(more, 8<<20, true), "b writes alone once the group outdated a")
	_ = cl.Close()

	// a comes back: Secondary, behind b's epoch, resynced from b.
	require.NoError(t, a.StartUp())
	require.NoError(t, a.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))
	role, err := a.TB(10*time.Second, "role", "r0")
	require.NoError(t, err)
	require.Equal(t, "Secondary/Primary", strings.TrimSpace(role))

	out, err = b.TB(30*time.Second, "down", "r0")
	require.NoError(t, err, out)
	out, err = a.TB(30*time.Second, "down", "r0")
	require.NoError(t, err, out)
	da, db := readDataArea(t, a.Image), readDataArea(t, b.Image)
	require.True(t, bytes.Equal(da[4096:4096+len(want)], want), "a lacks the first write")
	require.True(t, bytes.Equal(da[8<<20:8<<20+len(more)], more), "a lacks b's write")
	require.True(t, bytes.Equal(da, db), "the two data areas differ")
}

// TestQuorumStalePrimaryAcknowledgesNothing: a is frozen (SIGSTOP)
// while it is Primary with a client connected; b is promoted once the
// group counts a gone. a, thawed, still has its client and believes it
// is Primary: every write it is sent fails (it is out of quorum, then
// its fence-peer is refused as stale), and it demotes itself. No write
// is acknowledged by both Primaries: b's data is what it wrote.
func TestQuorumStalePrimaryAcknowledgesNothing(t *testing.T) {
	_, a, b := quorumCluster(t, quorumOpts{})
	ctx := context.Background()

	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	defer cl.Close()
	blk := bytes.Repeat([]byte{0xa1}, 4096)
	require.NoError(t, cl.WriteAt(blk, 0, true))

	a.Stop()
	promoteWhenGranted(t, b, 50*time.Millisecond, "")
	clb, err := client.Dial(ctx, b.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	defer clb.Close()
	mine := bytes.Repeat([]byte{0xb2}, 4096)
	require.NoError(t, clb.WriteAt(mine, 4096, true))

	a.Cont()
	stale := bytes.Repeat([]byte{0xee}, 4096)
	for i := range 20 {
		err := cl.WriteAt(stale, 4096, true)
		require.Error(t, err, "the replaced Primary acknowledged write %d", i)
		if err != nil && !a.Alive() {
			break
		}
	}
	// Demoted (the peer's role unknown: both took a new generation while
	// apart, a split brain that the administrator resolves as in DRBD,
	// the replaced node discarding its data).
	require.NoError(t, a.WaitFor(ctx, "role", "Secondary/Unknown", 30*time.Second), "the replaced Primary did not demote")
	for _, args := range [][]string{{"disconnect", "r0"}, {"connect", "--discard-my-data", "r0"}} {
		out, err := a.TB(30*time.Second, args...)
		require.NoError(t, err, out)
	}
	// b may have seen the split brain (StandAlone) or not yet
	// (WFConnection): disconnect, then connect, works for both.
	for _, args := range [][]string{{"disconnect", "r0"}, {"connect", "r0"}} {
		out, err := b.TB(30*time.Second, args...)
		require.NoError(t, err, out)
	}
	require.NoError(t, a.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))

	got := make([]byte, 4096)
	require.NoError(t, clb.ReadAt(got, 4096))
	require.Equal(t, mine, got, "b's block was overwritten")
	require.NoError(t, clb.ReadAt(got, 0))
	require.Equal(t, blk, got, "b lacks a's acknowledged write")
}

// TestQuorumAutoFailover: with auto-failover yes, the Secondary that
// lost its Primary (SIGKILL) promotes itself once the group counts the
// Primary gone, with no command; the time from the kill until it serves
// is logged. It holds the write the Primary acknowledged.
func TestQuorumAutoFailover(t *testing.T) {
	_, a, b := quorumCluster(t, quorumOpts{autoFailover: true})
	ctx := context.Background()
	var err error
	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	want := bytes.Repeat([]byte("auto-failover..!"), (1<<20)/16)
	require.NoError(t, cl.WriteAt(want, 0, true))
	_ = cl.Close()

	killed := time.Now()
	a.Kill()
	var clb *client.Client
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if clb, err = client.Dial(ctx, b.NBD, client.Options{Export: "r0"}); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "b never took over: %v", err)
	}
	defer clb.Close()
	t.Logf("a SIGKILLed; b serves %v later, by itself", time.Since(killed).Round(time.Millisecond))
	got := make([]byte, len(want))
	require.NoError(t, clb.ReadAt(got, 0))
	require.True(t, bytes.Equal(want, got), "b lacks a write a acknowledged")
	require.NoError(t, clb.WriteAt(want, 4<<20, true), "b writes alone")
}

// TestQuorumCutLinkNoSplitBrain: with auto-failover yes, the peer link
// alone is cut (a proxy; the group's traffic goes on). The Secondary
// lost its Primary but the group still hears it: it is not promoted,
// the Primary goes on alone once the group outdated its peer, and no
// split brain follows. Healed, the peer is resynced and cleared in the
// group; when the Primary then dies, the peer takes over by itself with
// every write.
func TestQuorumCutLinkNoSplitBrain(t *testing.T) {
	c, a, b := quorumCluster(t, quorumOpts{autoFailover: true, proxy: true})
	ctx := context.Background()
	var err error
	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	defer cl.Close()
	blk := func(b byte) []byte { return bytes.Repeat([]byte{b}, 64<<10) }
	require.NoError(t, cl.WriteAt(blk(1), 0, true))

	c.Proxy.Cut()
	require.NoError(t, cl.WriteAt(blk(2), 1<<20, true), "the Primary alone, once the group outdated its peer")
	for range 10 {
		time.Sleep(400 * time.Millisecond)
		role, err := b.TB(10*time.Second, "role", "r0")
		require.NoError(t, err)
		require.Equal(t, "Secondary/Unknown", strings.TrimSpace(role), "b promoted itself while a lives: split brain")
	}
	require.NoError(t, cl.WriteAt(blk(3), 2<<20, true), "the Primary still serves")

	c.Proxy.Heal()
	require.NoError(t, b.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))
	time.Sleep(2 * time.Second) // the Primary clears its peer in the group (a few ms)

	killed := time.Now()
	a.Kill()
	var clb *client.Client
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if clb, err = client.Dial(ctx, b.NBD, client.Options{Export: "r0"}); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "b, resynced and cleared, never took over: %v", err)
	}
	defer clb.Close()
	t.Logf("a SIGKILLed; b serves %v later", time.Since(killed).Round(time.Millisecond))
	for i, off := range []int64{0, 1 << 20, 2 << 20} {
		got := make([]byte, 64<<10)
		require.NoError(t, clb.ReadAt(got, off))
		require.Equal(t, blk(byte(i+1)), got, "write %d", i+1)
	}
}

// TestQuorumFirstBackWaits: "last man standing". Both data nodes die
// together; the first back (b) does not promote itself, even with
// auto-failover (it lost no Primary in this run: it waits for its peer
// or an operator). The operator's primary is granted, since the group
// never outdated b (it held every write a acknowledged), and b serves
// them.
func TestQuorumFirstBackWaits(t *testing.T) {
	_, a, b := quorumCluster(t, quorumOpts{autoFailover: true})
	ctx := context.Background()
	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	want := bytes.Repeat([]byte("last-man-standng"), (1<<20)/16)
	require.NoError(t, cl.WriteAt(want, 0, true))
	_ = cl.Close()

	b.Kill()
	a.Kill()
	require.NoError(t, b.StartUp())
	for range 15 {
		time.Sleep(200 * time.Millisecond)
		role, err := b.TB(10*time.Second, "role", "r0")
		require.NoError(t, err)
		require.Equal(t, "Secondary/Unknown", strings.TrimSpace(role), "the first back promoted itself")
	}
	promoteWhenGranted(t, b, 100*time.Millisecond, "")
	clb, err := client.Dial(ctx, b.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	defer clb.Close()
	got := make([]byte, len(want))
	require.NoError(t, clb.ReadAt(got, 0))
	require.True(t, bytes.Equal(want, got), "b lacks a write a acknowledged")
}

// TestQuorumWitnessThenSecondaryDown: the witness down changes nothing
// for the Primary, which goes on acknowledging writes without a pause
// (it leads the group, so no election runs). With the
// Secondary down too, the Primary is out of quorum: under on-no-quorum
// suspend-io (DRBD 9's default) its client's write is held, and status
// shows suspended:quorum; once the witness is back (a and w are a
// majority, and the group outdates b), the held write is acknowledged
// and reads back.
func TestQuorumWitnessThenSecondaryDown(t *testing.T) {
	c, a, b := quorumCluster(t, quorumOpts{onNoQuorum: "suspend-io"})
	ctx := context.Background()
	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	defer func() { go cl.Close() }() // waits for a held request if the test failed

	blk := func(v byte) []byte { return bytes.Repeat([]byte{v}, 64<<10) }

	// The group hands its leadership to the Primary: losing the witness
	// then costs no election, and no request waits.
	require.Eventually(t, func() bool {
		st, err := os.ReadFile(a.StatusFile)
		return err == nil && strings.Contains(string(st), ", leader a")
	}, 15*time.Second, 100*time.Millisecond, "the leadership never moved to the Primary")
	c.Witness.Kill()
	var slowest time.Duration
	for i := range 10 {
		start := time.Now()
		require.NoError(t, cl.WriteAt(blk(byte(i+1)), int64(i)<<20, true), "the witness down stopped the Primary's writes")
		slowest = max(slowest, time.Since(start))
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("witness down: the slowest of 10 writes took %v", slowest.Round(time.Millisecond))
	require.Less(t, slowest, 400*time.Millisecond, "a write waited for the group while the witness was down")
	st, err := a.TB(10*time.Second, "status", "r0")
	require.NoError(t, err)
	require.NotContains(t, st, "quorum:no", "a and b are a majority")

	b.Kill()
	statusHas := func(want string) func() bool {
		return func() bool { st, _ := a.TB(10*time.Second, "status", "r0"); return strings.Contains(st, want) }
	}
	require.Eventually(t, statusHas("suspended:quorum"), 15*time.Second, 100*time.Millisecond, "a's status never said suspended:quorum")
	// A write sent now is held. (One in flight when b died would need
	// b outdated, and fail after 5 s: docs/quorum.md.)
	done := make(chan error, 1)
	go func() { done <- cl.WriteAt(blk(0xee), 12<<20, true) }()
	select {
	case err := <-done:
		t.Fatalf("a write completed without quorum: %v", err)
	case <-time.After(time.Second):
	}
	st, err = a.TB(10*time.Second, "status", "r0")
	require.NoError(t, err)
	require.Contains(t, st, "quorum:no")

	require.NoError(t, c.Witness.Start())
	select {
	case err := <-done:
		require.NoError(t, err, "the held write failed once quorum returned")
	case <-time.After(30 * time.Second):
		t.Fatal("the held write was not acknowledged after the witness returned")
	}
	got := make([]byte, 64<<10)
	require.NoError(t, cl.ReadAt(got, 12<<20))
	require.Equal(t, blk(0xee), got)
	require.Eventually(t, func() bool { return !statusHas("suspended")() }, 10*time.Second, 100*time.Millisecond, "still suspended")
}

// promoteWhenGranted runs primary on n every pause until the group
// grants it, for at most 30 s; with refusal set, every refusal until then
// must say so (the promotion refused for no other reason).
func promoteWhenGranted(t *testing.T, n *harness.Node, pause time.Duration, refusal string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(pause) {
		out, err := n.TB(30*time.Second, "primary", "r0")
		if err == nil {
			return
		}
		if refusal != "" {
			require.Contains(t, out, refusal, "%s's promotion refused for another reason", n.Name)
		}
		require.True(t, time.Now().Before(deadline), "%s never promoted: %s", n.Name, out)
	}
}

// quorumOpts configure quorumCluster.
type quorumOpts struct {
	autoFailover bool   // options { auto-failover yes; }
	proxy        bool   // a harness.Proxy on the peer link (c.Proxy)
	onNoQuorum   string // on-no-quorum's value ("": the harness's io-error)
}

// quorumSize is the quorum tests' disks.
const quorumSize = 32 << 20

// quorumCluster starts the witness w and the data nodes a and b of a
// quorum resource, and makes a Primary (forced: fresh disks; a committed
// entry of the group) with b UpToDate beside it. The daemons' logs are
// printed if the test fails.
func quorumCluster(t *testing.T, o quorumOpts) (c *harness.Cluster, a, b *harness.Node) {
	t.Helper()
	opts := harness.Options{Dir: t.TempDir(), Bin: twinblockBin, DiskSize: quorumSize, Witness: true, Proxy: o.proxy}
	if o.autoFailover || o.onNoQuorum != "" {
		opts.Config = func(v harness.Vars) string {
			set := "on-no-quorum io-error;"
			if o.onNoQuorum != "" {
				set = "on-no-quorum " + o.onNoQuorum + ";"
			}
			if o.autoFailover {
				set += " auto-failover yes;"
			}
			return strings.Replace(harness.DefaultConfig(v), "on-no-quorum io-error;", set, 1)
		}
	}
	c, err := harness.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, n := range c.Close() {
			t.Errorf("daemon %s ignored SIGTERM for 10 s", n)
		}
		if t.Failed() {
			for _, n := range []*harness.Node{c.Node("a"), c.Node("b"), c.Witness} {
				t.Logf("daemon %s log:\n%s", n.Name, n.LogTail(400))
			}
		}
	})
	a, b = c.Node("a"), c.Node("b")
	require.NoError(t, c.Witness.Start())
	require.NoError(t, a.StartUp())
	require.NoError(t, b.StartUp())
	ctx := context.Background()
	require.NoError(t, a.WaitFor(ctx, "cstate", "Connected", 30*time.Second))
	out, err := a.TB(30*time.Second, "primary", "--force", "r0")
	require.NoError(t, err, out)
	require.NoError(t, b.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))
	return c, a, b
}

// readDataArea reads a node's data area (its disk less the internal
// metadata).
func readDataArea(t *testing.T, path string) []byte {
	t.Helper()
	d, err := disk.OpenFile(path, disk.FileOptions{ReadOnly: true})
	require.NoError(t, err)
	defer d.Close()
	snap, err := meta.Inspect(d, meta.InternalPlacement, path)
	require.NoError(t, err)
	buf := make([]byte, snap.Superblock.DataSize)
	require.NoError(t, d.ReadAt(buf, 0))
	return buf
}
