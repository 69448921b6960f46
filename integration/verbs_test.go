package integration

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
	"github.com/twinblock/twinblock/nbd/client"
)

// TestNotUpExitCode10: as drbdadm, status, role, cstate and dstate of a
// resource the daemon has not brought up exit with code 10 and say
// "r0: No such resource" on stderr (nothing on stdout); once it is up
// they exit 0.
func TestNotUpExitCode10(t *testing.T) {
	c, err := harness.New(harness.Options{Dir: t.TempDir(), Bin: twinblockBin, DiskSize: 16 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	a := c.Node("a")
	require.NoError(t, a.Start())
	for _, verb := range []string{"status", "role", "cstate", "dstate"} {
		cmd := exec.Command(twinblockBin, "--config", a.Conf, "--node", "a", "--control", a.Control, verb, "r0")
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "%s: %v", verb, err)
		require.Equal(t, 10, ee.ExitCode(), "%s of a resource that is not up", verb)
		require.Contains(t, stderr.String(), "r0: No such resource", verb)
		require.Empty(t, stdout.String(), verb)
	}
	out, err := a.TB(30*time.Second, "up", "r0")
	require.NoError(t, err, out)
	for _, verb := range []string{"status", "role", "cstate", "dstate"} {
		out, err := a.TB(10*time.Second, verb, "r0")
		require.NoError(t, err, "%s once up: %s", verb, out)
	}
}

// TestSuspendIOAndForcedSecondary: drbdadm's suspend-io holds the
// requests a real NBD client sends (status suspended:user) and
// resume-io lets them run; secondary is refused while the client is
// connected, and secondary --force demotes anyway, failing the request
// it held.
func TestSuspendIOAndForcedSecondary(t *testing.T) {
	a, _ := syncedDaemons(t, harness.Options{DiskSize: 16 << 20})
	ctx := context.Background()

	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	defer func() { go cl.Close() }()
	blk := bytes.Repeat([]byte{0x5e}, 4096)
	require.NoError(t, cl.WriteAt(blk, 0, true))

	write := func() chan error {
		done := make(chan error, 1)
		go func() { done <- cl.WriteAt(blk, 8192, true) }()
		return done
	}
	out, err := a.TB(10*time.Second, "suspend-io", "r0")
	require.NoError(t, err, out)
	st, err := a.TB(10*time.Second, "status", "r0")
	require.NoError(t, err)
	require.Contains(t, st, "r0 role:Primary suspended:user")
	held := write()
	select {
	case err := <-held:
		t.Fatalf("a write completed while I/O was suspended: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	out, err = a.TB(10*time.Second, "resume-io", "r0")
	require.NoError(t, err, out)
	select {
	case err := <-held:
		require.NoError(t, err, "the held write failed after resume-io")
	case <-time.After(10 * time.Second):
		t.Fatal("the held write did not run after resume-io")
	}

	out, err = a.TB(10*time.Second, "suspend-io", "r0")
	require.NoError(t, err, out)
	held = write()
	time.Sleep(200 * time.Millisecond)
	out, err = a.TB(30*time.Second, "secondary", "r0")
	require.Error(t, err, "demoted with a client connected: %s", out)
	out, err = a.TB(30*time.Second, "secondary", "--force", "r0")
	require.NoError(t, err, out)
	select {
	case err := <-held:
		require.Error(t, err, "a held write was acknowledged by a demoted node")
	case <-time.After(15 * time.Second):
		t.Fatal("the held write was neither run nor failed after secondary --force")
	}
	require.NoError(t, a.WaitFor(ctx, "role", "Secondary/Secondary", 10*time.Second))
}

// TestWaitConnectAndSync: wait-connect on a node whose peer is not up
// gives up after its timeout (-t 1) and succeeds once the peer comes
// up; wait-sync returns once the initial sync is done, UpToDate on both
// sides.
func TestWaitConnectAndSync(t *testing.T) {
	c, err := harness.New(harness.Options{Dir: t.TempDir(), Bin: twinblockBin, DiskSize: 16 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	a, b := c.Node("a"), c.Node("b")
	require.NoError(t, a.StartUp())
	start := time.Now()
	out, err := a.TB(30*time.Second, "wait-connect", "-t", "1", "r0")
	require.Error(t, err, "connected without a peer: %s", out)
	require.Contains(t, out, "--wfc-timeout of 1s passed")
	require.Less(t, time.Since(start), 10*time.Second)

	go func() { _ = b.StartUp() }()
	out, err = a.TB(60*time.Second, "wait-connect", "r0")
	require.NoError(t, err, out)
	out, err = a.TB(30*time.Second, "primary", "--force", "r0")
	require.NoError(t, err, out)
	out, err = a.TB(120*time.Second, "wait-sync", "r0")
	require.NoError(t, err, out)
	out, err = a.TB(10*time.Second, "dstate", "r0")
	require.NoError(t, err)
	require.Equal(t, "UpToDate/UpToDate", out)
}

// TestOutdate: drbdadm outdate on a disconnected Secondary marks its
// data Outdated; it is refused while connected; the mark survives down
// and up (the metadata), a promotion without --force is refused, and
// connected to its UpToDate peer again the node becomes UpToDate.
// (down and attach: the mark is read back from the metadata.)
func TestOutdate(t *testing.T) {
	a, b := syncedDaemons(t, harness.Options{DiskSize: 16 << 20})
	ctx := context.Background()

	out, err := b.TB(10*time.Second, "outdate", "r0")
	require.Error(t, err, out)
	require.Contains(t, out, "(-17) Refusing to be Outdated while Connected")

	out, err = b.TB(10*time.Second, "disconnect", "r0")
	require.NoError(t, err, out)
	out, err = b.TB(10*time.Second, "outdate", "r0")
	require.NoError(t, err, out)
	require.NoError(t, b.WaitFor(ctx, "dstate", "Outdated/DUnknown", 10*time.Second))
	// down, then attach without connecting: the mark is in the metadata.
	for _, verb := range []string{"down", "attach"} {
		out, err = b.TB(30*time.Second, verb, "r0")
		require.NoError(t, err, out)
	}
	out, err = b.TB(10*time.Second, "dstate", "r0")
	require.NoError(t, err)
	require.Equal(t, "Outdated/DUnknown", out, "the mark did not survive down and attach")
	// get-gi from the running daemons: b consistent but not
	// was-UpToDate; a consistent, UpToDate and Primary.
	out, err = b.TB(10*time.Second, "get-gi", "r0")
	require.NoError(t, err, out)
	require.Regexp(t, `^([0-9A-F]{16}:){4}1:0:0:`, out)
	out, err = a.TB(10*time.Second, "get-gi", "r0")
	require.NoError(t, err, out)
	require.Regexp(t, `^([0-9A-F]{16}:){4}1:1:1:`, out)
	out, err = b.TB(10*time.Second, "primary", "r0")
	require.Error(t, err, "an Outdated node was promoted: %s", out)
	out, err = b.TB(10*time.Second, "connect", "r0")
	require.NoError(t, err, out)
	require.NoError(t, b.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 30*time.Second))
}

// syncedDaemons starts the daemons of a and b (o, with the test's
// directory and binary), brings r0 up on both, makes a Primary (forced:
// fresh disks) and waits until both are UpToDate. The daemons' logs are
// printed if the test fails.
func syncedDaemons(t *testing.T, o harness.Options) (a, b *harness.Node) {
	t.Helper()
	o.Dir, o.Bin = t.TempDir(), twinblockBin
	c, err := harness.New(o)
	require.NoError(t, err)
	a, b = c.Node("a"), c.Node("b")
	t.Cleanup(func() {
		for _, n := range c.Close() {
			t.Errorf("daemon %s ignored SIGTERM for 10 s", n)
		}
		if t.Failed() {
			for _, n := range []*harness.Node{a, b} {
				t.Logf("daemon %s log:\n%s", n.Name, n.LogTail(200))
			}
		}
	})
	require.NoError(t, a.StartUp())
	require.NoError(t, b.StartUp())
	ctx := context.Background()
	require.NoError(t, a.WaitFor(ctx, "cstate", "Connected", 30*time.Second))
	out, err := a.TB(30*time.Second, "primary", "--force", "r0")
	require.NoError(t, err, out)
	require.NoError(t, a.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))
	require.NoError(t, b.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))
	return a, b
}
