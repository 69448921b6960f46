package fsm

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/genid"
)

// TestPrimaryAttachNeedsUpToDateData: a Primary alone attaches only a
// disk that holds all it served (UpToDate flags, the served generation,
// nothing missed); anything else is refused, never held Inconsistent or
// Outdated by a Primary without an UpToDate peer (the invariant whose
// panic the torture test's first long run hit).
func TestPrimaryAttachNeedsUpToDateData(t *testing.T) {
	good := genid.FlagConsistent | genid.FlagWasUpToDate
	gen := genid.GI{0x5eed000}
	tests := []struct {
		name   string
		gi     genid.GI
		flags  genid.Flags
		missed bool
		want   DiskState
	}{
		{"the disk it lost", gen, good, false, UpToDate},
		{"inconsistent", gen, 0, false, Diskless},
		{"outdated", gen, genid.FlagConsistent, false, Diskless},
		{"another generation", genid.GI{0x7777000}, good, false, Diskless},
		{"writes missed", gen, good, true, Diskless},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := New(Config{Name: "r0", Self: "a", Peer: "b", NewUUID: func() uint64 { return 0x100 }})
			require.NoError(t, n.Step(AttachBegin{}))
			require.NoError(t, n.Step(Attached{GI: gen, Flags: good}))
			require.NoError(t, n.Step(Promote{}))
			n.Advance()
			served := n.GI()
			require.NoError(t, n.Step(DiskFailed{}))
			require.Equal(t, Diskless, n.State().Disk)
			gi := tc.gi
			if gi == gen {
				gi = served // the disk as the Primary left it
			}
			require.NoError(t, n.Step(AttachBegin{}))
			require.NotPanics(t, func() { require.NoError(t, n.Step(Attached{GI: gi, Flags: tc.flags, Missed: tc.missed})) })
			require.Equal(t, tc.want, n.State().Disk)
			require.Equal(t, Primary, n.State().Role)
			// The verb that attached hears the refusal.
			if tc.want != Diskless {
				require.NoError(t, n.AttachRefused())
				return
			}
			require.ErrorIs(t, n.AttachRefused(), ErrDataNotCurrent)
			require.NoError(t, n.Step(AttachBegin{}))
			require.NoError(t, n.AttachRefused(), "a new attach starts without the old refusal")
		})
	}
}
