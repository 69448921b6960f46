// Package bitmap will hold the dirty-block bitmap: one bit per 4 KiB block
// (granularity up to 1 MiB), range set/clear/test, population count,
// next-dirty scan, merge with a peer's bitmap and a run-length encoding for
// the wire. Not implemented yet: it arrives with issue 3 (on-disk
// metadata). Nothing imports it today.
package bitmap
