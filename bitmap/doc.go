// Package bitmap is the dirty-block bitmap: one bit per block of the
// replicated device (4 KiB by default, any power of two up to 1 MiB as
// DRBD 9.3 allows), set when the peer may not have the block's current
// content, cleared when it has.
//
// A Bitmap is pure: no I/O, no clock, no goroutines, and not safe for
// concurrent use (its owner serializes access). It keeps, besides the
// bits, the population count (so Count is O(1)) and which 4 KiB pages of
// its serialized form changed since the last ClearDirtyPages, so the
// metadata layer persists only what changed, never the whole bitmap per
// write.
//
// Invariants (the first two checked by Check; all three by the property
// tests against a naive reference):
//   - bits past Bits() in the last word are always zero;
//   - count equals the number of set bits;
//   - every word changed since ClearDirtyPages lies on a page marked dirty.
//
// The wire form (EncodeRLE / DecodeRLE) is a run-length encoding in the
// spirit of DRBD's use-rle: alternating runs of clear and set bits, each a
// uvarint, starting with a (possibly empty) clear run.
//
// Placing the bitmap on disk, and the activity log that lets it be
// written lazily, are in pkg/meta.
package bitmap
