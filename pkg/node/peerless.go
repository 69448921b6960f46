package node

import (
	"sync/atomic"

	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/replication"
)

// peerlessDisk is the disk a link writes the peer's writes to. While the
// peer has no disk of its own (a Diskless Primary writing through this
// node), every write it applies is marked out of sync first, under the
// activity log, as DRBD's receive_Data does when pdsk < Inconsistent:
// this node then holds the only copy, and the bitmap is what tells the
// peer's disk, when it comes back behind, which blocks it lacks.
//
// Invariant: a peer write that arrived after a State saying the peer's
// disk has no data is marked before it is applied, and the mark is
// covered by the activity log until the write ended, so it survives a
// crash of this node. (The flag is set on the link's receiver goroutine,
// replication.LinkConfig.OnPeerState, before the frames that followed
// that State are handed to the applier.) Writes that arrived before it
// may be marked too, which costs a resync of those blocks, never data.
type peerlessDisk struct {
	disk.Disk
	md *meta.Meta
	// peerNoData: the peer's last State said its disk has no data.
	peerNoData atomic.Bool
}

// newPeerlessDisk wraps d (nil: this node is diskless, nothing to mark).
func newPeerlessDisk(d disk.Disk, md *meta.Meta) *peerlessDisk {
	if d == nil || md == nil {
		return nil
	}
	return &peerlessDisk{Disk: d, md: md}
}

// setPeer records the disk state of the peer's State (OnPeerState).
func (p *peerlessDisk) setPeer(st replication.State) {
	if p != nil {
		p.peerNoData.Store(fsm.DiskState(st.Disk) < fsm.Inconsistent)
	}
}

// disk returns p as a disk.Disk, nil when p is nil.
func (p *peerlessDisk) disk() disk.Disk {
	if p == nil {
		return nil
	}
	return p
}

// MinBlockSize forwards the data area's alignment.
func (p *peerlessDisk) MinBlockSize() int {
	if bs, ok := p.Disk.(interface{ MinBlockSize() int }); ok {
		return bs.MinBlockSize()
	}
	return 1
}

// WriteAt implements disk.Disk.
func (p *peerlessDisk) WriteAt(b []byte, off int64, fua bool) error {
	return p.marked(off, int64(len(b)), func() error { return p.Disk.WriteAt(b, off, fua) })
}

// Trim implements disk.Disk.
func (p *peerlessDisk) Trim(off, n int64, fua bool) error {
	return p.marked(off, n, func() error { return p.Disk.Trim(off, n, fua) })
}

// WriteZeroes implements disk.Disk.
func (p *peerlessDisk) WriteZeroes(off, n int64, noHole, fua bool) error {
	return p.marked(off, n, func() error { return p.Disk.WriteZeroes(off, n, noHole, fua) })
}

func (p *peerlessDisk) marked(off, n int64, write func() error) error {
	if !p.peerNoData.Load() {
		return write()
	}
	if err := p.md.BeginWrite(off, n); err != nil {
		return err
	}
	defer p.md.EndWrite(off, n)
	p.md.MarkOutOfSync(off, n)
	return write()
}
