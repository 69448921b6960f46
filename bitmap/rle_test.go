package bitmap

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMergeRLEResized: a peer's bitmap of another size merges over the
// bits both cover; the rest of either is left alone.
func TestMergeRLEResized(t *testing.T) {
	for _, tc := range []struct {
		name          string
		local, remote int64
	}{
		{"peer smaller", 64 << 12, 16 << 12},
		{"peer larger", 16 << 12, 64 << 12},
		{"same", 32 << 12, 32 << 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local, err := New(tc.local, MinGranularity)
			require.NoError(t, err)
			remote, err := New(tc.remote, MinGranularity)
			require.NoError(t, err)
			local.Set(1, 1)
			remote.Set(3, 5)
			remote.Set(remote.Bits()-1, remote.Bits()-1)
			require.NoError(t, local.MergeRLEResized(remote.EncodeRLE(nil)))
			for i := uint64(0); i < local.Bits(); i++ {
				want := i == 1 || (i >= 3 && i <= 5) || (i == remote.Bits()-1)
				require.Equal(t, want, local.Test(i), "bit %d", i)
			}
			require.Error(t, local.MergeRLEResized([]byte{0x05, 0x02}), "malformed")
		})
	}
}
