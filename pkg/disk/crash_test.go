package disk

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCrashContract(t *testing.T) {
	exercise(t, NewCrash(size))
}

func TestRegionContract(t *testing.T) {
	under := NewMem(3*size, MemOptions{MinBlockSize: 512})
	r, err := NewRegion(under, size, size)
	require.NoError(t, err)
	assert.Equal(t, 512, r.MinBlockSize())
	exercise(t, r)
	// Nothing outside the window was touched.
	all := under.Bytes()
	assert.Equal(t, make([]byte, size), all[:size])
	assert.Equal(t, make([]byte, size), all[2*size:])
	_, err = NewRegion(under, 2*size, size+1)
	assert.ErrorIs(t, err, ErrOutOfRange)
}

func TestCrashDropsOnlyUnsynced(t *testing.T) {
	c := NewCrash(1 << 20)
	a := bytes.Repeat([]byte{'a'}, 8192)
	b := bytes.Repeat([]byte{'b'}, 8192)
	require.NoError(t, c.WriteAt(a, 0, false))
	require.NoError(t, c.Flush())
	require.NoError(t, c.WriteAt(b, 0, false))
	require.NoError(t, c.WriteAt(b, 65536, true)) // FUA: this write alone is durable
	require.NoError(t, c.WriteAt(a, 65536, false))

	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name   string
		keep   float64
		at64k  []byte
		atZero []byte
	}{
		{"drop the cache", 0, b, a},
		{"keep the cache", 1, a, b},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := c.CrashClone(rng, tc.keep)
			p := make([]byte, 8192)
			require.NoError(t, got.ReadAt(p, 65536))
			assert.Equal(t, tc.at64k, p)
			require.NoError(t, got.ReadAt(p, 0))
			assert.Equal(t, tc.atZero, p)
		})
	}
}

// An older cached write never resurfaces over a FUA write it overlaps.
func TestCrashFUAWinsOverOlderCache(t *testing.T) {
	c := NewCrash(1 << 20)
	require.NoError(t, c.WriteAt(bytes.Repeat([]byte{'o'}, 8192), 0, false))
	require.NoError(t, c.WriteAt(bytes.Repeat([]byte{'f'}, 4096), 4096, true))
	rng := rand.New(rand.NewPCG(8, 8))
	for range 50 {
		got := c.CrashClone(rng, 0.5)
		p := make([]byte, 4096)
		require.NoError(t, got.ReadAt(p, 4096))
		require.Equal(t, bytes.Repeat([]byte{'f'}, 4096), p)
	}
}

// A cached write survives sector by sector: after a crash each 512-byte
// sector holds the old or the new content, never a mix within a sector,
// and with keep=0.5 some of each appear.
func TestCrashTearsAtSectors(t *testing.T) {
	c := NewCrash(1 << 20)
	require.NoError(t, c.WriteAt(bytes.Repeat([]byte{'o'}, 65536), 4096, true))
	require.NoError(t, c.WriteAt(bytes.Repeat([]byte{'n'}, 65536), 4096, false))
	rng := rand.New(rand.NewPCG(3, 4))
	var olds, news int
	for range 20 {
		got := c.CrashClone(rng, 0.5)
		p := make([]byte, 65536)
		require.NoError(t, got.ReadAt(p, 4096))
		for s := 0; s < len(p); s += SectorSize {
			sec := p[s : s+SectorSize]
			switch {
			case bytes.Equal(sec, bytes.Repeat([]byte{'o'}, SectorSize)):
				olds++
			case bytes.Equal(sec, bytes.Repeat([]byte{'n'}, SectorSize)):
				news++
			default:
				t.Fatalf("sector at %d is torn inside", 4096+s)
			}
		}
	}
	assert.Positive(t, olds)
	assert.Positive(t, news)
}

// Zeroes in the cache survive or vanish like writes, and a clone is
// independent of its source.
func TestCrashZeroesAndIndependence(t *testing.T) {
	c := NewCrash(1 << 20)
	require.NoError(t, c.WriteAt(bytes.Repeat([]byte{'x'}, 4096), 0, true))
	require.NoError(t, c.WriteZeroes(0, 4096, false, false))
	rng := rand.New(rand.NewPCG(5, 6))
	kept := c.CrashClone(rng, 1)
	dropped := c.CrashClone(rng, 0)
	p := make([]byte, 4096)
	require.NoError(t, kept.ReadAt(p, 0))
	assert.Equal(t, make([]byte, 4096), p)
	require.NoError(t, dropped.ReadAt(p, 0))
	assert.Equal(t, bytes.Repeat([]byte{'x'}, 4096), p)
	require.NoError(t, dropped.WriteAt([]byte{'y'}, 0, true))
	require.NoError(t, c.ReadAt(p[:1], 0))
	assert.Equal(t, byte(0), p[0])
}
