package node

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
)

// syncBuffer is a log sink the nodes' goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDisklessPrimaryResyncsReattachedDiskInPlace: a Primary whose disk
// failed writes through its peer; the disk attached again is resynced in
// full over the same connection (the link writes to whatever disk is
// attached, swapDisk), and then holds every acknowledged write (torture
// finding 2).
func TestDisklessPrimaryResyncsReattachedDiskInPlace(t *testing.T) {
	st := &tortureStats{faults: map[string]int{}}
	tt := newTorture(t, 42, st)
	logs := &syncBuffer{}
	tt.logTo = logs
	defer func() {
		for i := range tt.nodes {
			tt.stop(i)
		}
		if t.Failed() {
			t.Logf("trace:\n%s\nlog:\n%s", strings.Join(tt.trace, "\n"), logs.String())
		}
	}()
	tt.start(0)
	tt.start(1)
	require.True(t, tt.settle(500, tt.synced), "the pair connects")
	require.NoError(t, tt.do(0, fsm.Promote{}))
	tt.primary = 0

	// a's disk fails every write: a detaches and writes through b.
	tt.nodes[0].faulty.SetInjector(func(o disk.Op) error {
		if o.Kind == disk.OpRead {
			return nil
		}
		return disk.ErrInjected
	})
	for range 4 {
		tt.batch()
	}
	tt.nodes[0].faulty.SetInjector(nil)
	require.True(t, tt.settle(200, func() bool { return tt.status(0).Disk == "Diskless" }), "a detached: %s", line(tt.status(0)))
	for range 3 {
		tt.batch() // through b alone: a's disk misses these
	}
	require.False(t, tt.failed, "no violation so far")

	// From here time goes on slowly (a tick per 100 ms, as in the
	// daemon): at the torture's pace a loaded machine misses
	// ping-timeout, and the reconnects that follow would hide what this
	// test looks for.
	waitFor := func(ok func() bool) {
		deadline := time.Now().Add(60 * time.Second)
		for !ok() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			tt.clk.Advance(clock.Tick)
		}
	}
	// The batches may have dropped the connection (ping-timeout at the
	// torture's pace): the attach is resynced in place only from a
	// connected UpToDate peer (alone, it is refused).
	waitFor(func() bool { s := tt.status(0); return s.Conn == "Connected" && s.PeerDisk == "UpToDate" })
	require.Equal(t, "Connected", tt.status(0).Conn, "a reconnected: %s", line(tt.status(0)))

	mark := len(logs.String())
	require.NoError(t, tt.do(0, fsm.AttachBegin{}))
	waitFor(tt.synced)
	require.True(t, tt.synced(), "resynced: %s | %s", line(tt.status(0)), line(tt.status(1)))
	after := logs.String()[mark:]
	require.Contains(t, after, "Inconsistent until resynced in full")
	require.Contains(t, after, "conn( Connected -> WFBitMapT )")
	// The resync runs over the connection that stood (a ping timeout on
	// a loaded machine may still renegotiate it, which is allowed): no
	// write of it failed for want of a disk on the link's side.
	require.NotContains(t, after, "resync failed")
	require.NotContains(t, after, "local disk failed")

	// Both disks now hold every acknowledged write.
	tt.check()
	require.False(t, tt.failed, "check after the resync")
	a, b := make([]byte, tBlock), make([]byte, tBlock)
	for blk := range tt.model {
		require.NoError(t, tt.nodes[0].backing.ReadAt(a, blk*tBlock))
		require.NoError(t, tt.nodes[1].backing.ReadAt(b, blk*tBlock))
		require.Equal(t, b, a, "block %d", blk)
	}
}

// TestStaleDiskErrorSparesTheNextAttachment: an I/O error reported for a
// disk that was detached since does not detach the disk attached now
// (torture seed 1658929834300997804: a write's error, still on its way
// to the state machine, detached the freshly re-attached disk); an
// error of the attached disk does.
func TestStaleDiskErrorSparesTheNextAttachment(t *testing.T) {
	tt := syncedPair(t, 43, nil)
	r := tt.nodes[0].r
	old := r.curMD.Load()
	require.NotNil(t, old)
	require.NoError(t, tt.do(0, fsm.Detach{}))
	require.NoError(t, tt.do(0, fsm.AttachBegin{}))
	require.True(t, tt.settle(500, tt.synced), "a is attached again and in sync: %s", line(tt.status(0)))
	cur := r.curMD.Load()
	require.NotSame(t, old, cur, "a new attachment")

	r.post(evDiskFailed{md: old, err: disk.ErrInjected})
	require.False(t, tt.settle(50, func() bool { return tt.status(0).Disk != "UpToDate" }),
		"the earlier attachment's error detached the disk: %s", line(tt.status(0)))

	r.post(evDiskFailed{md: cur, err: disk.ErrInjected})
	require.True(t, tt.settle(200, func() bool { return tt.status(0).Disk == "Diskless" }),
		"the attached disk's error detaches it: %s", line(tt.status(0)))
}

// TestFailedDiskServesThePeerNoMore: from the moment the data path sees
// its disk fail, the link does no more I/O on that disk (swapDisk's
// invariant), even while the detach waits for the requests in flight.
// Torture seed 13543028146989035362: a SyncSource Primary's write failed
// on its disk and was taken by the Inconsistent SyncTarget; a resync
// read of the failed disk then carried the block's old contents back
// over it.
func TestFailedDiskServesThePeerNoMore(t *testing.T) {
	tt := syncedPair(t, 44, nil)
	r := tt.nodes[0].r
	buf := make([]byte, 4096)
	require.NoError(t, r.swap.ReadAt(buf, 0), "the link reads the attached disk")

	// A request in flight, as the failing write is when it reports:
	// the detach (closeDisk) waits for it.
	r.dev.mu.RLock()
	r.dev.onError(r.curMD.Load(), disk.ErrInjected)
	err := r.swap.ReadAt(buf, 0)
	r.dev.mu.RUnlock()
	require.ErrorIs(t, err, errFailedDisk, "the link read a disk that failed")
	require.True(t, tt.settle(200, func() bool { return tt.status(0).Disk == "Diskless" }),
		"the failed disk is detached: %s", line(tt.status(0)))

	// An error of an earlier attachment fails nothing.
	require.NoError(t, tt.do(0, fsm.AttachBegin{}))
	require.True(t, tt.settle(500, tt.synced), "a is attached again and in sync: %s", line(tt.status(0)))
	r.swap.fail(nil)
	require.NoError(t, r.swap.ReadAt(buf, 0), "a stale error failed the attached disk")
}

// syncedPair starts the torture harness's two nodes, with the quorum
// group q if not nil, and waits until they are connected and in sync;
// they stop when the test ends.
func syncedPair(t *testing.T, seed uint64, q QuorumService) *torture {
	t.Helper()
	tt := newTorture(t, seed, &tortureStats{faults: map[string]int{}})
	tt.quorum = q
	t.Cleanup(func() {
		for i := range tt.nodes {
			tt.stop(i)
		}
	})
	tt.start(0)
	tt.start(1)
	require.True(t, tt.settle(500, tt.synced), "the pair connects")
	return tt
}
