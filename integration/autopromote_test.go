package integration

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
	"github.com/twinblock/twinblock/nbd/client"
)

// TestAutoPromote: options { auto-promote yes; } (DRBD 9's), on a pair
// in sync where neither node is Primary. A real NBD client's connection
// promotes the node it reaches; the peer, reached meanwhile, refuses
// its client (a Primary exists). Once the client has left, the node
// demotes by itself, and a client of the peer promotes that one, which
// reads what the first client wrote.
func TestAutoPromote(t *testing.T) {
	a, b := syncedDaemons(t, harness.Options{DiskSize: 32 << 20,
		Config: func(v harness.Vars) string {
			return strings.Replace(harness.DefaultConfig(v), "meta-disk internal;", "options { auto-promote yes; }\n  meta-disk internal;", 1)
		}})
	ctx := context.Background()
	// The initial sync is done; then nobody Primary.
	out, err := a.TB(30*time.Second, "secondary", "r0")
	require.NoError(t, err, out)
	require.NoError(t, b.WaitFor(ctx, "role", "Secondary/Secondary", 10*time.Second))

	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err, "a's export refused a client (auto-promote)")
	role, err := a.TB(10*time.Second, "role", "r0")
	require.NoError(t, err)
	require.Equal(t, "Primary/Secondary", strings.TrimSpace(role))
	want := bytes.Repeat([]byte("auto-promote...!"), 4096)
	require.NoError(t, cl.WriteAt(want, 1<<20, true))

	_, err = client.Dial(ctx, b.NBD, client.Options{Export: "r0"})
	require.Error(t, err, "b promoted while a is Primary")
	require.NoError(t, cl.Close())
	require.NoError(t, a.WaitFor(ctx, "role", "Secondary/Secondary", 10*time.Second), "a did not demote after its last client")

	clb, err := client.Dial(ctx, b.NBD, client.Options{Export: "r0"})
	require.NoError(t, err, "b's export refused a client once a demoted")
	defer clb.Close()
	got := make([]byte, len(want))
	require.NoError(t, clb.ReadAt(got, 1<<20))
	require.True(t, bytes.Equal(want, got), "b lacks a's write")
	role, err = b.TB(10*time.Second, "role", "r0")
	require.NoError(t, err)
	require.Equal(t, "Primary/Secondary", strings.TrimSpace(role))
}
