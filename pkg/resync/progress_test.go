package resync

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/status"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// at is t0 plus a duration given in tenths of a second (ticks).
func at(ticks int) time.Time { return t0.Add(time.Duration(ticks) * clock.Tick) }

// runAt drives p tick by tick from tick `from` to `to` (inclusive), left
// falling by perTick bytes each tick after the first (not below 0), and
// returns the last left given to Update.
func runAt(p *Progress, from, to int, left, perTick int64) int64 {
	for i := from; i <= to; i++ {
		if i > from {
			left = max(left-perTick, 0)
		}
		p.Update(at(i), left)
	}
	return left
}

func TestProgressSteadyRate(t *testing.T) {
	const total = 100 << 20
	p := NewProgress(t0, total)
	// 1 MiB/s: 104857 B per tick (rounded), updates every tick for 30 s.
	left := int64(total)
	for i := 0; i <= 300; i++ {
		left = total - int64(i)*(1<<20)/10
		p.Update(at(i), left)
	}
	s := p.Snapshot(at(300), left, 100<<20, false)
	assert.Equal(t, uint64(total), s.Total)
	assert.Equal(t, uint64(left), s.Left)
	assert.Equal(t, 30*time.Second, s.Elapsed)
	// Marks at 0, 3, …, 30 s; the eighth-newest-but-one is the one at 12 s.
	assert.Equal(t, 18*time.Second, s.RecentWindow)
	assert.Equal(t, uint64(18<<20), s.RecentBytes)
	assert.False(t, s.Stalled)
	assert.False(t, s.Verify)
	assert.Equal(t, uint64(100<<10), s.WantKiBps)

	// What the status file shows from it.
	var b bytes.Buffer
	require.NoError(t, status.WriteProcDRBD(&b, "test", []status.Resource{{
		Configured: true, Conn: "SyncTarget", Role: "Secondary", Disk: "Inconsistent", Sync: &s,
	}}))
	assert.Contains(t, b.String(), "sync'ed: 30.0% (71680/102400)K\n")
	assert.Contains(t, b.String(), "finish: 0:01:10 speed: 1,024 (1,024) want: 102,400 K/sec\n")
}

func TestProgressMarksOnlyOnProgress(t *testing.T) {
	p := NewProgress(t0, 1000)
	p.Update(at(29), 900) // under 3 s: no mark
	p.Update(at(30), 1000)
	assert.Equal(t, 0, p.last, "no mark when left did not change")
	p.Update(at(31), 900)
	assert.Equal(t, 1, p.last)
	assert.Equal(t, mark{at: 3100 * time.Millisecond, left: 900}, p.marks[1])
	p.Update(at(40), 800)
	assert.Equal(t, 1, p.last, "the newest mark is under 3 s old")
}

func TestProgressStalled(t *testing.T) {
	const total = 100 << 20
	p := NewProgress(t0, total)
	left := runAt(p, 0, 300, total, 100<<10) // 30 s of progress; marks up to 30 s
	// No progress from tick 301 on: the mark at 12 s ages.
	for i := 301; i <= 1920; i++ {
		p.Update(at(i), left)
	}
	s := p.Snapshot(at(1920), left, 0, false)
	assert.Equal(t, 180*time.Second, s.RecentWindow)
	assert.False(t, s.Stalled, "exactly 180 s is not yet stalled")
	p.Update(at(1921), left)
	s = p.Snapshot(at(1921), left, 0, false)
	assert.True(t, s.Stalled)
	assert.Equal(t, uint64(0), s.WantKiBps)

	var b bytes.Buffer
	require.NoError(t, status.WriteProcDRBD(&b, "test", []status.Resource{{
		Configured: true, Conn: "SyncTarget", Sync: &s,
	}}))
	assert.Contains(t, b.String(), " K/sec (stalled)\n")

	// Progress again: after seven new marks (21 s) the window is recent again.
	left = runAt(p, 1921, 1921+210, left, 100<<10)
	s = p.Snapshot(at(1921+210), left, 0, false)
	assert.False(t, s.Stalled)
	assert.LessOrEqual(t, s.RecentWindow, 21*time.Second)
}

func TestProgressPause(t *testing.T) {
	const total = 100 << 20
	p := NewProgress(t0, total)
	left := runAt(p, 0, 100, total, 100<<10) // 10 s at ~1 MiB/s
	p.Pause(at(100))
	p.Pause(at(150)) // a second Pause does nothing
	assert.True(t, p.Paused())
	assert.Equal(t, 5*time.Second, p.PausedFor(at(150)))
	// Ten minutes paused: Update does nothing, Snapshot's clock stands still.
	for i := 101; i <= 6100; i++ {
		p.Update(at(i), left)
	}
	s := p.Snapshot(at(6100), left, 0, false)
	assert.Equal(t, 10*time.Second, s.Elapsed)
	assert.False(t, s.Stalled)
	p.Resume(at(6100))
	p.Resume(at(6200)) // a second Resume does nothing
	assert.False(t, p.Paused())
	assert.Equal(t, 600*time.Second, p.PausedFor(at(7000)), "only the pause")
	left = runAt(p, 6101, 6300, left, 100<<10) // 20 s more
	s = p.Snapshot(at(6300), left, 0, false)
	assert.Equal(t, 30*time.Second, s.Elapsed, "the pause is not in the average")
	assert.Equal(t, 18*time.Second, s.RecentWindow, "nor in the recent window")
	assert.False(t, s.Stalled)
	assert.InEpsilon(t, float64(18*(100<<10)*10), float64(s.RecentBytes), 0.01)
}

func TestProgressLiveBitmap(t *testing.T) {
	p := NewProgress(t0, 1000)
	runAt(p, 0, 40, 1000, 10) // marks at 0 and 3 s: left 700
	// Blocks marked during the resync: more left than at the mark.
	s := p.Snapshot(at(41), 5000, 0, false)
	assert.Equal(t, uint64(5000), s.Total, "Total grows to what is left")
	assert.Equal(t, uint64(0), s.RecentBytes, "never negative")
	assert.Equal(t, uint64(0), p.Snapshot(at(41), -5, 0, false).Left)
}

func TestProgressVerifyAndZeroTotal(t *testing.T) {
	p := NewProgress(t0, 0)
	s := p.Snapshot(t0, 0, 0, true)
	assert.True(t, s.Verify)
	assert.Equal(t, status.SyncProgress{Verify: true}, s)
	var b bytes.Buffer
	require.NoError(t, status.WriteProcDRBD(&b, "test", []status.Resource{{Configured: true, Conn: "VerifyS", Sync: &s}}))
	assert.True(t, strings.Contains(b.String(), "verified:100.0% (0/0)K"), b.String())
}

func TestProgressShortTermRate(t *testing.T) {
	const total = 100 << 20
	p := NewProgress(t0, total)
	assert.Zero(t, p.ShortTermRate(t0, total))
	assert.Equal(t, int64(1<<20), p.ShortTermRate(t0, total-1<<20), "under a second counts as one")
	left := runAt(p, 0, 300, total, 2<<20/10) // 2 MiB/s for 30 s
	// Against the mark before the newest (27 s): about 3 s at 2 MiB/s.
	assert.InEpsilon(t, float64(2<<20), float64(p.ShortTermRate(at(301), left)), 0.05)
	// It slows down as soon as progress stops.
	assert.Less(t, p.ShortTermRate(at(400), left), int64(1<<20))
}
