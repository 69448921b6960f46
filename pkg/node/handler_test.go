package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/pkg/netsim"
)

// handlerScript writes a handler script that appends one line per run
// to log: its arguments, then DRBD's environment.
func handlerScript(t *testing.T, dir string) (script, log string) {
	t.Helper()
	script, log = filepath.Join(dir, "handler.sh"), filepath.Join(dir, "handlers.log")
	body := `#!/bin/sh
echo "$1 res=$DRBD_RESOURCE minor=$DRBD_MINOR peers=$DRBD_PEERS peer=$DRBD_PEER_ADDRESS dev=$DRBD_BACKING_DEV conf=$DRBD_CONF tb=$TWINBLOCK_HANDLER" >> ` + log + "\n"
	require.NoError(t, os.WriteFile(script, []byte(body), 0o755))
	return script, log
}

// handlerLines reads the handler log ("" lines when it does not exist).
func handlerLines(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// freshDisk is a crashable backing disk with fresh internal metadata
// (Inconsistent until a forced promotion or a resync).
func freshDisk(t *testing.T, size int64) *disk.Crash {
	t.Helper()
	d := disk.NewCrash(size)
	l, err := meta.ComputeLayout(meta.InternalPlacement, size, size, meta.DefaultGranularity, meta.DefaultALExtents)
	require.NoError(t, err)
	_, err = meta.Format(d, l)
	require.NoError(t, err)
	return d
}

// startNode runs cfg's host name on d in an in-memory environment.
func startNode(t *testing.T, cfg *config.Resource, name string, nw *netsim.Network, clk clock.Clock, d disk.Disk) *Resource {
	t.Helper()
	env := Env{Net: nw, Clock: clk, OpenDisk: func(path string) (disk.Disk, error) {
		if path != name+".img" {
			return nil, fmt.Errorf("test: no disk %s", path)
		}
		return d, nil
	}}
	r, err := NewResourceEnv(cfg, name, nil, nil, env)
	require.NoError(t, err)
	r.Start(context.Background())
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// settle advances clk a tick at a time until ok holds (at most limit
// ticks) and reports whether it does.
func settle(clk *clock.Fake, limit int, ok func() bool) bool {
	for range limit {
		if ok() {
			return true
		}
		clk.Advance(clock.Tick)
		time.Sleep(time.Millisecond)
	}
	return ok()
}

// TestLocalIOErrorHandler: on-io-error call-local-io-error detaches the
// failed disk as detach does, and runs the local-io-error handler once
// for the failure, with DRBD's environment; detach and pass_on run
// nothing.
func TestLocalIOErrorHandler(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		disk    string // after the failure
		handler bool
	}{
		{"call-local-io-error", "Diskless", true},
		{"detach", "Diskless", false},
		{"pass_on", "UpToDate", false},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			dir := t.TempDir()
			script, log := handlerScript(t, dir)
			cfg, err := config.Parse(filepath.Join(dir, "r.conf"), []byte(fmt.Sprintf(`resource r0 {
  disk { on-io-error %s; }
  handlers { local-io-error "%s local-io-error"; }
  on a { address 127.0.0.1:7789; disk a.img; device minor 3; }
  on b { address 127.0.0.2:7789; disk b.img; }
}
`, tc.policy, script)))
			require.NoError(t, err)
			faulty := disk.NewFaulty(freshDisk(t, 4<<20), nil)
			clk := clock.NewFake(time.Unix(1_800_000_000, 0))
			r := startNode(t, cfg.Resources[0], "a", netsim.New(), clk, faulty)
			ctx := context.Background()
			require.NoError(t, r.Do(ctx, fsm.AttachBegin{}))
			require.NoError(t, r.Do(ctx, fsm.Promote{Force: true}))
			require.Equal(t, "UpToDate", r.Status().Disk)

			faulty.SetInjector(disk.FailAll(disk.OpWrite))
			block := make([]byte, 4096)
			require.Error(t, r.dev.WriteAt(block, 0, false), "no peer takes it")
			require.True(t, settle(clk, 100, func() bool {
				return r.Status().Disk == tc.disk && (!tc.handler || len(handlerLines(t, log)) > 0)
			}), "disk %s, handler log %q", r.Status().Disk, handlerLines(t, log))
			_ = r.dev.WriteAt(block, 4096, false) // fails too; the disk is gone or failing
			require.NoError(t, r.Close())         // waits for the handlers

			lines := handlerLines(t, log)
			if !tc.handler {
				assert.Empty(t, lines)
				return
			}
			assert.Equal(t, []string{fmt.Sprintf("local-io-error res=r0 minor=3 peers=b peer=127.0.0.2 dev=a.img conf=%s tb=local-io-error",
				filepath.Join(dir, "r.conf"))}, lines, "once per failure")
		})
	}
}

// TestRoleHandlers: before-promote and before-demote run, and finish,
// before the role changes, and their failure refuses it;
// after-promote and after-demote run once it changed (twinblock's
// handlers for the service on top: a floating IP, a database).
func TestRoleHandlers(t *testing.T) {
	dir := t.TempDir()
	script, log := handlerScript(t, dir)
	gate := filepath.Join(dir, "refuse")
	cfg, err := config.Parse(filepath.Join(dir, "r.conf"), []byte(fmt.Sprintf(`resource r0 {
  handlers {
    before-promote "test ! -e %[2]s && %[1]s before-promote";
    after-promote "%[1]s after-promote";
    before-demote "test ! -e %[2]s && %[1]s before-demote";
    after-demote "%[1]s after-demote";
  }
  on a { address 127.0.0.1:7789; disk a.img; }
  on b { address 127.0.0.2:7789; disk b.img; }
}
`, script, gate)))
	require.NoError(t, err)
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	r := startNode(t, cfg.Resources[0], "a", netsim.New(), clk, freshDisk(t, 4<<20))
	ctx := context.Background()
	require.NoError(t, r.Do(ctx, fsm.AttachBegin{}))
	names := func() []string {
		var out []string
		for _, l := range handlerLines(t, log) {
			out = append(out, strings.Fields(l)[0])
		}
		return out
	}

	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	err = r.Do(ctx, fsm.Promote{Force: true})
	require.ErrorContains(t, err, "handler before-promote")
	require.Equal(t, "Secondary", r.Status().Role, "a failed before-promote promoted")
	require.NoError(t, os.Remove(gate))

	require.NoError(t, r.Do(ctx, fsm.Promote{Force: true}))
	require.Equal(t, "Primary", r.Status().Role)
	require.True(t, settle(clk, 100, func() bool { return len(names()) == 2 }), "handlers %q", names())
	require.Equal(t, []string{"before-promote", "after-promote"}, names())
	require.NoError(t, r.Do(ctx, fsm.Promote{}), "promoting a Primary again runs nothing")

	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	require.ErrorContains(t, r.Do(ctx, fsm.Demote{}), "handler before-demote")
	require.Equal(t, "Primary", r.Status().Role, "a failed before-demote demoted")
	require.NoError(t, os.Remove(gate))
	require.NoError(t, r.Do(ctx, fsm.Demote{}))
	require.NoError(t, r.Close()) // waits for the handlers
	require.Equal(t, []string{"before-promote", "after-promote", "before-demote", "after-demote"}, names())
}
