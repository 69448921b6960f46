package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/quorum"
)

// authority grants the right to be Primary. Without quorum the grant is
// local (localAuthority): every promotion the state machine allows goes
// ahead, as in DRBD 8.4. With a quorum group (quorumAuthority, issue 15)
// a promotion is a committed entry that names this node and raises the
// epoch, granted only to a node that reported an UpToDate disk and is
// not Outdated, while no other node is Primary. on-no-quorum is the
// device's (device.enter), not the authority's.
type authority interface {
	// Promote asks for the grant before the promotion steps the state
	// machine. It runs on the verb's goroutine (it may wait for a
	// commit), never on run's. It returns the epoch to serve under (0
	// without quorum); an error refuses the promotion.
	Promote(ctx context.Context, req promoteRequest) (epoch uint64, err error)
	// Release gives back the grant of epoch: after a demotion, or a
	// promotion the state machine refused once it was granted.
	Release(ctx context.Context, epoch uint64) error
	// OutdatePeer returns once the group committed that the peer is
	// Outdated, this node being Primary at epoch (twinblock's
	// fence-peer: a committed entry, no handler script). An error
	// wrapping quorum.ErrStaleEpoch or quorum.ErrNotPrimary means this
	// node was replaced.
	OutdatePeer(ctx context.Context, epoch uint64) error
	// PeerUpToDate returns once the group committed that the peer is
	// UpToDate again and no longer Outdated (after a resync from this
	// node, Primary at epoch).
	PeerUpToDate(ctx context.Context, epoch uint64) error
}

// promoteRequest is what the authority is told of the node that asks.
type promoteRequest struct {
	Force   bool
	Disk    fsm.DiskState
	Current uint64 // the current generation identifier
}

// localAuthority is the authority of a resource without quorum.
type localAuthority struct{}

// Promote implements authority.
func (localAuthority) Promote(context.Context, promoteRequest) (uint64, error) { return 0, nil }

// Release implements authority.
func (localAuthority) Release(context.Context, uint64) error { return nil }

// OutdatePeer implements authority: without quorum nobody else can be
// promoted behind this node's back but by an administrator, as in DRBD
// 8.4 without fencing.
func (localAuthority) OutdatePeer(context.Context, uint64) error { return nil }

// PeerUpToDate implements authority.
func (localAuthority) PeerUpToDate(context.Context, uint64) error { return nil }

// QuorumService is what a quorum resource asks of its group;
// pkg/quorum/raftnode.Node implements it.
type QuorumService interface {
	// Submit decides a command (see raftnode.Node.Submit): an error
	// leaves the outcome open, and the same command may be retried.
	Submit(ctx context.Context, c quorum.Command) (quorum.Result, error)
	// View is this member's copy of a resource's state.
	View(resource string) (quorum.Resource, bool)
	// Quorate reports whether this member is in a majority of the group
	// now (raftnode: within its lease bound).
	Quorate() bool
	// Leader is the group's raft leader, "" if unknown (the status).
	Leader() quorum.NodeID
}

// quorumAuthority is the authority of a resource with a quorum group.
type quorumAuthority struct {
	svc      QuorumService
	resource string
	self     quorum.NodeID
}

// ErrQuorumRefused: the quorum group refused the promotion; the error
// wraps the pkg/quorum reason.
var ErrQuorumRefused = errors.New("the quorum refused")

// retryEvery paces the retries of a command whose outcome is open.
const retryEvery = 100 * time.Millisecond

// submit decides c, retrying while the outcome is open (no leader yet, a
// lost leadership, a forward that got no answer) until ctx ends; a
// retry of a command that committed reads as granted (the CAS refuses
// it, pkg/quorum Granted tells).
func (a quorumAuthority) submit(ctx context.Context, c quorum.Command) (quorum.Result, error) {
	for {
		res, err := a.svc.Submit(ctx, c)
		if err == nil {
			return res, nil
		}
		select {
		case <-ctx.Done():
			return quorum.Result{}, fmt.Errorf("%s: %w (last try: %v)", c, ctx.Err(), err)
		case <-time.After(retryEvery):
		}
	}
}

// Promote implements authority: this node's disk is reported, then the
// promotion is decided at the epoch this member knows; a refusal for a
// stale epoch (this member's copy lagged) is decided once more at the
// leader's.
func (a quorumAuthority) Promote(ctx context.Context, req promoteRequest) (uint64, error) {
	v, ok := a.svc.View(a.resource)
	if !ok {
		return 0, fmt.Errorf("%w: resource %s is not in the quorum group", ErrQuorumRefused, a.resource)
	}
	res, err := a.submit(ctx, quorum.Command{Op: quorum.OpReport, Resource: a.resource, Node: a.self, Disk: req.Disk, Current: req.Current})
	if err != nil {
		return 0, err
	}
	if res.Err != nil {
		return 0, fmt.Errorf("%w: %w", ErrQuorumRefused, res.Err)
	}
	c := quorum.Command{Op: quorum.OpPromote, Resource: a.resource, Node: a.self, Expect: v.Epoch, Force: req.Force}
	for try := 0; ; try++ {
		if res, err = a.submit(ctx, c); err != nil {
			return 0, err
		}
		if res.Err == nil {
			return res.After.Epoch, nil
		}
		if !errors.Is(res.Err, quorum.ErrStaleEpoch) || try > 0 {
			return 0, fmt.Errorf("%w: %w", ErrQuorumRefused, res.Err)
		}
		c.Expect = res.After.Epoch
	}
}

// Release implements authority.
func (a quorumAuthority) Release(ctx context.Context, epoch uint64) error {
	res, err := a.submit(ctx, quorum.Command{Op: quorum.OpDemote, Resource: a.resource, Node: a.self, Expect: epoch})
	if err != nil {
		return err
	}
	if res.Err != nil && !errors.Is(res.Err, quorum.ErrNotPrimary) {
		return res.Err
	}
	return nil
}

// OutdatePeer implements authority.
func (a quorumAuthority) OutdatePeer(ctx context.Context, epoch uint64) error {
	res, err := a.submit(ctx, quorum.Command{Op: quorum.OpOutdatePeer, Resource: a.resource, Node: a.self, Expect: epoch})
	if err != nil {
		return err
	}
	if res.Err != nil {
		return fmt.Errorf("%w: %w", ErrQuorumRefused, res.Err)
	}
	return nil
}

// PeerUpToDate implements authority.
func (a quorumAuthority) PeerUpToDate(ctx context.Context, epoch uint64) error {
	res, err := a.submit(ctx, quorum.Command{Op: quorum.OpPeerUpToDate, Resource: a.resource, Node: a.self, Expect: epoch})
	if err != nil {
		return err
	}
	if res.Err != nil {
		return fmt.Errorf("%w: %w", ErrQuorumRefused, res.Err)
	}
	return nil
}

// Current reports this node's disk and returns the group's state as its
// leader has it (after its Barrier): fresher than this member's View,
// which lags a commit it has not applied yet.
func (a quorumAuthority) Current(ctx context.Context, disk fsm.DiskState, current uint64) (quorum.Resource, error) {
	res, err := a.submit(ctx, quorum.Command{Op: quorum.OpReport, Resource: a.resource, Node: a.self, Disk: disk, Current: current})
	if err != nil {
		return quorum.Resource{}, err
	}
	if res.Err != nil {
		return quorum.Resource{}, fmt.Errorf("%w: %w", ErrQuorumRefused, res.Err)
	}
	return res.After, nil
}
