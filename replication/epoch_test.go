package replication

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
)

// memFence is an EpochFence in memory that records its raises.
type memFence struct {
	mu     sync.Mutex
	floor  uint64
	raises []uint64
	fail   error
}

func (f *memFence) Floor() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.floor
}

// raised returns the raises so far.
func (f *memFence) raised() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.raises...)
}

func (f *memFence) Raise(e uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.floor = e
	f.raises = append(f.raises, e)
	return nil
}

// TestEpochFenceAtTheHandshake: a Secondary with a fence refuses a
// Primary whose epoch is below its floor, raises it for a higher one
// (before the link exists), and ignores the 0 of a node that is not
// Primary.
func TestEpochFenceAtTheHandshake(t *testing.T) {
	for _, tc := range []struct {
		name      string
		floor     uint64
		epoch     uint64 // the Primary's
		wantStale bool
		wantFloor uint64
	}{
		{name: "a newer Primary", floor: 3, epoch: 5, wantFloor: 5},
		{name: "the same Primary again", floor: 5, epoch: 5, wantFloor: 5},
		{name: "a replaced Primary", floor: 5, epoch: 4, wantStale: true, wantFloor: 5},
		{name: "no quorum epoch at all", floor: 5, epoch: 0, wantFloor: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			ca, cb := connPair(t, false)
			fence := &memFence{floor: tc.floor}
			cfgA := testConfig("a", "b", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
			cfgB := testConfig("b", "a", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
			cfgB.Fence = fence
			la, lb, errA, errB := handshakeStates(t, ca, cb, cfgA, cfgB, State{Role: 1, Epoch: tc.epoch}, State{Role: 2})
			if la != nil {
				defer closeLink(t, la)
			}
			if lb != nil {
				defer closeLink(t, lb)
			}
			require.Equal(t, tc.wantFloor, fence.Floor())
			if !tc.wantStale {
				require.NoError(t, errA)
				require.NoError(t, errB)
				return
			}
			require.ErrorIs(t, errB, ErrStaleEpoch)
			require.ErrorIs(t, errB, ErrHandshake)
			require.ErrorContains(t, errB, "epoch 4, this node has seen epoch 5")
			// The replaced Primary hears why: at its handshake, or as
			// the Goodbye that ends its link.
			if errA == nil {
				<-la.Done()
				errA = la.Err()
			}
			require.ErrorContains(t, errA, "stale epoch")
		})
	}
}

// TestEpochFenceOnTheWire: every write-like message and every barrier
// carries the sender's epoch; a higher one in a State raises the floor
// before what follows; a write, trim, write-zeroes or flush below the
// floor (the Secondary's floor was raised by a newer Primary meanwhile)
// is refused before it reaches the disk (a write with ESTALE), and the
// connection ends with ErrStaleEpoch.
func TestEpochFenceOnTheWire(t *testing.T) {
	for _, stale := range []Op{OpWrite, OpTrim, OpWriteZeroes, OpFlush} {
		t.Run(stale.String(), func(t *testing.T) {
			checkGoroutines(t)
			secDisk := disk.NewMem(testDiskSize, disk.MemOptions{})
			fence := &memFence{}
			cfgA := testConfig("a", "b", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
			cfgB := testConfig("b", "a", 'C', secDisk)
			cfgB.Fence = fence
			evA := watch(&cfgA)
			ca, cb := connPair(t, true)
			la, lb, errA, errB := handshakeStates(t, ca, cb, cfgA, cfgB, State{Role: 1, Epoch: 2}, State{Role: 2})
			require.NoError(t, errA)
			require.NoError(t, errB)
			defer closeLink(t, la)
			defer closeLink(t, lb)
			require.Equal(t, []uint64{2}, fence.raised(), "the handshake raised the floor")

			do := func(op Op, b byte, off int64) error {
				r := &Request{Op: op, Offset: off}
				switch op {
				case OpWrite:
					r.Data = bytes.Repeat([]byte{b}, 4096)
				case OpTrim, OpWriteZeroes:
					r.Length = 4096
				case OpFlush:
					r.Offset = 0
				}
				if err := la.Submit(r); err != nil {
					return err
				}
				return r.Wait()
			}
			require.NoError(t, do(OpWrite, 0x11, 0))
			require.NoError(t, do(OpWrite, 0x11, 8192))

			// Promoted again (a new epoch): the State raises the floor.
			require.NoError(t, la.SendState(State{Role: 1, Epoch: 3}))
			require.NoError(t, do(OpWrite, 0x22, 4096))
			require.NoError(t, do(OpFlush, 0, 0))
			require.Equal(t, []uint64{2, 3}, fence.raised())

			// Another node was promoted at epoch 4, and this Secondary
			// heard of it: a's next request is stale.
			require.NoError(t, fence.Raise(4))
			err := do(stale, 0x33, 8192)
			require.Error(t, err, "a stale %s was acknowledged", stale)
			got := make([]byte, 4096)
			require.NoError(t, secDisk.ReadAt(got, 8192))
			require.Equal(t, bytes.Repeat([]byte{0x11}, 4096), got, "the stale %s reached the Secondary's disk", stale)
			cause := evA.waitClosed(t)
			require.ErrorContains(t, cause, "stale epoch")
			<-lb.Done()
			require.ErrorIs(t, lb.Err(), ErrStaleEpoch)
			require.ErrorIs(t, lb.Err(), ErrLinkClosed)
		})
	}
}

// TestEpochFenceThatCannotRecordRefuses: a floor that cannot be made
// durable refuses the handshake (nothing is applied under an epoch that
// a crash could forget).
func TestEpochFenceThatCannotRecordRefuses(t *testing.T) {
	checkGoroutines(t)
	ca, cb := connPair(t, false)
	fence := &memFence{fail: errors.New("metadata write failed")}
	cfgA := testConfig("a", "b", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
	cfgB := testConfig("b", "a", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
	cfgB.Fence = fence
	la, lb, _, errB := handshakeStates(t, ca, cb, cfgA, cfgB, State{Role: 1, Epoch: 1}, State{Role: 2})
	if la != nil {
		defer closeLink(t, la)
	}
	if lb != nil {
		defer closeLink(t, lb)
	}
	require.ErrorContains(t, errB, "metadata write failed")
}
