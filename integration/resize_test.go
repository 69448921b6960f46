package integration

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
	"github.com/twinblock/twinblock/nbd/client"
)

// TestResize: an online grow under a writer. Both backing files grow
// from 16 to 64 MiB; resize is refused on the Primary before the
// Secondary grew, then runs on the Secondary and on the Primary while an
// NBD client writes without pause. Every acknowledged write reads back,
// a new client sees the larger size and writes at its end, and both
// disks end equal over the new data area.
func TestResize(t *testing.T) {
	const oldSize, newSize = 16 << 20, 64 << 20
	a, b := syncedDaemons(t, harness.Options{DiskSize: oldSize})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	oldData := cl.Size()
	w := startStampWriter(t, cl, 1024) // the first 4 MiB

	out, err := a.TB(30*time.Second, "resize", "r0")
	require.Error(t, err, "nothing grew yet: %s", out)
	require.Contains(t, out, "did not grow")

	for _, n := range []*harness.Node{a, b} {
		require.NoError(t, os.Truncate(n.DiskPath, newSize))
	}
	out, err = a.TB(30*time.Second, "resize", "r0")
	require.Error(t, err, "the Primary before its peer: %s", out)
	require.Contains(t, out, "run resize there first")

	out, err = b.TB(60*time.Second, "resize", "r0")
	require.NoError(t, err, out)
	require.Contains(t, out, "now run resize on the Primary")
	require.NoError(t, a.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))
	out, err = a.TB(60*time.Second, "resize", "r0")
	require.NoError(t, err, out)
	require.Contains(t, out, "resynced from the peer in full")
	require.NoError(t, a.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 120*time.Second))
	require.NoError(t, b.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 60*time.Second))

	time.Sleep(300 * time.Millisecond)
	t.Logf("%d writes acknowledged during the resize", w.stop(t))

	// A new client: the larger size; the end is writable.
	rctx := context.Background()
	c2, err := client.Dial(rctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	newData := c2.Size()
	require.Greater(t, newData, int64(oldSize), "the export grew (was %d)", oldData)
	require.Less(t, newData, int64(newSize))
	tail := bytes.Repeat([]byte{0x5a}, 64<<10)
	require.NoError(t, c2.WriteAt(tail, newData-int64(len(tail)), true))
	got := make([]byte, len(tail))
	require.NoError(t, c2.ReadAt(got, newData-int64(len(tail))))
	require.Equal(t, tail, got)
	w.verify(t, c2)
	require.NoError(t, c2.Flush())
	require.NoError(t, c2.Close())
	go cl.Close()

	require.NoError(t, b.WaitFor(rctx, "dstate", "UpToDate/UpToDate", 60*time.Second))
	da, err := a.ReadData(newData)
	require.NoError(t, err)
	db, err := b.ReadData(newData)
	require.NoError(t, err)
	require.True(t, bytes.Equal(da, db), "both disks hold the same %d bytes after the resize", newData)

	out, err = b.TB(30*time.Second, "resize", "r0")
	require.Error(t, err, "again, nothing grew: %s", out)
}
