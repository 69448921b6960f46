package resync

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestResyncPropertyRandom: random bitmaps × random request sizes, caps,
// rates, completion orders (some inline, inside Fetch), pauses → the
// bitmap ends clean, every dirty byte is fetched exactly once, no byte
// that was clean is fetched, and no two requests in flight overlap (the
// fake transport fails the test if they do).
func TestResyncPropertyRandom(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 50
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			blocks := 1 + rng.Int64N(600)
			size := blocks*BlockSize - rng.Int64N(BlockSize) // often a partial last block
			cfg := EngineConfig{
				Size:        size,
				MaxRequest:  (1 + rng.Int64N(64)) * BlockSize,
				MaxInFlight: (1 + rng.Int64N(128)) * BlockSize,
				Controller:  ControllerConfig{Rate: (1 + rng.Int64N(4096)) * kib},
			}
			h := newHarness(t, cfg)

			// Random runs of random density.
			density := rng.Float64()
			dirty := make([]bool, blocks)
			for i := range dirty {
				if rng.Float64() < density {
					dirty[i] = true
					h.mark(int64(i)*BlockSize, 1)
				}
			}
			inline := rng.Float64() / 2
			inlineRng := rand.New(rand.NewPCG(seed, 1)) // used under the transport's mutex only
			h.tr.autoComplete = func(*fakeReq) bool { return inlineRng.Float64() < inline }

			h.startResync(cfg)
			for i := 0; !isClosed(h.e.Done()) && i < 100000; i++ {
				switch {
				case rng.Float64() < 0.03:
					h.e.Pause()
				case rng.Float64() < 0.1:
					h.e.Resume()
				}
				// Complete a random part of what is in flight, in random order.
				for n := rng.IntN(h.tr.numPending() + 1); n > 0; n-- {
					h.tr.complete(rng.IntN(h.tr.numPending()), Result{})
				}
				h.e.sync()
				h.tick()
			}
			h.waitDone()
			require.NoError(t, h.e.Err())
			require.Empty(t, h.bm.dirty(), "the bitmap ends clean")

			fetched := make([]int, blocks)
			var want int64
			for i, d := range dirty {
				if d {
					want += min(BlockSize, size-int64(i)*BlockSize)
				}
			}
			for _, r := range h.tr.requests() {
				require.LessOrEqual(t, r[1], cfg.MaxRequest)
				require.Zero(t, r[0]%BlockSize)
				require.True(t, r[1]%BlockSize == 0 || r[0]+r[1] == size, "request [%d, +%d) not whole blocks", r[0], r[1])
				for b := r[0] / BlockSize; b*BlockSize < r[0]+r[1]; b++ {
					fetched[b]++
				}
			}
			for i := range dirty {
				want := 0
				if dirty[i] {
					want = 1
				}
				require.Equal(t, want, fetched[i], "block %d (dirty %v) fetched %d times", i, dirty[i], fetched[i])
			}
			require.Equal(t, want, h.e.Stats().Requested)
		})
	}
}
