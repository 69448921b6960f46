package resync

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestControllerFixedRate(t *testing.T) {
	for _, tc := range []struct {
		name              string
		rate              int64
		arrived, inFlight int64
		want              int64
	}{
		{"100MiB", 100 << 20, 0, 0, 10 << 20},
		{"DRBD 250KiB", 250 << 10, 0, 0, 25600},
		{"ignores arrivals", 1 << 20, 5 << 20, 0, 104857},
		{"ignores in flight", 1 << 20, 0, 64 << 20, 104857},
		{"not capped by MaxRate", 8 << 30, 0, 0, 8 << 30 / 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewController(ControllerConfig{Rate: tc.rate, PlanAhead: 0, MaxRate: 1 << 20})
			for range 50 {
				assert.Equal(t, tc.want, c.Tick(tc.arrived, tc.inFlight))
				assert.Equal(t, tc.rate, c.Rate())
			}
		})
	}
}

// TestControllerArithmetic follows drbd_rs_controller by hand: PlanAhead 2,
// FillTarget 100, Rate 1000 B/s (100 B per tick).
func TestControllerArithmetic(t *testing.T) {
	c := NewController(ControllerConfig{Rate: 1000, PlanAhead: 2, FillTarget: 100, MaxRate: 1 << 30})
	assert.Equal(t, int64(1000), c.Rate(), "the configured rate before the first tick")
	for i, step := range []struct {
		arrived, inFlight int64
		req               int64
	}{
		// start: want = 100·2 = 200; cps = 100; plan [100 100] → pop 100.
		{0, 0, 100},
		// want = 100; corr = 100−100−100 = −100; cps = −50; plan [50 −50] → pop 50.
		{0, 100, 50},
		// want = 100; corr = 100−50−(−50) = 100; cps = 50; plan [0 50] → pop 0; req = 100+0.
		{100, 50, 100},
		// corr = 100−1000−50 = −950; cps = −475; plan [−425 −475] → pop −425; req = 0−425 → 0.
		{0, 1000, 0},
		// fill-target mode; corr = 100−100−(−475) = 475; cps = 237; plan [−238 237] → pop −238;
		// req = 300 − 238 = 62.
		{300, 100, 62},
	} {
		got := c.Tick(step.arrived, step.inFlight)
		require.Equal(t, step.req, got, "tick %d", i)
		assert.Equal(t, step.req*10, c.Rate(), "tick %d: c_sync_rate is the request ×10", i)
	}
}

func TestControllerConvergesToFillTarget(t *testing.T) {
	for _, tc := range []struct {
		name       string
		latency    int   // ticks
		bandwidth  int64 // bytes per tick
		fillTarget int64
		linkBound  bool // the link, not the fill target, limits throughput
	}{
		{"loopback", 0, 100 << 20, 8 << 20, true},
		{"10GbE", 1, 100 << 20, 8 << 20, true},
		{"slow link", 4, 2 << 20, 8 << 20, true},
		{"long pipe, fill-bound", 4, 50 << 20, 8 << 20, false},
		{"WAN", 10, 50 << 20, 8 << 20, false},
		{"small fill", 5, 1 << 20, 4 << 20, false},
		{"latency oscillation", 2, 10 << 20, 8 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewController(ControllerConfig{Rate: 100 << 20, PlanAhead: 20, FillTarget: tc.fillTarget, MaxRate: 4 << 30})
			l := &simLink{latency: tc.latency, bandwidth: tc.bandwidth}
			reqs, inFlight := simRun(c, l, 1000)
			meanIn, meanReq := mean(inFlight[800:]), mean(reqs[800:])
			assert.InEpsilon(t, tc.fillTarget, meanIn, 0.01, "mean bytes in flight at a tick")
			if tc.linkBound {
				assert.InEpsilon(t, tc.bandwidth, meanReq, 0.01, "the link is kept busy")
			}
		})
	}
}

func TestControllerDelayTarget(t *testing.T) {
	// No fill target: in flight = arrivals per tick × DelayTarget.
	c := NewController(ControllerConfig{Rate: 100 << 20, PlanAhead: 20, DelayTarget: 10, MaxRate: 4 << 30})
	l := &simLink{latency: 3, bandwidth: 5 << 20}
	_, inFlight := simRun(c, l, 1000)
	assert.InEpsilon(t, float64(10*(5<<20)), mean(inFlight[800:]), 0.01)
}

func TestControllerNeverExceedsMaxRate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     ControllerConfig
		latency int
	}{
		{"fill target", ControllerConfig{Rate: 100 << 20, PlanAhead: 20, FillTarget: 64 << 20, MaxRate: 50 << 20}, 1},
		{"start plan above max", ControllerConfig{Rate: 1 << 30, PlanAhead: 20, FillTarget: 1 << 20, MaxRate: 10 << 20}, 0},
		{"delay target", ControllerConfig{Rate: 100 << 20, PlanAhead: 5, DelayTarget: 100, MaxRate: 20 << 20}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewController(tc.cfg)
			l := &simLink{latency: tc.latency, bandwidth: 1 << 40}
			reqs, _ := simRun(c, l, 500)
			for i, r := range reqs {
				require.LessOrEqual(t, r, tc.cfg.MaxRate/10, "tick %d", i)
				require.GreaterOrEqual(t, r, int64(0), "tick %d", i)
			}
			assert.Equal(t, tc.cfg.MaxRate/10, reqs[len(reqs)-1], "an unbounded link runs at the cap")
			assert.LessOrEqual(t, c.Rate(), tc.cfg.MaxRate)
			// A burst of arrivals is clamped too.
			assert.Equal(t, tc.cfg.MaxRate/10, c.Tick(1<<40, 0))
		})
	}
}

func TestControllerThrottle(t *testing.T) {
	const minRate = 10 << 20
	for _, tc := range []struct {
		name       string
		minRate    int64
		appIO      []int64 // per call; the answer of the last one is checked
		recentRate int64
		want       bool
	}{
		{"disabled", 0, []int64{1 << 30}, 1 << 30, false},
		{"no app I/O", minRate, []int64{0}, 1 << 30, false},
		{"app I/O at 64 sectors", minRate, []int64{32 << 10}, 1 << 30, false},
		{"app I/O over 64 sectors, fast resync", minRate, []int64{32<<10 + 1}, minRate + 1, true},
		{"app I/O, resync at c-min-rate", minRate, []int64{1 << 20}, minRate, false},
		{"app I/O, slow resync", minRate, []int64{1 << 20}, minRate / 2, false},
		{"app I/O accumulates", minRate, []int64{16 << 10, 16 << 10, 1}, minRate * 2, true},
		{"count restarts after a look", minRate, []int64{1 << 20, 16 << 10}, minRate * 2, false},
		{"negative app I/O ignored", minRate, []int64{-1 << 20, 33 << 10}, minRate * 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewController(ControllerConfig{Rate: 1 << 20, MinRate: tc.minRate})
			var got bool
			for _, io := range tc.appIO {
				got = c.Throttle(io, tc.recentRate)
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestNewControllerNormalizes(t *testing.T) {
	def := Defaults()
	for _, tc := range []struct {
		name string
		in   ControllerConfig
		want ControllerConfig
	}{
		{"zero is Defaults", ControllerConfig{}, def},
		{"zero rate and max rate", ControllerConfig{PlanAhead: 5, FillTarget: 1 << 20},
			ControllerConfig{Rate: def.Rate, PlanAhead: 5, FillTarget: 1 << 20, MaxRate: def.MaxRate}},
		{"no fill target, no delay target", ControllerConfig{Rate: 1, PlanAhead: 5, MaxRate: 1},
			ControllerConfig{Rate: 1, PlanAhead: 5, DelayTarget: def.DelayTarget, MaxRate: 1}},
		{"negatives", ControllerConfig{Rate: 1, PlanAhead: -3, FillTarget: -1, DelayTarget: 4, MaxRate: 1, MinRate: -1},
			ControllerConfig{Rate: 1, DelayTarget: 4, MaxRate: 1}},
		{"kept", def, def},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, NewController(tc.in).Config())
		})
	}
}

func TestControllerReset(t *testing.T) {
	c := NewController(ControllerConfig{Rate: 1000, PlanAhead: 2, FillTarget: 100, MaxRate: 1 << 30})
	c.Tick(0, 0)
	c.Tick(0, 5000)
	c.Reset()
	assert.Equal(t, int64(100), c.Tick(0, 0), "after Reset the start plan again")
}

func mean(v []int64) float64 {
	var s float64
	for _, x := range v {
		s += float64(x)
	}
	return s / float64(len(v))
}
