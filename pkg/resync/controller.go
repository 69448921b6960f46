package resync

import (
	"time"

	"github.com/twinblock/twinblock/pkg/clock"
)

// ticksPerSecond converts a rate in bytes/s to bytes per tick.
const ticksPerSecond = int64(time.Second / clock.Tick)

// throttleIO is the application I/O, in bytes, that makes the c-min-rate
// throttle look at the resync's speed: DRBD's 64 sectors.
const throttleIO = 64 * 512

// ControllerConfig holds the resync-rate knobs, named after DRBD 8.4's
// disk options. Units are bytes and 100 ms ticks (DRBD: KiB/s, sectors and
// tenths of a second).
type ControllerConfig struct {
	Rate        int64 // resync-rate, bytes/s: the fixed rate when PlanAhead == 0, and the start value of the dynamic one
	PlanAhead   int   // c-plan-ahead, ticks; 0 disables the dynamic controller
	FillTarget  int64 // c-fill-target, bytes in flight to aim for; 0 = use DelayTarget
	DelayTarget int   // c-delay-target, ticks
	MaxRate     int64 // c-max-rate, bytes/s
	MinRate     int64 // c-min-rate, bytes/s; 0 disables the application-I/O throttle
}

// Defaults returns the knobs the node uses where its configuration leaves
// one unset. DRBD's own defaults date from 1 GbE and spinning disks; these
// are for loopback, 10–25 GbE and SSD/NVMe pairs:
//
//   - Rate 100 MiB/s (DRBD: 250 KiB/s). With the dynamic controller on it
//     is only the first plan (Rate·0.1 s per tick for the first PlanAhead
//     ticks) before the fill target takes over; as a fixed rate
//     (PlanAhead 0) it is about what 1 GbE carries, a tenth of 10 GbE.
//   - PlanAhead 20 ticks = 2 s (DRBD's default): each correction is spread
//     over 2 s, long enough to smooth the per-tick noise of a link whose
//     round trip is far below a tick, short enough to follow a change of
//     bottleneck within seconds.
//   - FillTarget 8 MiB (DRBD: 50 KiB). The controller keeps this much
//     requested and not yet arrived at every tick; it must cover the time a
//     1 MiB request takes to be read at the source, cross the link and be
//     written here (a few ms on 10 GbE with SSDs) several times over, or the
//     pipe drains between requests. 8 MiB is eight such requests, and adds
//     a standing queue of about 7 ms on 10 GbE ahead of application writes.
//   - DelayTarget 10 ticks = 1 s (DRBD's default); used only when
//     FillTarget is 0.
//   - MaxRate 4 GiB/s (DRBD: 100 MiB/s, which caps an NVMe pair on 10 GbE
//     at a tenth of what it can do). Above 25 GbE's ~2.9 GiB/s, so the cap
//     never decides on today's links; the engine's MaxInFlight bounds the
//     memory anyway.
//   - MinRate 32 MiB/s (DRBD: 250 KiB/s, at which 100 GiB takes ~5 days
//     under sustained application I/O). Under load the resync yields down
//     to 32 MiB/s and no further: 100 GiB in ~53 min, about 3% of 10 GbE.
func Defaults() ControllerConfig {
	return ControllerConfig{
		Rate:        100 << 20,
		PlanAhead:   20,
		FillTarget:  8 << 20,
		DelayTarget: 10,
		MaxRate:     4 << 30,
		MinRate:     32 << 20,
	}
}

// Controller is DRBD 8.4's dynamic resync-rate controller
// (drbd_rs_controller), driven by ticks of clock.Tick. It is pure: no
// clock, no I/O, not safe for concurrent use.
//
// Each Tick it is told sect_in, the resync bytes that arrived since the
// previous tick (arrived), and rs_in_flight, the bytes requested and not
// yet arrived (inFlight). With PlanAhead = steps > 0 it computes, in bytes:
//
//	want       = Rate·0.1 s·steps            if inFlight + arrived == 0 (start)
//	           = FillTarget                  if FillTarget > 0
//	           = arrived·DelayTarget         otherwise
//	correction = want − inFlight − planned   (planned: the sum of the FIFO)
//	cps        = correction / steps          (truncated, as C's int division)
//	             add cps to each of the steps FIFO slots; pop the oldest slot
//	             (curr) and push an empty one
//	request    = clamp(arrived + curr, 0, MaxRate·0.1 s)
//
// so each correction is spread evenly over the next steps ticks, and in a
// steady state the bytes in flight at a tick equal the fill target (or
// DelayTarget ticks' worth of arrivals). Rate is then request·10, DRBD's
// c_sync_rate. With PlanAhead = 0 every tick requests Rate·0.1 s and Rate
// is the configured Rate (DRBD's fixed resync-rate; MaxRate does not
// apply, as in DRBD).
//
// The caller may further cap the request (the engine's MaxInFlight, DRBD's
// max-buffers/2); the controller sees that through inFlight.
type Controller struct {
	cfg       ControllerConfig
	plan      []int64 // FIFO ring of planned corrections, one slot per tick ahead
	head      int     // index of the oldest slot
	planned   int64   // sum of plan
	rate      int64   // c_sync_rate, bytes/s
	pendingIO int64   // application I/O not yet looked at by Throttle (DRBD: curr_events − rs_last_events)
}

// NewController returns a controller for cfg. The zero ControllerConfig
// means Defaults(); otherwise a Rate or MaxRate that is not positive (one
// that would stop the resync) takes its Defaults() value, a negative
// PlanAhead is 0, and a non-positive DelayTarget with no FillTarget is
// Defaults().DelayTarget.
func NewController(cfg ControllerConfig) *Controller {
	cfg = normalize(cfg)
	return &Controller{cfg: cfg, plan: make([]int64, cfg.PlanAhead), rate: cfg.Rate}
}

func normalize(cfg ControllerConfig) ControllerConfig {
	def := Defaults()
	if cfg == (ControllerConfig{}) {
		return def
	}
	if cfg.Rate <= 0 {
		cfg.Rate = def.Rate
	}
	if cfg.MaxRate <= 0 {
		cfg.MaxRate = def.MaxRate
	}
	cfg.PlanAhead = max(cfg.PlanAhead, 0)
	cfg.FillTarget = max(cfg.FillTarget, 0)
	if cfg.FillTarget == 0 && cfg.DelayTarget <= 0 {
		cfg.DelayTarget = def.DelayTarget
	}
	cfg.MinRate = max(cfg.MinRate, 0)
	return cfg
}

// Config returns the configuration in use (after NewController's
// substitutions).
func (c *Controller) Config() ControllerConfig { return c.cfg }

// Tick returns how many bytes to request in this 100 ms tick. arrived:
// resync bytes that arrived since the last tick (DRBD's sect_in);
// inFlight: bytes requested and not yet arrived. Negative arguments count
// as 0. See the type's doc for the arithmetic.
func (c *Controller) Tick(arrived, inFlight int64) int64 {
	arrived, inFlight = max(arrived, 0), max(inFlight, 0)
	steps := int64(len(c.plan))
	if steps == 0 {
		c.rate = c.cfg.Rate
		return c.cfg.Rate / ticksPerSecond
	}

	var want int64
	switch {
	case inFlight+arrived == 0:
		want = c.cfg.Rate / ticksPerSecond * steps
	case c.cfg.FillTarget > 0:
		want = c.cfg.FillTarget
	default:
		want = arrived * int64(c.cfg.DelayTarget)
	}

	correction := want - inFlight - c.planned
	cps := correction / steps
	for i := range c.plan {
		c.plan[i] += cps
	}
	c.planned += cps * steps

	curr := c.plan[c.head]
	c.plan[c.head] = 0
	c.head = (c.head + 1) % len(c.plan)
	c.planned -= curr

	req := min(max(arrived+curr, 0), c.cfg.MaxRate/ticksPerSecond)
	c.rate = req * ticksPerSecond
	return req
}

// Rate is the current target rate in bytes/s (DRBD's c_sync_rate, shown as
// "want:"): the last tick's request ×10, or the configured Rate before the
// first tick and in fixed-rate mode.
func (c *Controller) Rate() int64 { return c.rate }

// Reset empties the plan, as at the start of a resync; the engine calls it
// when a paused resync resumes, since the plan was made for the bytes in
// flight before the pause. The rate shown stays until the next Tick.
func (c *Controller) Reset() {
	clear(c.plan)
	c.head, c.planned, c.pendingIO = 0, 0, 0
}

// Throttle reports whether resync should pause this tick for application
// I/O: appIO is the application I/O (bytes) the node saw on its disk since
// the last call; recentRate the resync's short-term rate in bytes/s
// (Progress.ShortTermRate). As DRBD's drbd_rs_c_min_rate_throttle it backs
// off when more than 64 sectors (32 KiB) of foreign I/O accumulated since
// the last time it looked and the resync runs faster than MinRate; MinRate
// 0 disables it. Application I/O below the threshold accumulates across
// calls; once over it, the count starts again from 0 whatever the answer.
func (c *Controller) Throttle(appIO, recentRate int64) bool {
	if c.cfg.MinRate == 0 {
		return false
	}
	c.pendingIO += max(appIO, 0)
	if c.pendingIO <= throttleIO {
		return false
	}
	c.pendingIO = 0
	return recentRate > c.cfg.MinRate
}
