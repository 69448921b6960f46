package quorum

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/fsm"
)

func newTestState(t *testing.T) *State {
	t.Helper()
	s, err := NewState(map[string][2]NodeID{"r0": {"alpha", "beta"}})
	require.NoError(t, err)
	return s
}

// TestApplyRules: each command's grant and refusal, from a given state.
func TestApplyRules(t *testing.T) {
	up := func(c uint64) Command { return Command{Op: OpReport, Resource: "r0", Disk: fsm.UpToDate, Current: c} }
	report := func(n NodeID, d fsm.DiskState) Command {
		c := up(0x100)
		c.Node, c.Disk = n, d
		return c
	}
	cmd := func(op Op, n NodeID, expect uint64) Command {
		return Command{Op: op, Resource: "r0", Node: n, Expect: expect}
	}
	promoted := []Command{report("alpha", fsm.UpToDate), report("beta", fsm.UpToDate), cmd(OpPromote, "alpha", 0)}
	outdated := append(append([]Command{}, promoted...), cmd(OpOutdatePeer, "alpha", 1))
	tests := []struct {
		name    string
		before  []Command // applied first, each must be granted
		cmd     Command
		wantErr error
		epoch   uint64
		primary NodeID
		check   func(t *testing.T, r Resource)
	}{
		{name: "promote an UpToDate node", before: promoted[:2], cmd: cmd(OpPromote, "alpha", 0), epoch: 1, primary: "alpha"},
		{name: "promote without a report", cmd: cmd(OpPromote, "alpha", 0), wantErr: ErrNotUpToDate},
		{name: "promote an Inconsistent node", before: []Command{report("alpha", fsm.Inconsistent)}, cmd: cmd(OpPromote, "alpha", 0), wantErr: ErrNotUpToDate},
		{name: "force-promote an Inconsistent node", before: []Command{report("alpha", fsm.Inconsistent)},
			cmd: Command{Op: OpPromote, Resource: "r0", Node: "alpha", Force: true}, epoch: 1, primary: "alpha"},
		{name: "promote with a stale epoch", before: promoted, cmd: cmd(OpPromote, "beta", 0), wantErr: ErrStaleEpoch, epoch: 1, primary: "alpha"},
		{name: "promote while another is Primary", before: promoted, cmd: cmd(OpPromote, "beta", 1), wantErr: ErrPrimaryElsewhere, epoch: 1, primary: "alpha"},
		{name: "take over from a gone Primary", before: promoted, cmd: Command{Op: OpPromote, Resource: "r0", Node: "beta", Expect: 1, Takeover: true},
			epoch: 2, primary: "beta", check: func(t *testing.T, r Resource) {
				require.True(t, r.Nodes["alpha"].Outdated, "the replaced Primary is Outdated")
			}},
		{name: "promote the Primary again", before: promoted, cmd: cmd(OpPromote, "alpha", 1), epoch: 1, primary: "alpha"},
		{name: "the witness is never Primary", before: promoted[:2], cmd: cmd(OpPromote, "gamma", 0), wantErr: ErrNotDataNode},
		{name: "the witness reports nothing", cmd: report("gamma", fsm.UpToDate), wantErr: ErrNotDataNode},
		{name: "unknown resource", cmd: Command{Op: OpPromote, Resource: "r9", Node: "alpha"}, wantErr: ErrUnknownResource},
		{name: "outdate the peer", before: promoted, cmd: cmd(OpOutdatePeer, "alpha", 1), epoch: 1, primary: "alpha",
			check: func(t *testing.T, r Resource) { require.True(t, r.Nodes["beta"].Outdated) }},
		{name: "only the Primary outdates its peer", before: promoted, cmd: cmd(OpOutdatePeer, "beta", 1), wantErr: ErrNotPrimary, epoch: 1, primary: "alpha"},
		{name: "an Outdated node is not promoted, even taking over", before: outdated,
			cmd: Command{Op: OpPromote, Resource: "r0", Node: "beta", Expect: 1, Takeover: true}, wantErr: ErrOutdated, epoch: 1, primary: "alpha"},
		{name: "a report does not clear Outdated", before: append(append([]Command{}, outdated...), report("beta", fsm.UpToDate)),
			cmd: Command{Op: OpPromote, Resource: "r0", Node: "beta", Expect: 1, Takeover: true}, wantErr: ErrOutdated, epoch: 1, primary: "alpha"},
		{name: "a finished resync clears Outdated", before: outdated, cmd: cmd(OpPeerUpToDate, "alpha", 1), epoch: 1, primary: "alpha",
			check: func(t *testing.T, r Resource) { require.False(t, r.Nodes["beta"].Outdated) }},
		{name: "an Outdated node vouches for nobody", before: outdated, cmd: cmd(OpPeerUpToDate, "beta", 1), wantErr: ErrPrimaryElsewhere, epoch: 1, primary: "alpha"},
		{name: "demote", before: promoted, cmd: cmd(OpDemote, "alpha", 1), epoch: 1},
		{name: "demote a Secondary", before: promoted, cmd: cmd(OpDemote, "beta", 1), wantErr: ErrNotPrimary, epoch: 1, primary: "alpha"},
		{name: "a Secondary leaves: Outdated", before: promoted, cmd: cmd(OpLeave, "beta", 1), epoch: 1, primary: "alpha",
			check: func(t *testing.T, r Resource) { require.True(t, r.Nodes["beta"].Outdated) }},
		{name: "leaving with no Primary outdates nothing", before: promoted[:2], cmd: cmd(OpLeave, "beta", 0),
			check: func(t *testing.T, r Resource) { require.False(t, r.Nodes["beta"].Outdated) }},
		{name: "the Primary cannot leave", before: promoted, cmd: cmd(OpLeave, "alpha", 1), wantErr: ErrIsPrimary, epoch: 1, primary: "alpha"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestState(t)
			for _, c := range tc.before {
				require.NoError(t, s.Apply(c).Err, "setup: %s", c)
			}
			before := s.Clone()
			res := s.Apply(tc.cmd)
			if tc.wantErr != nil {
				require.ErrorIs(t, res.Err, tc.wantErr)
				require.Equal(t, before, s, "a refused command changed the state")
			} else {
				require.NoError(t, res.Err)
				require.True(t, Granted(tc.cmd, res.After), "Granted does not recognise the effect")
			}
			if tc.cmd.Resource != "r0" {
				return
			}
			require.Equal(t, tc.epoch, res.After.Epoch, "epoch")
			require.Equal(t, tc.primary, res.After.Primary, "Primary")
			require.NoError(t, s.Check())
			if tc.check != nil {
				tc.check(t, res.After)
			}
		})
	}
}
