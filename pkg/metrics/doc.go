// Package metrics is twinblock's Prometheus side: lock-free latency
// histograms the data path observes into, and the text exposition format
// (version 0.0.4) the daemon's --metrics endpoint serves.
//
// The metric names are drbd-reactor's prometheus plugin's wherever DRBD
// has the value (drbd_resource_role, drbd_connection_state,
// drbd_peerdevice_outofsync_bytes, drbd_device_written_bytes_total, …),
// with its labels and units (bytes, enum gauges with one sample per
// state), so that a dashboard or alert written for DRBD works unchanged.
// twinblock's own values carry the twinblock_ prefix: the NBD request
// latency, the replication round trip, the quorum and the resync.
//
// Invariants:
//   - A Histogram's buckets are cumulative when written: each le bucket
//     counts every observation at most le, the +Inf bucket equals the
//     count, and sum is the total of the observations (in seconds).
//   - Every family is written once, its samples together, after its HELP
//     and TYPE lines, as the format requires.
package metrics
