package splitbrain

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/genid"
)

func TestCompare(t *testing.T) {
	const jc = genid.UUIDJustCreated
	tests := []struct {
		name       string
		self, peer Side
		want       Decision
		rule       int
	}{
		{"both just created", Side{GI: genid.GI{jc}}, Side{GI: genid.GI{jc}}, NoSync, 10},
		{"self just created", Side{GI: genid.GI{jc}}, Side{GI: genid.GI{0x100}}, TargetFull, 20},
		{"peer just created", Side{GI: genid.GI{0x100}}, Side{GI: genid.GI{jc}}, SourceFull, 30},
		{"equal", Side{GI: genid.GI{0x100}}, Side{GI: genid.GI{0x101}}, NoSync, 40},
		{"equal, marks on this node", Side{GI: genid.GI{0x100}, Changed: 4}, Side{GI: genid.GI{0x100}}, SourceBitmap, 42},
		{"equal, marks on the peer", Side{GI: genid.GI{0x100}}, Side{GI: genid.GI{0x100}, Changed: 4}, TargetBitmap, 42},
		{"equal, marks on the Secondary peer of a Primary", Side{GI: genid.GI{0x101}, Primary: true}, Side{GI: genid.GI{0x100}, Changed: 4}, SourceBitmap, 42},
		{"equal, marks on both", Side{GI: genid.GI{0x100}, Changed: 1}, Side{GI: genid.GI{0x100}, Changed: 9}, SourceBitmap, 42},
		{"equal, self crashed primary", Side{GI: genid.GI{0x100}, CrashedPrimary: true}, Side{GI: genid.GI{0x100}}, SourceBitmap, 40},
		{"equal, peer crashed, self primary now", Side{GI: genid.GI{0x101}, Primary: true}, Side{GI: genid.GI{0x100}, CrashedPrimary: true}, SourceBitmap, 41},
		{"equal, crashed, both primary", Side{GI: genid.GI{0x101}, Primary: true, CrashedPrimary: true}, Side{GI: genid.GI{0x101}, Primary: true}, SplitBrainDrop, 41},
		{"self was source, missed the resync end", Side{GI: genid.GI{0x201, 0x300, 0x100, 0x50}}, Side{GI: genid.GI{0x200, 0, 0x300, 0x100}}, SourceBitmap, 34},
		{"self was source, peer never finished", Side{GI: genid.GI{0x201, 0x300, 0x100}}, Side{GI: genid.GI{0x200, 0, 0x900}}, SourceBitmap, 36},
		{"peer was source, missed the resync end", Side{GI: genid.GI{0x200, 0, 0x300, 0x100}}, Side{GI: genid.GI{0x201, 0x300, 0x100, 0x50}}, TargetBitmap, 35},
		{"peer was source, we never finished", Side{GI: genid.GI{0x200, 0, 0x900}}, Side{GI: genid.GI{0x201, 0x300, 0x100}}, TargetBitmap, 37},
		{"sync UUID lost on the way to us", Side{GI: genid.GI{0x100}}, Side{GI: genid.GI{0x201, 0x100 + genid.UUIDNewBMOffset, 0x100}}, TargetBitmap, 51},
		{"our sync UUID never reached the peer", Side{GI: genid.GI{0x201, 0x100 + genid.UUIDNewBMOffset, 0x100}}, Side{GI: genid.GI{0x100}}, SourceBitmap, 71},
		{"peer went on without us", Side{GI: genid.GI{0x100}}, Side{GI: genid.GI{0x201, 0x100}}, TargetBitmap, 50},
		{"peer is two generations ahead", Side{GI: genid.GI{0x100}}, Side{GI: genid.GI{0x301, 0x200, 0x100}}, TargetFull, 60},
		{"we went on without the peer", Side{GI: genid.GI{0x201, 0x100}}, Side{GI: genid.GI{0x100}}, SourceBitmap, 70},
		{"we are two generations ahead", Side{GI: genid.GI{0x301, 0x200, 0x100}}, Side{GI: genid.GI{0x100}}, SourceFull, 80},
		{"both went on: split brain", Side{GI: genid.GI{0x301, 0x100}}, Side{GI: genid.GI{0x401, 0x100}}, SplitBrainAutoRec, 90},
		{"diverged longer ago", Side{GI: genid.GI{0x301, 0x200, 0x100}}, Side{GI: genid.GI{0x401, 0x500, 0x100}}, SplitBrainDrop, 100},
		{"unrelated", Side{GI: genid.GI{0x301, 0x200}}, Side{GI: genid.GI{0x401, 0x500}}, Unrelated, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, rule := Compare(tt.self, tt.peer, true)
			require.Equal(t, tt.want, d, "decision %s", d)
			require.Equal(t, tt.rule, rule)
			// The peer reaches the mirror verdict: both agree on who
			// is source and who target, or both see the divergence.
			back, _ := Compare(tt.peer, tt.self, false)
			if d == Unrelated || d.SplitBrain() {
				require.Equal(t, d, back)
			} else {
				require.Equal(t, -d, back)
			}
		})
	}
}

// The scenarios of drbd-facts.md §1.2: the GI tuples at each step of a
// resync, as the meta rotations produce them, and what the two nodes
// decide when they meet at that step.
func TestCompareResyncLifecycle(t *testing.T) {
	src := genid.GI{0x1000, 0, 0x500, 0x400}
	tgt := genid.GI{0x1000, 0, 0x500, 0x400}
	// The Primary lost its peer and went on: a new generation.
	src.NewCurrent(0x2000, true)
	d, rule := Compare(Side{GI: tgt}, Side{GI: src, Primary: true}, false)
	require.Equal(t, TargetBitmap, d)
	require.Equal(t, 50, rule)

	// Resync starts: the source rotates, the target adopts the sync UUID.
	sync := src.StartResyncSource(0xdead)
	started := src
	tgt.StartResyncTarget(sync)
	// Interrupted here: the target resumes from the bitmap (rule 50
	// again, the target's current is the source's bitmap UUID).
	d, rule = Compare(Side{GI: tgt}, Side{GI: src, Primary: true}, false)
	require.Equal(t, TargetBitmap, d)
	require.Equal(t, 50, rule)

	// Interrupted before the target got the sync UUID: rule 51, and the
	// correction undoes the source's rotation in the target's view.
	before := genid.GI{0x1000, 0, 0x500, 0x400}
	d, rule = Compare(Side{GI: before}, Side{GI: started}, false)
	require.Equal(t, TargetBitmap, d)
	require.Equal(t, 51, rule)
	_, peer := Correct(rule, before, started)
	// Two history slots: the oldest one is lost by the rotation, as in DRBD.
	require.Equal(t, genid.GI{started[0], 0x1000, 0x500, 0x500}, peer)
	d, rule = Compare(Side{GI: started}, Side{GI: before}, true)
	require.Equal(t, SourceBitmap, d)
	require.Equal(t, 71, rule)
	self, _ := Correct(rule, started, before)
	require.Equal(t, genid.GI{started[0], 0x1000, 0x500, 0x500}, self)

	// The resync ends: source rotates, target adopts the source's tuple.
	src.FinishResyncSource()
	done := tgt
	done.FinishResyncTarget(src, false)
	require.True(t, genid.Equal(done[genid.Current], src[genid.Current]))
	d, rule = Compare(Side{GI: done}, Side{GI: src}, false)
	require.Equal(t, NoSync, d)
	require.Equal(t, 40, rule)

	// The source missed the end (it never rotated): rule 34 on the
	// source, 35 on the target; the corrections make the tuples agree.
	d, rule = Compare(Side{GI: started}, Side{GI: done}, true)
	require.Equal(t, SourceBitmap, d)
	require.Equal(t, 34, rule)
	fixed, _ := Correct(rule, started, done)
	require.Equal(t, src, fixed)
	d, rule = Compare(Side{GI: done}, Side{GI: started}, false)
	require.Equal(t, TargetBitmap, d)
	require.Equal(t, 35, rule)
	_, fixedPeer := Correct(rule, done, started)
	require.Equal(t, src, fixedPeer)
}
