package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/pkg/quorum"
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
	// serving returns the epoch this node serves under as Primary (0:
	// not Primary); replaced is told when a higher one is seen (a newer
	// Primary exists: this one was replaced). Either may be nil.
	serving  func() uint64
	replaced func(serving uint64)
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
	if md := f.md(); md != nil {
		if err := md.Update(func(sb *meta.Superblock) {
			sb.QuorumEpoch = max(sb.QuorumEpoch, e)
		}); err != nil {
			return err
		}
	}
	// Recorded first: a node that demotes for it has it on its disk.
	if f.serving != nil && f.replaced != nil {
		if own := f.serving(); own != 0 && e > own {
			f.replaced(own)
		}
	}
	return nil
}

// outdateTimeout bounds how long a write waits for the group to outdate
// the peer; then it fails with EIO, under either on-no-quorum. (Such a
// write has started: it holds the device's read lock, which a mode
// change waits for, so it may not wait without a bound. suspend-io
// holds the requests that have not started.)
const outdateTimeout = 5 * time.Second

// peerOutdater asks the group, once per epoch, to outdate the peer
// before this Primary acknowledges a write the peer lacks (device
// invariant (b)).
//
// Invariant: once the group committed that the peer is Outdated at
// epoch e, the peer can become Primary only by a forced promotion (an
// administrator's choice, as DRBD's --force) or after this node
// clears it (clear, once the peer is UpToDate beside it again), so the
// answer is kept for epoch e and not asked again until clear. Outdate
// and clear hold mu across their request to the group, so the group
// commits them in the order this node decided them: a write that finds
// the peer gone after a clear asks for the outdate again, and that
// commits after the clear.
type peerOutdater struct {
	auth     authority
	epoch    func() uint64 // the epoch this node serves under
	ctx      func() context.Context
	replaced func(serving uint64) // the group refused: a newer Primary exists (nil: ignore)

	mu   sync.Mutex    // one request to the group at a time
	done atomic.Uint64 // the epoch at which the outdate committed (0: none kept)
	// dirty: the group may hold the peer Outdated by this node's hand
	// (an outdate committed, no clear since).
	dirty    atomic.Bool
	clearing atomic.Bool // a clear is under way
}

func (o *peerOutdater) outdate() error {
	e := o.epoch()
	if e == 0 {
		return fmt.Errorf("node: not Primary under a quorum epoch")
	}
	if o.done.Load() == e {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done.Load() == e {
		return nil
	}
	ctx, cancel := context.WithTimeout(o.ctx(), outdateTimeout)
	defer cancel()
	if err := o.auth.OutdatePeer(ctx, e); err != nil {
		if o.replaced != nil && (errors.Is(err, quorum.ErrStaleEpoch) || errors.Is(err, quorum.ErrNotPrimary)) {
			o.replaced(e)
		}
		return err
	}
	o.done.Store(e)
	o.dirty.Store(true)
	return nil
}

// clear tells the group that the peer is UpToDate again (PeerUpToDate):
// run calls it, through a goroutine, once the pair is Connected with
// both disks UpToDate and this node Primary (maybeClearPeer). A failure
// leaves dirty set: the next tick tries again.
func (o *peerOutdater) clear() {
	defer o.clearing.Store(false)
	e := o.epoch()
	o.mu.Lock()
	defer o.mu.Unlock()
	if e == 0 {
		return
	}
	o.done.Store(0) // a write alone from now on asks again, after this
	ctx, cancel := context.WithTimeout(o.ctx(), outdateTimeout)
	defer cancel()
	if err := o.auth.PeerUpToDate(ctx, e); err != nil {
		if o.replaced != nil && (errors.Is(err, quorum.ErrStaleEpoch) || errors.Is(err, quorum.ErrPrimaryElsewhere)) {
			o.replaced(e)
		}
		return
	}
	o.dirty.Store(false)
}

// maybeClearPeer (run only, on every Ready and tick) clears the peer in
// the group once the pair is Connected UpToDate/UpToDate with this node
// Primary, if this node outdated it (dirty) or the group holds it
// Outdated for another reason: a takeover marks the Primary it
// replaced, and an earlier run of this node's daemon may have outdated
// it. Without this the rejoined node, resynced, could never be promoted
// again without --force.
func (r *Resource) maybeClearPeer(st fsm.State) {
	o := r.outdater
	if o == nil || st.Role != fsm.Primary || st.Conn != fsm.Connected || st.Disk != fsm.UpToDate || st.PeerDisk != fsm.UpToDate {
		return
	}
	if !o.dirty.Load() {
		v, _ := r.env.Quorum.View(r.name)
		if n := v.Nodes[quorum.NodeID(r.peer.Name)]; n == nil || !n.Outdated {
			return
		}
	}
	if !o.clearing.CompareAndSwap(false, true) {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		o.clear()
	}()
}

// evSuperseded: the quorum epoch this node served under as Primary was
// replaced by a newer one (seen by its fence, or the group's refusal).
type evSuperseded struct{ serving uint64 }

// superseded demotes a Primary the group replaced (run only), if it
// still serves under that epoch: the state machine's Superseded, even
// with clients on the device; their requests fail from now on. The
// before-demote and after-demote handlers then run, in that order, in
// the background (the demotion does not wait: it is forced).
func (r *Resource) superseded(e evSuperseded) {
	if e.serving == 0 || r.epoch.Load() != e.serving || r.fsm.State().Role != fsm.Primary {
		return
	}
	r.log.Warn("quorum: a newer Primary replaced this one: demoting (the device's clients get errors)", "epoch", e.serving)
	r.stepped(r.fsm.Step(fsm.Superseded{}))
	r.epoch.Store(0)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx := context.WithoutCancel(r.ctx)
		_ = r.runHandlerSync(ctx, "before-demote")
		_ = r.runHandlerSync(ctx, "after-demote")
	}()
}

// watchQuorum runs the quorum-lost handler (DRBD 9's) when this node,
// Primary of a quorum resource, loses its group's majority (run only,
// every tick).
func (r *Resource) watchQuorum() {
	q := r.env.Quorum
	if q == nil {
		return
	}
	have := q.Quorate()
	if r.hadQuorum && !have && r.fsm.State().Role == fsm.Primary {
		r.log.Warn("quorum: this Primary lost its group's majority: requests are held or fail until it is back", "on-no-quorum", r.cfg.Options.String("on-no-quorum"))
		r.runHandler("quorum-lost")
	}
	r.hadQuorum = have
}

// tendGroup keeps the group's record of this node true (run only, every
// tick), with one request at a time, off run's goroutine:
//   - A stale grant: the group names this node Primary, but it is not
//     Primary and serves under no epoch. That is a daemon restarted
//     after a crash while Primary, or a promotion whose verb gave up
//     after the grant. It gives the grant back (demote at the group's
//     epoch), so that an administrator, or the peer, can be promoted
//     without demoting this node first. The check is made again on
//     run's goroutine under grantMu, which a promotion holds from its
//     grant until the state machine took it, so a promotion under way
//     keeps its grant; and the demote names the epoch it saw, so the
//     group refuses it once a newer promotion committed.
//   - The disk state and current UUID this node has, when the group's
//     record differs (the status, and the takeover and promotion rules,
//     read it), not only at a promotion.
func (r *Resource) tendGroup() {
	q := r.env.Quorum
	if q == nil || !q.Quorate() || r.tending.Load() {
		return
	}
	v, ok := q.View(r.name)
	if !ok {
		return
	}
	self := quorum.NodeID(r.self.Name)
	st, cur := r.fsm.State(), r.fsm.GI()[genid.Current]
	var c quorum.Command
	switch n := v.Nodes[self]; {
	case v.Primary == self && st.Role != fsm.Primary && r.epoch.Load() == 0:
		c = quorum.Command{Op: quorum.OpDemote, Resource: r.name, Node: self, Expect: v.Epoch}
	case n == nil || n.Disk != st.Disk || n.Current != cur:
		c = quorum.Command{Op: quorum.OpReport, Resource: r.name, Node: self, Disk: st.Disk, Current: cur}
	default:
		return
	}
	if !r.tending.CompareAndSwap(false, true) {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.tending.Store(false)
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		defer cancel()
		if c.Op == quorum.OpDemote {
			r.grantMu.Lock()
			defer r.grantMu.Unlock()
			stale := false
			if err := r.inspect(ctx, func() {
				stale = r.fsm.State().Role != fsm.Primary && r.epoch.Load() == 0
			}); err != nil || !stale {
				return
			}
			r.log.Warn("quorum: the group names this node Primary, which it is not (a restart after a crash): giving the grant back", "epoch", c.Expect)
		}
		res, err := r.env.Quorum.Submit(ctx, c)
		switch {
		case err != nil:
			r.log.Info("quorum: updating this node's record failed; trying again", "op", c.Op.String(), "err", err)
		case res.Err != nil && c.Op == quorum.OpDemote:
			r.log.Info("quorum: the stale grant was not given back", "err", res.Err)
		}
	}()
}

// failoverRetry paces an automatic failover's attempts: the group
// grants the promotion once it counts the old Primary gone (about a
// second, raftnode's bound).
const failoverRetry = 200 * time.Millisecond

// maybeFailover is auto-failover (run only, after each Ready): a
// Secondary with UpToDate data that lost the Primary it was connected
// to in this run promotes itself, once the group grants it (it counts
// the Primary gone). A node that starts and finds no Primary never
// does: it waits for its peer or an administrator. It gives up when the
// link comes back, when it is no longer UpToDate, when the group names
// no Primary (a clean demotion is an administrator's choice) or marks
// this node Outdated.
func (r *Resource) maybeFailover(st fsm.State) {
	if !r.autoFailover.Load() {
		return
	}
	switch {
	case st.Role == fsm.Primary:
		r.sawPrimary = false
		return
	case st.Conn.Established() && st.PeerRole == fsm.Primary:
		r.sawPrimary = true
		return
	case !r.sawPrimary || st.Conn.Established() || st.Disk != fsm.UpToDate:
		return
	}
	if !r.failingOver.CompareAndSwap(false, true) {
		return
	}
	self := quorum.NodeID(r.self.Name)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.failingOver.Store(false)
		for r.ctx.Err() == nil {
			var cur fsm.State
			var current uint64
			if err := r.inspect(r.ctx, func() { cur, current = r.fsm.State(), r.fsm.GI()[genid.Current] }); err != nil {
				return
			}
			// The leader's state, not this member's copy, which may not
			// have applied the latest promotion yet.
			v, err := r.auth.(quorumAuthority).Current(r.ctx, cur.Disk, current)
			var why string
			switch {
			case err != nil:
				why = err.Error()
			case cur.Role == fsm.Primary:
				return // promoted
			case cur.Conn.Established():
				why = "the peer is back"
			case cur.Disk != fsm.UpToDate:
				why = "this disk is " + cur.Disk.String()
			case v.Primary == "" || v.Primary == self:
				why = fmt.Sprintf("the group names Primary %q", v.Primary)
			case v.Nodes[self] != nil && v.Nodes[self].Outdated:
				why = "the group holds this node Outdated"
			}
			if why != "" {
				r.log.Info("auto-failover: not taking over", "why", why)
				return
			}
			err = r.Do(r.ctx, fsm.Promote{})
			if err == nil {
				r.log.Warn("auto-failover: promoted, the quorum counting the Primary gone", "old-primary", v.Primary)
				return
			}
			if !errors.Is(err, quorum.ErrPrimaryElsewhere) {
				r.log.Info("auto-failover: promotion refused", "err", err)
			}
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(failoverRetry):
			}
		}
	}()
}
