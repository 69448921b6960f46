// Package clock is the source of time and ticks for the driver
// (pkg/node) and the resync engine: Real reads the system clock, Fake is
// advanced by hand, so that a test decides when timers fire (the shape
// of tailscale's tstime.Clock, reduced to what twinblock uses).
package clock
