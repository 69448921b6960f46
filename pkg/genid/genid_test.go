package genid

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGIRotations(t *testing.T) {
	const (
		a = 0xAAAA000000000000
		b = 0xBBBB000000000000
		c = 0xCCCC000000000000
		d = 0xDDDD000000000000
		r = 0x1234560000000000
	)
	for _, tc := range []struct {
		name string
		in   GI
		op   func(*GI) uint64
		want GI
		ret  uint64
	}{
		{"new current (peer lost), as Primary", GI{a | 1, 0, c, d}, func(g *GI) uint64 { g.NewCurrent(r, true); return 0 }, GI{r | 1, a | 1, c, d}, 0},
		{"promotion sets bit 0", GI{a, b, c, d}, func(g *GI) uint64 { g.SetPrimary(true); return 0 }, GI{a | 1, b, c, d}, 0},
		{"demotion clears bit 0", GI{a | 1, b, c, d}, func(g *GI) uint64 { g.SetPrimary(false); return 0 }, GI{a, b, c, d}, 0},
		{"fresh metadata keeps its marker", GI{UUIDJustCreated, 0, 0, 0}, func(g *GI) uint64 { g.SetPrimary(true); return 0 }, GI{UUIDJustCreated, 0, 0, 0}, 0},
		{"new current as Secondary", GI{a, 0, c, d}, func(g *GI) uint64 { g.NewCurrent(r, false); return 0 }, GI{r, a, c, d}, 0},
		{"resync start on the source", GI{a, b, c, d}, func(g *GI) uint64 { return g.StartResyncSource(r) }, GI{a, b + UUIDNewBMOffset, b, c}, b + UUIDNewBMOffset},
		{"resync start, no bitmap UUID", GI{a, 0, c, d}, func(g *GI) uint64 { return g.StartResyncSource(r) }, GI{a, r, c, d}, r},
		{"resync start, just created", GI{a, UUIDJustCreated, c, d}, func(g *GI) uint64 { return g.StartResyncSource(r) }, GI{a, r, UUIDJustCreated, c}, r},
		{"resync start on the target", GI{b, 0, c, d}, func(g *GI) uint64 { g.StartResyncTarget(a + 5); return 0 }, GI{a + 4, 0, c, d}, 0},
		{"resync end on the source", GI{a, b, c, d}, func(g *GI) uint64 { g.FinishResyncSource(); return 0 }, GI{a, 0, b, c}, 0},
		{"resync end on the source, nothing to rotate", GI{a, 0, c, d}, func(g *GI) uint64 { g.FinishResyncSource(); return 0 }, GI{a, 0, c, d}, 0},
		{"resync end on the target", GI{r, 0, 0, 0}, func(g *GI) uint64 { g.FinishResyncTarget(GI{a | 1, 0, b, c}, false); return 0 }, GI{a, 0, b, c}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := tc.in
			ret := tc.op(&g)
			assert.Equal(t, tc.want, g)
			assert.Equal(t, tc.ret, ret)
		})
	}
	assert.True(t, Equal(a|1, a))
	assert.False(t, Equal(a, b))
}

func TestShowGI(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, WriteShowGI(&buf, GI{0xD7A3B4C1B8F7AE3E, 0, 0x4B2E9F3C1A0D5E6F, 0}, FlagConsistent|FlagWasUpToDate|FlagPrimaryInd|FlagCrashedPrimary))
	out := buf.String()
	assert.Contains(t, out, "\nD7A3B4C1B8F7AE3E:0000000000000000:4B2E9F3C1A0D5E6F:0000000000000000:1:1:1:0:0:0:1\n")
	assert.Contains(t, out, "flags: crashed Primary, StandAlone, UpToDate\nmeta-data: need apply-al\n")
	assert.Contains(t, out, "       +--<  Current data generation UUID  >-\n")
	assert.Contains(t, out, "      -<  This node was a crashed primary, and has not seen its peer since   >--+\n")
	assert.Equal(t, "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:1:1:0\n",
		GetGI(GI{UUIDJustCreated}, FlagFullSync|FlagPeerOutdated))
	assert.Equal(t, "consistent,al-clean", (FlagConsistent | FlagALClean).String())
	assert.Equal(t, "none", Flags(0).String())
}
