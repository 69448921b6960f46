package resync

// BlockSize is the unit of the out-of-sync bitmap and of online verify's
// digests: 4 KiB, DRBD's BM_BLOCK_SIZE. Requests are multiples of it
// (except one that ends at the end of a device whose size is not).
const BlockSize = 4096

// Bitmap is the out-of-sync bitmap. The node passes its metadata's (see
// BitmapOf), which is safe for concurrent use; the engine calls it from its
// own goroutine and from the transport's callbacks, and never calls it with
// a lock another Bitmap method could be waiting for.
type Bitmap interface {
	// NextDirty returns the first run of out-of-sync bytes at or after off,
	// at most max bytes long (max is at least BlockSize), aligned to the
	// bitmap's granularity (4 KiB) and clamped to the device size; ok=false
	// if none.
	NextDirty(off, max int64) (runOff, runLen int64, ok bool)
	// SetInSync clears the bits of a range now identical on both nodes.
	SetInSync(off, n int64)
	// MarkOutOfSync sets the bits of every block touching a range.
	MarkOutOfSync(off, n int64)
	// OutOfSyncBytes is the number of bits set × the granularity.
	OutOfSyncBytes() int64
}

// Result is the outcome of one Fetch.
type Result struct {
	InSync bool  // checksum matched; nothing was written
	Wire   int64 // bytes that crossed the wire
	Err    error
}

// Transport is the peer link, sync-target side.
//
// A request whose method returns nil gets exactly one call of done, from
// any goroutine (also from inside the method), whatever happens to the
// link: a link that goes down fails every pending request with an error
// (replication's ErrLinkClosed, say). A method that returns an error never
// calls done. The engine does not reuse csum or digests after the call:
// the transport may keep them.
type Transport interface {
	// Fetch asks the source for [off, off+n), writes it on the local disk,
	// then calls done once. csum: the digest of the local range, or nil
	// (the source sends the data unless the digests match: csums-alg).
	Fetch(off, n int64, csum []byte, done func(Result)) error
	// Verify sends per-4-KiB digests of [off, off+n) and calls done with the
	// mismatch bitmask (bit i LSB-first in byte i/8 = block i differs; valid
	// during the call only).
	Verify(off, n int64, digests []byte, done func(mismatch []byte, err error)) error
}
