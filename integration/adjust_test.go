package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
	"github.com/twinblock/twinblock/nbd/client"
)

// editConf rewrites node n's configuration file with edit.
func editConf(t *testing.T, n *harness.Node, edit func(string) string) {
	t.Helper()
	b, err := os.ReadFile(n.Conf)
	require.NoError(t, err)
	next := edit(string(b))
	require.NotEqual(t, string(b), next, "the edit changed nothing")
	require.NoError(t, os.WriteFile(n.Conf, []byte(next), 0o644))
}

// TestAdjust: `adjust` and SIGHUP on a running pair while an NBD client
// writes to the Primary without pause. A changed net option and resync
// rate are applied on the Secondary, then on the Primary (dry run first:
// it changes nothing); a change the Primary cannot take (nbd-listen) is
// refused; every write acknowledged meanwhile reads back and both disks
// end equal. Then a resource added to both files comes up with adjust all,
// and one removed goes away with SIGHUP.
func TestAdjust(t *testing.T) {
	const size = 16 << 20
	a, b := syncedDaemons(t, harness.Options{DiskSize: size})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The writer: 4 KiB blocks, each stamped with its sequence number,
	// round robin over the first 8 MiB; acked[i] is the last sequence
	// acknowledged at block i.
	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	w := startStampWriter(t, cl, 2048) // the first 8 MiB

	bump := func(s string) string {
		return strings.Replace(strings.Replace(s, "ping-int 1;", "ping-int 2; max-buffers 4000;", 1),
			"disk { on-io-error detach;", "disk { on-io-error detach; resync-rate 50M;", 1)
	}
	editConf(t, b, bump)
	out, err := b.TB(60*time.Second, "adjust", "r0")
	require.NoError(t, err, out)
	for _, want := range []string{"r0: net { ping-int 1 -> 2 }", "r0: net { max-buffers (default) -> 4000 }", "r0: disk { resync-rate (default) -> 50M }", "r0: disconnect", "r0: connect"} {
		require.Contains(t, out, want)
	}
	require.NoError(t, a.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))

	editConf(t, a, bump)
	out, err = a.TB(30*time.Second, "-d", "adjust", "r0")
	require.NoError(t, err, out)
	require.Contains(t, out, "dry run, nothing done")
	require.Contains(t, out, "r0: net { ping-int 1 -> 2 }")
	out, err = a.TB(30*time.Second, "-d", "adjust", "r0")
	require.NoError(t, err, out)
	require.Contains(t, out, "r0: net { ping-int 1 -> 2 }", "a dry run applied nothing: the change is still pending")
	out, err = a.TB(60*time.Second, "adjust", "r0")
	require.NoError(t, err, out)
	require.Contains(t, out, "r0: net { ping-int 1 -> 2 }")
	out, err = a.TB(30*time.Second, "adjust", "r0")
	require.NoError(t, err, out)
	require.Empty(t, strings.TrimSpace(out), "adjust again: nothing left to do")
	require.NoError(t, a.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))
	require.NoError(t, b.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))

	// The Primary cannot move its export: refused, nothing changed.
	editConf(t, a, func(s string) string {
		return strings.Replace(s, "nbd-listen "+a.NBD+";", "nbd-listen 127.0.0.1:1;", 1)
	})
	out, err = a.TB(30*time.Second, "adjust", "r0")
	require.Error(t, err, out)
	require.Contains(t, out, "Primary")
	editConf(t, a, func(s string) string {
		return strings.Replace(s, "nbd-listen 127.0.0.1:1;", "nbd-listen "+a.NBD+";", 1)
	})

	time.Sleep(500 * time.Millisecond) // writes after the last adjust
	seq := w.stop(t)
	require.Greater(t, seq, uint64(100), "the writer ran")
	rctx := context.Background()
	require.NoError(t, cl.Flush())
	w.verify(t, cl)
	go cl.Close()
	require.NoError(t, b.WaitFor(rctx, "dstate", "UpToDate/UpToDate", 60*time.Second))
	da, err := a.ReadData(8 << 20)
	require.NoError(t, err)
	db, err := b.ReadData(8 << 20)
	require.NoError(t, err)
	require.True(t, bytes.Equal(da, db), "both disks hold the same data after the adjusts")
	t.Logf("%d writes acknowledged during the adjusts, none lost", seq)

	// A resource added to both files: adjust all brings it up.
	var addr [2]string
	var nbd [2]string
	for i, h := range []string{a.Host, b.Host} {
		addr[i], err = harness.FreeAddr(h)
		require.NoError(t, err)
		nbd[i], err = harness.FreeAddr(h)
		require.NoError(t, err)
	}
	dir := filepath.Dir(a.Conf)
	r1 := fmt.Sprintf(`resource r1 {
  net { ping-int 1; connect-int 1; }
  meta-disk internal;
  on a { address %s; disk %s/a-r1.img; nbd-listen %s; }
  on b { address %s; disk %s/b-r1.img; nbd-listen %s; }
}
`, addr[0], dir, nbd[0], addr[1], dir, nbd[1])
	for _, n := range []*harness.Node{a, b} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n.Name+"-r1.img"), nil, 0o644))
		require.NoError(t, os.Truncate(filepath.Join(dir, n.Name+"-r1.img"), 8<<20))
		editConf(t, n, func(s string) string { return s + r1 })
		out, err := n.TB(30*time.Second, "create-md", "r1")
		require.NoError(t, err, out)
		out, err = n.TB(60*time.Second, "adjust", "all")
		require.NoError(t, err, out)
		require.Contains(t, out, "r1: new resource")
	}
	require.NoError(t, a.WaitFor(rctx, "cstate", "Connected", 30*time.Second), "r0 stays connected")
	waitR1 := func(n *harness.Node) {
		t.Helper()
		require.NoError(t, harness.Until(30*time.Second, func() bool {
			out, err := n.TB(5*time.Second, "cstate", "r1")
			return err == nil && strings.TrimSpace(out) == "Connected"
		}), "r1 on %s", n.Name)
	}
	waitR1(a)
	waitR1(b)

	// Removed from b's file: SIGHUP takes it down and away.
	editConf(t, b, func(s string) string { return strings.Replace(s, r1, "", 1) })
	require.NoError(t, b.Signal(syscall.SIGHUP))
	require.NoError(t, harness.Until(30*time.Second, func() bool {
		_, err := b.TB(5*time.Second, "cstate", "r1")
		var ee *exec.ExitError
		return errors.As(err, &ee) && ee.ExitCode() == 10
	}), "r1 gone from b after SIGHUP:\n%s", b.LogTail(20))
	require.True(t, b.Alive(), "SIGHUP does not end the daemon")
	out, err = b.TB(10*time.Second, "cstate", "r0")
	require.NoError(t, err, out)
	require.Equal(t, "Connected", strings.TrimSpace(out))
}
