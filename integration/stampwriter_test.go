package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/nbd/client"
)

// stampWriter writes 4 KiB blocks round robin over the first blocks
// blocks of an export without pause, each stamped with its sequence
// number, and remembers the last sequence acknowledged at each block:
// the reference a test checks the data against after it changed the pair
// under the writes (adjust, resize).
type stampWriter struct {
	acked  []uint64 // block -> last sequence acknowledged there (0: none)
	seq    uint64   // the last sequence sent
	err    error
	cancel context.CancelFunc
	done   chan struct{}
}

func startStampWriter(t *testing.T, cl *client.Client, blocks int) *stampWriter {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // a test that fails before stop
	w := &stampWriter{acked: make([]uint64, blocks), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		buf := make([]byte, 4096)
		for ctx.Err() == nil {
			w.seq++
			i := int(w.seq % uint64(blocks))
			binary.LittleEndian.PutUint64(buf, w.seq)
			if err := cl.WriteAt(buf, int64(i)*4096, false); err != nil {
				w.err = fmt.Errorf("write %d: %w", w.seq, err)
				return
			}
			w.acked[i] = w.seq
		}
	}()
	return w
}

// stop ends the writes, requires that none failed, and returns how many
// were sent.
func (w *stampWriter) stop(t *testing.T) uint64 {
	t.Helper()
	w.cancel()
	<-w.done
	require.NoError(t, w.err)
	return w.seq
}

// verify reads every block back through cl: each holds the last write
// acknowledged there.
func (w *stampWriter) verify(t *testing.T, cl *client.Client) {
	t.Helper()
	buf := make([]byte, 4096)
	for i, want := range w.acked {
		if want == 0 {
			continue
		}
		require.NoError(t, cl.ReadAt(buf, int64(i)*4096))
		require.Equal(t, want, binary.LittleEndian.Uint64(buf), "block %d: the last acknowledged write", i)
	}
}
