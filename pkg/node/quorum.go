package node

import (
	"sync/atomic"

	"github.com/twinblock/twinblock/pkg/meta"
)

// epochFence is a quorum resource's replication.EpochFence: the highest
// quorum epoch under which this node has seen a Primary serve (its own
// promotions included), kept in the attached disk's superblock
// (meta.Superblock.QuorumEpoch) and in memory for a node without a disk.
//
// Invariant: Raise returns only once the new floor is on the disk (the
// superblock update is fsync'd), so a restart never forgets an epoch it
// acted on; the floor never goes down.
type epochFence struct {
	md  func() *meta.Meta // the attached disk's metadata (nil: none)
	mem atomic.Uint64     // the floor raised while no disk holds it
}

// Floor implements replication.EpochFence.
func (f *epochFence) Floor() uint64 {
	floor := f.mem.Load()
	if md := f.md(); md != nil {
		floor = max(floor, md.Superblock().QuorumEpoch)
	}
	return floor
}

// Raise implements replication.EpochFence.
func (f *epochFence) Raise(e uint64) error {
	for {
		cur := f.mem.Load()
		if cur >= e || f.mem.CompareAndSwap(cur, e) {
			break
		}
	}
	md := f.md()
	if md == nil {
		return nil
	}
	return md.Update(func(sb *meta.Superblock) {
		sb.QuorumEpoch = max(sb.QuorumEpoch, e)
	})
}
