package resync

import (
	"time"

	"github.com/twinblock/twinblock/pkg/status"
)

// Sync marks, as DRBD 8.4 keeps them (DRBD_SYNC_MARKS, DRBD_SYNC_MARK_STEP).
const (
	SyncMarks    = 8
	SyncMarkStep = 3 * time.Second
	// StalledAfter is the age of the progress mark past which the status
	// shows "(stalled)".
	StalledAfter = 180 * time.Second
)

// mark is one sync mark: the bytes left at an instant of active time.
type mark struct {
	at   time.Duration // active time since the start (paused time excluded)
	left int64
}

// Progress is the sync-mark bookkeeping behind the progress lines of the
// status file (DRBD 8.4's rs_mark_left/rs_mark_time ring,
// drbd_advance_rs_marks and drbd_syncer_progress). The clock is passed in;
// Progress is pure and not safe for concurrent use.
//
// All times are active time: wall time since the start minus the time
// spent paused. DRBD only restarts the newest mark's clock on pause and adds
// the pause to rs_paused; measuring every mark in active time excludes a
// pause from the recent window too, so a resumed resync is neither shown
// slow nor "(stalled)" because of the pause.
type Progress struct {
	start     time.Time
	total     int64
	paused    bool
	pausedAt  time.Time
	pausedFor time.Duration // completed pauses
	marks     [SyncMarks]mark
	last      int // index of the newest mark
}

// NewProgress starts the bookkeeping of a resync (or verify) of totalBytes
// at now: every mark holds (now, totalBytes), as drbd_start_resync sets
// them.
func NewProgress(now time.Time, totalBytes int64) *Progress {
	p := &Progress{start: now, total: max(totalBytes, 0)}
	for i := range p.marks {
		p.marks[i] = mark{at: 0, left: p.total}
	}
	return p
}

// active is the time since the start, excluding paused time.
func (p *Progress) active(now time.Time) time.Duration {
	d := now.Sub(p.start) - p.pausedFor
	if p.paused {
		d -= now.Sub(p.pausedAt)
	}
	return max(d, 0)
}

// Update records leftBytes at now; call it every tick. As
// drbd_advance_rs_marks it takes a new mark when the newest is at least
// SyncMarkStep old and leftBytes changed since it, and never while paused.
func (p *Progress) Update(now time.Time, leftBytes int64) {
	if p.paused {
		return
	}
	t := p.active(now)
	newest := p.marks[p.last]
	if t < newest.at+SyncMarkStep || newest.left == leftBytes {
		return
	}
	p.last = (p.last + 1) % SyncMarks
	p.marks[p.last] = mark{at: t, left: leftBytes}
}

// Pause stops the clock of the average and of the marks (pause-sync).
// Pausing a paused Progress does nothing.
func (p *Progress) Pause(now time.Time) {
	if p.paused {
		return
	}
	p.paused, p.pausedAt = true, now
}

// Resume starts the clock again; the paused span counts nowhere.
func (p *Progress) Resume(now time.Time) {
	if !p.paused {
		return
	}
	p.pausedFor += max(now.Sub(p.pausedAt), 0)
	p.paused = false
}

// Paused reports whether the Progress is paused.
func (p *Progress) Paused() bool { return p.paused }

// PausedFor is the time spent paused up to now, the current pause included.
func (p *Progress) PausedFor(now time.Time) time.Duration {
	d := p.pausedFor
	if p.paused {
		d += max(now.Sub(p.pausedAt), 0)
	}
	return d
}

// Snapshot returns the progress at now for the status file, in the form
// status.WriteProcDRBD's progress lines expect:
//
//   - Total is the total given to NewProgress, or leftBytes if larger (the
//     bitmap is live: blocks marked during the resync add to it).
//   - Elapsed is the active time since the start (the "(avg)" speed).
//   - RecentBytes and RecentWindow are measured against the mark about 18 s
//     old (DRBD's rs_last_mark+2 of 8 marks 3 s apart): the bytes done since
//     it (never negative) and its age. They give "speed:" and "finish:".
//   - Stalled: that mark is older than StalledAfter. Marks are taken only
//     while the resync makes progress, so a mark that old means little or
//     none for about three minutes.
//   - WantKiBps is wantBps in KiB/s, rounded down (the controller's Rate).
func (p *Progress) Snapshot(now time.Time, leftBytes, wantBps int64, verify bool) status.SyncProgress {
	leftBytes = max(leftBytes, 0)
	t := p.active(now)
	m := p.marks[(p.last+2)%SyncMarks]
	window := t - m.at
	return status.SyncProgress{
		Total:        uint64(max(p.total, leftBytes)),
		Left:         uint64(leftBytes),
		Verify:       verify,
		Elapsed:      t,
		RecentBytes:  uint64(max(m.left-leftBytes, 0)),
		RecentWindow: window,
		Stalled:      window > StalledAfter,
		WantKiBps:    uint64(max(wantBps, 0)) >> 10,
	}
}

// ShortTermRate is the resync's rate over the last two mark steps or so,
// in bytes/s: measured against the mark before the newest (DRBD's
// rs_last_mark−1, as drbd_rs_c_min_rate_throttle does). A window shorter
// than a second counts as one second (DRBD's "if (!dt) dt++"). It feeds
// Controller.Throttle.
func (p *Progress) ShortTermRate(now time.Time, leftBytes int64) int64 {
	m := p.marks[(p.last+SyncMarks-1)%SyncMarks]
	dt := max(p.active(now)-m.at, time.Second)
	db := max(m.left-leftBytes, 0)
	return int64(float64(db) / dt.Seconds())
}
