package backup

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/splitbrain"
)

// TestKeeperLifecycle: the journal armed before a connection is kept
// through a discard of this node until the resync completes, and
// dropped (with whatever it saved) by anything else.
func TestKeeperLifecycle(t *testing.T) {
	discard := &splitbrain.Outcome{SplitBrain: true, Decision: splitbrain.TargetBitmap, Rule: 90, Resolution: "--discard-my-data on this node"}
	ordinary := &splitbrain.Outcome{Decision: splitbrain.TargetBitmap, Rule: 50}
	tests := []struct {
		name     string
		outcome  *splitbrain.Outcome
		idle     bool // no connection before the decision
		complete bool // the files end with "complete"
		files    bool // the files exist at the end
	}{
		{"discard of this node", discard, false, true, true},
		{"an ordinary resync", ordinary, false, false, false},
		{"no handshake ran", nil, false, false, false},
		{"the connection never came", nil, true, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			const size = 64 << 10
			k := New(Config{Enabled: true, Resource: "r0", Self: "b", Peer: "a", Dir: dir})
			data := patterned(size)
			cow := k.Disk(data)
			k.Arm(size, genid.GI{0x100})
			img, _, _, ok := k.Armed()
			require.True(t, ok)
			// The peer writes before the decision: saved either way.
			require.NoError(t, cow.WriteAt(make([]byte, 8192), 4096, false))
			if tc.idle {
				k.Idle()
			} else {
				k.Decide(tc.outcome, genid.GI{0x200, 0x100})
				k.Idle() // a discard survives the link going away
			}
			k.Reconcile(true)
			_, _, _, ok = k.Armed()
			assert.False(t, ok, "nothing armed at the end")
			_, err := os.Stat(img)
			assert.Equal(t, tc.files, err == nil, "image exists")
			if tc.files {
				x, err := ReadIndex(IndexPath(img))
				require.NoError(t, err)
				assert.Equal(t, tc.complete, x.Complete)
				b, _ := x.Blocks()
				assert.EqualValues(t, 2, b)
			}
		})
	}
}

// TestKeeperDisabled: backup-discarded no: the link writes to the data
// area itself and nothing is armed.
func TestKeeperDisabled(t *testing.T) {
	k := New(Config{Resource: "r0", Dir: t.TempDir()})
	data := patterned(8192)
	assert.Same(t, data, k.Disk(data))
	k.Arm(8192, genid.GI{1})
	_, _, _, ok := k.Armed()
	assert.False(t, ok)
}

func TestDir(t *testing.T) {
	for _, tc := range []struct {
		h    config.Host
		want string
	}{
		{config.Host{Disk: "/srv/r0.img", MetaDisk: config.MetaDisk{Internal: true}}, "/srv"},
		{config.Host{Disk: "/srv/r0.img", MetaDisk: config.MetaDisk{Path: "/meta/r0.md"}}, "/meta"},
		{config.Host{Disk: "/dev/sdb", MetaDisk: config.MetaDisk{Internal: true}}, DeviceDir},
		{config.Host{Disk: "/dev/vg/r0", MetaDisk: config.MetaDisk{Internal: true}}, DeviceDir},
	} {
		assert.Equal(t, filepath.Clean(tc.want), Dir(&tc.h))
	}
}
