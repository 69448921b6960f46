package metrics

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds (seconds) of the latency
// histograms: 25 µs to 10 s, about three per decade, which covers a
// loopback NBD read (tens of µs) up to a write held by a takeover.
var LatencyBuckets = []float64{
	25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
	1, 2.5, 5, 10,
}

// Histogram counts durations into fixed buckets without locks: Observe is
// safe from any goroutine and costs a few atomic adds. The zero value is
// not usable; NewHistogram makes one.
type Histogram struct {
	bounds []float64 // seconds, ascending
	counts []atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
}

// NewHistogram returns a histogram with the given ascending upper bounds
// (seconds); the +Inf bucket is implicit.
func NewHistogram(bounds []float64) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds))}
}

// Observe records one duration. A nil Histogram records nothing.
func (h *Histogram) Observe(d time.Duration) {
	if h == nil {
		return
	}
	s := d.Seconds()
	for i, b := range h.bounds {
		if s <= b {
			h.counts[i].Add(1)
			break
		}
	}
	h.count.Add(1)
	h.sum.Add(uint64(max(d, 0)))
}

// HistogramSnapshot is a histogram's values at one moment, its buckets
// cumulative as Prometheus wants them.
type HistogramSnapshot struct {
	Bounds     []float64
	Cumulative []uint64 // Cumulative[i]: observations ≤ Bounds[i]
	Count      uint64
	Sum        float64 // seconds
}

// Snapshot returns h's values. Observations that race with it may be
// counted in Count and not yet in a bucket; Snapshot keeps the buckets
// at most Count, so the exposition stays valid.
func (h *Histogram) Snapshot() HistogramSnapshot {
	if h == nil {
		return HistogramSnapshot{}
	}
	s := HistogramSnapshot{Bounds: h.bounds, Cumulative: make([]uint64, len(h.bounds))}
	var c uint64
	for i := range h.counts {
		c += h.counts[i].Load()
		s.Cumulative[i] = c
	}
	s.Count = max(h.count.Load(), c)
	s.Sum = float64(h.sum.Load()) / 1e9
	return s
}
