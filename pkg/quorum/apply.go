package quorum

import (
	"fmt"

	"github.com/twinblock/twinblock/pkg/fsm"
)

// Apply applies c to the state, deterministically: every member of the
// group applies the same log to the same result. A refused command
// changes nothing; the Result says why, with the state after.
func (s *State) Apply(c Command) Result {
	r := s.Resources[c.Resource]
	if r == nil {
		return Result{Err: fmt.Errorf("%w %q", ErrUnknownResource, c.Resource)}
	}
	err := r.apply(c)
	if err != nil {
		err = fmt.Errorf("%s: %w", c, err)
	}
	return Result{Err: err, After: *r.Clone()}
}

func (r *Resource) apply(c Command) error {
	n := r.Nodes[c.Node]
	if n == nil {
		return ErrNotDataNode
	}
	if c.Op == OpReport {
		n.Disk, n.Current = c.Disk, c.Current
		return nil
	}
	if c.Expect != r.Epoch {
		return fmt.Errorf("%w: expected epoch %d, it is %d (Primary %q)", ErrStaleEpoch, c.Expect, r.Epoch, r.Primary)
	}
	peer := r.Nodes[r.Peer(c.Node)]
	switch c.Op {
	case OpPromote:
		if r.Primary == c.Node {
			return nil // already: nothing to raise
		}
		if r.Primary != "" && !c.Takeover {
			return fmt.Errorf("%w (%s)", ErrPrimaryElsewhere, r.Primary)
		}
		if !c.Force {
			if n.Outdated {
				return ErrOutdated
			}
			if n.Disk != fsm.UpToDate {
				return fmt.Errorf("%w (it reported %s)", ErrNotUpToDate, n.Disk)
			}
		}
		if r.Primary != "" {
			// Takeover: the old Primary is gone, and may have written
			// what the new one lacks only before its bound; from now
			// on it may lack the new Primary's writes.
			r.Nodes[r.Primary].Outdated = true
		}
		r.Epoch++
		r.Primary = c.Node
		if c.Force {
			n.Outdated = false
		}
	case OpDemote:
		if r.Primary != c.Node {
			return fmt.Errorf("%w (Primary %q)", ErrNotPrimary, r.Primary)
		}
		r.Primary = ""
	case OpOutdatePeer:
		if r.Primary != c.Node {
			return fmt.Errorf("%w (Primary %q)", ErrNotPrimary, r.Primary)
		}
		peer.Outdated = true
	case OpPeerUpToDate:
		if r.Primary != c.Node && r.Primary != "" {
			return fmt.Errorf("%w (Primary %q)", ErrPrimaryElsewhere, r.Primary)
		}
		if n.Outdated {
			return ErrOutdated
		}
		peer.Outdated = false
		peer.Disk = fsm.UpToDate
	case OpLeave:
		if r.Primary == c.Node {
			return ErrIsPrimary
		}
		if r.Primary != "" {
			n.Outdated = true
		}
	default:
		return fmt.Errorf("quorum: unknown op %s", c.Op)
	}
	return nil
}
