package node

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/config"
)

// adjustConf renders resource r0 with the given protocol, net and disk
// bodies and alpha's placement.
func adjustConf(t *testing.T, protocol, net, disk, alphaExtra string) *config.Resource {
	t.Helper()
	cfg, err := config.Parse("r.conf", []byte(fmt.Sprintf(`resource r0 {
	protocol %s;
	net { %s }
	disk { %s }
	on alpha { address 127.0.0.1:7789; disk /tmp/a.img; meta-disk internal; %s }
	on beta  { address 127.0.0.2:7789; disk /tmp/b.img; meta-disk internal; }
}`, protocol, net, disk, alphaExtra)))
	require.NoError(t, err)
	return cfg.Resources[0]
}

// TestPlanAdjust: which changes adjust applies live, over a reconnect,
// over a detach and attach, or refuses (PlanAdjust's invariant: nothing
// that would take a Primary's disk or export passes as live).
func TestPlanAdjust(t *testing.T) {
	base := adjustConf(t, "C", "ping-int 10;", "resync-rate 10M;", "")
	tests := []struct {
		name                          string
		next                          *config.Resource
		reconnect, reattach, reexport bool
		refused                       bool
		changes                       []string
	}{
		{name: "nothing", next: adjustConf(t, "C", "ping-int 10;", "resync-rate 10M;", "")},
		{name: "a net option", next: adjustConf(t, "C", "ping-int 5;", "resync-rate 10M;", ""), reconnect: true,
			changes: []string{"net { ping-int 10 -> 5 }"}},
		{name: "the protocol", next: adjustConf(t, "A", "ping-int 10;", "resync-rate 10M;", ""), reconnect: true,
			changes: []string{"protocol C -> A"}},
		{name: "the resync rate is live", next: adjustConf(t, "C", "ping-int 10;", "resync-rate 40M;", ""),
			changes: []string{"disk { resync-rate 10M -> 40M }"}},
		{name: "al-extents needs a detach", next: adjustConf(t, "C", "ping-int 10;", "resync-rate 10M; al-extents 1237;", ""), reattach: true,
			changes: []string{"disk { al-extents (default) -> 1237 }"}},
		{name: "nbd-listen needs the export closed", next: adjustConf(t, "C", "ping-int 10;", "resync-rate 10M;", "nbd-listen 127.0.0.1:10900;"), reexport: true,
			changes: []string{"nbd-listen 127.0.0.1:10809 -> 127.0.0.1:10900"}},
		{name: "backup-discarded only while down", next: adjustConf(t, "C", "ping-int 10; backup-discarded yes;", "resync-rate 10M;", ""), reconnect: true, refused: true,
			changes: []string{"net { backup-discarded (default) -> yes }"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanAdjust(base, tc.next, "alpha")
			require.NoError(t, err)
			assert.Equal(t, tc.changes, p.Changes)
			assert.Equal(t, tc.reconnect, p.Reconnect, "Reconnect")
			assert.Equal(t, tc.reattach, p.Reattach, "Reattach")
			assert.Equal(t, tc.reexport, p.Reexport, "Reexport")
			assert.Equal(t, tc.refused, p.Refused != "", "Refused: %s", p.Refused)
		})
	}
	_, err := PlanAdjust(base, base, "gamma")
	require.Error(t, err, "a node with no section")
}
