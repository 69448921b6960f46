package disk

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNoFlushContract(t *testing.T) {
	exercise(t, WithoutFlushes(NewMem(size, MemOptions{})))
	assert.Equal(t, 512, WithoutFlushes(NewMem(size, MemOptions{MinBlockSize: 512})).MinBlockSize())
}

// TestNoFlushLosesWhatItDidNotFlush: through NoFlush neither Flush nor
// FUA makes anything durable, so a power loss may take every write
// (disk-flushes no, md-flushes no); the same requests on the disk itself
// survive.
func TestNoFlushLosesWhatItDidNotFlush(t *testing.T) {
	a := bytes.Repeat([]byte{'a'}, 4096)
	for _, tc := range []struct {
		name    string
		wrap    func(Disk) Disk
		durable bool
	}{
		{"flushes", func(d Disk) Disk { return d }, true},
		{"no flushes", func(d Disk) Disk { return WithoutFlushes(d) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCrash(1 << 20)
			d := tc.wrap(c)
			require.NoError(t, d.WriteAt(a, 0, false))
			require.NoError(t, d.Flush())
			require.NoError(t, d.WriteAt(a, 8192, true))
			require.NoError(t, d.WriteZeroes(16384, 4096, false, true))
			require.NoError(t, d.Trim(20480, 4096, true))

			got := c.CrashClone(rand.New(rand.NewPCG(1, 2)), 0)
			p := make([]byte, 4096)
			for _, off := range []int64{0, 8192} {
				require.NoError(t, got.ReadAt(p, off))
				assert.Equal(t, tc.durable, bytes.Equal(a, p), "offset %d", off)
			}
			st := c.Stats()
			if tc.durable {
				assert.EqualValues(t, 1, st.Flushes)
				assert.EqualValues(t, 1, st.FUAWrites)
			} else {
				assert.Zero(t, st.Flushes)
				assert.Zero(t, st.FUAWrites)
			}
		})
	}
}
