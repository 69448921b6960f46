package splitbrain

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/meta"
)

func TestCompare(t *testing.T) {
	const jc = meta.UUIDJustCreated
	tests := []struct {
		name       string
		self, peer Side
		want       Decision
		rule       int
	}{
		{"both just created", Side{GI: meta.GI{jc}}, Side{GI: meta.GI{jc}}, NoSync, 10},
		{"self just created", Side{GI: meta.GI{jc}}, Side{GI: meta.GI{0x100}}, TargetFull, 20},
		{"peer just created", Side{GI: meta.GI{0x100}}, Side{GI: meta.GI{jc}}, SourceFull, 30},
		{"equal", Side{GI: meta.GI{0x100}}, Side{GI: meta.GI{0x101}}, NoSync, 40},
		{"equal, self crashed primary", Side{GI: meta.GI{0x100}, CrashedPrimary: true}, Side{GI: meta.GI{0x100}}, SourceBitmap, 40},
		{"equal, peer crashed, self primary now", Side{GI: meta.GI{0x101}, Primary: true}, Side{GI: meta.GI{0x100}, CrashedPrimary: true}, SourceBitmap, 41},
		{"equal, crashed, both primary", Side{GI: meta.GI{0x101}, Primary: true, CrashedPrimary: true}, Side{GI: meta.GI{0x101}, Primary: true}, SplitBrainDrop, 41},
		{"peer went on without us", Side{GI: meta.GI{0x100}}, Side{GI: meta.GI{0x201, 0x100}}, TargetBitmap, 50},
		{"peer is two generations ahead", Side{GI: meta.GI{0x100}}, Side{GI: meta.GI{0x301, 0x200, 0x100}}, TargetFull, 60},
		{"we went on without the peer", Side{GI: meta.GI{0x201, 0x100}}, Side{GI: meta.GI{0x100}}, SourceBitmap, 70},
		{"we are two generations ahead", Side{GI: meta.GI{0x301, 0x200, 0x100}}, Side{GI: meta.GI{0x100}}, SourceFull, 80},
		{"both went on: split brain", Side{GI: meta.GI{0x301, 0x100}}, Side{GI: meta.GI{0x401, 0x100}}, SplitBrainAutoRec, 90},
		{"diverged longer ago", Side{GI: meta.GI{0x301, 0x200, 0x100}}, Side{GI: meta.GI{0x401, 0x500, 0x100}}, SplitBrainDrop, 100},
		{"unrelated", Side{GI: meta.GI{0x301, 0x200}}, Side{GI: meta.GI{0x401, 0x500}}, Unrelated, 1000},
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
