package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/pkg/netsim"
)

// TestDurabilityKnobs: disk-flushes, md-flushes and al-updates reach the
// disk. A Primary alone attaches, writes with FUA to two extents,
// flushes and detaches; the backing disk counts what it was asked.
func TestDurabilityKnobs(t *testing.T) {
	for _, tc := range []struct {
		disk       string // the disk section
		flushes    bool   // the backing disk saw flushes or FUA writes
		alWrites   bool   // activity-log transactions (al: in the status)
		writeOrder byte
	}{
		{"", true, true, 'f'},
		{"disk-flushes no; md-flushes no;", false, true, 'n'},
		{"no-disk-flushes; no-md-flushes; al-updates no;", false, false, 'n'},
		{"al-updates no;", true, false, 'f'},
		// Internal metadata: its flushes cover the data disk too.
		{"disk-flushes no;", true, true, 'n'},
	} {
		name := tc.disk
		if name == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			cfg, err := config.Parse("r.conf", []byte(fmt.Sprintf(`resource r0 {
  disk { %s }
  on a { address 127.0.0.1:7789; disk a.img; }
  on b { address 127.0.0.2:7789; disk b.img; }
}
`, tc.disk)))
			require.NoError(t, err)
			backing := freshDisk(t, 64<<20)
			before := backing.Stats()
			r := startNode(t, cfg.Resources[0], "a", netsim.New(), clock.NewFake(time.Unix(1_800_000_000, 0)), backing)
			ctx := context.Background()
			require.NoError(t, r.Do(ctx, fsm.AttachBegin{}))
			require.NoError(t, r.Do(ctx, fsm.Promote{Force: true}))
			block := make([]byte, 4096)
			require.NoError(t, r.dev.WriteAt(block, 0, true))
			require.NoError(t, r.dev.WriteAt(block, meta.ExtentSize, false))
			require.NoError(t, r.dev.Flush())
			st := r.Status()
			assert.Equal(t, tc.writeOrder, st.WriteOrder)
			al := r.md.Stats().ALTransactions // the status's al: (refreshed by publish)
			assert.Equal(t, tc.alWrites, al > 0, "al: %d", al)
			flags := r.md.Superblock().Flags
			assert.Equal(t, !tc.alWrites, flags&genid.FlagALDisabled != 0, "flags %s", flags)
			require.NoError(t, r.Do(ctx, fsm.Demote{}))
			require.NoError(t, r.Do(ctx, fsm.Detach{}))

			after := backing.Stats()
			asked := after.Flushes - before.Flushes + after.FUAWrites - before.FUAWrites
			assert.Equal(t, tc.flushes, asked > 0, "flushes and FUA writes: %d", asked)
			assert.Greater(t, after.Writes, before.Writes)
		})
	}
}
