package node

import "github.com/twinblock/twinblock/pkg/fsm"

// authority grants the right to be Primary. It is the place reserved
// for the coming quorum (hashicorp/raft and a witness): a promotion
// there becomes a committed entry that names this node, and the
// authority withdraws the grant when the cluster replaces it. Today the
// grant is local: every promotion the state machine allows goes ahead,
// as in DRBD without quorum.
type authority interface {
	// MayPromote is asked before a promotion (ev) steps the state
	// machine; an error refuses it, and the verb fails with it.
	MayPromote(ev fsm.Promote) error
}

// localAuthority is the authority of a resource without quorum.
type localAuthority struct{}

// MayPromote implements authority.
func (localAuthority) MayPromote(fsm.Promote) error { return nil }
