package replication

import (
	"bytes"
	"fmt"
)

// The resync and online-verify side of a Link: here the bitmap exchange
// and the sync UUID; the requests are in sync_client.go (the sync target
// asks, VerifyS sends digests) and sync_server.go (the source answers, the
// target acks; the peer compares digests). docs/wire-protocol.md
// ("Resync") has the conversation.
//
// Bounds, the same on both sides: a node keeps at most maxSyncRequests
// resync and verify requests, of at most syncBudget bytes in total,
// outstanding. A resync request is outstanding on the target from its
// sending until its ResyncAck is queued (or its failure arrived), on the
// source from its arrival until that ack (or the failure) is queued; a
// verify request on both sides until its reply. The target queues the
// ack before it frees the slot, so the ack precedes the next request on
// the wire and the source sees at most the limit: a peer that exceeds
// it is in violation.

func (resyncRead) String() string { return "resync read" }
func (verifyRead) String() string { return "verify read" }

// bitmapBound is the largest encoded bitmap accepted for disks of size
// bytes: run-length encoding takes at most one byte per bit, and a bit
// covers at least 4 KiB.
func bitmapBound(size uint64) int64 {
	return int64(min(size/BlockSize+1, MaxFrame)) + bitmapSlack
}

// SendBitmap sends this node's bitmap (bitmap.Bitmap.EncodeRLE output) in
// Bitmap frames of at most MaxPayload bytes, the last one with Last set
// (also when rle is empty: one empty Last chunk). The link copies rle. A
// bitmap bigger than the peer accepts (one byte per 4 KiB of the larger
// disk, plus 64 KiB) fails with ErrBadRequest.
func (l *Link) SendBitmap(rle []byte) error {
	if len(rle) > l.maxBitmap {
		return fmt.Errorf("%w: a bitmap of %d bytes, the peer accepts %d", ErrBadRequest, len(rle), l.maxBitmap)
	}
	rle = bytes.Clone(rle)
	chunk := int(l.maxPayload)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return l.cause
	}
	for off := 0; ; {
		end := min(off+chunk, len(rle))
		l.enqueueLocked(outMsg{t: TypeBitmap, off: uint64(off), payload: rle[off:end], last: end == len(rle)})
		if end == len(rle) {
			return nil
		}
		off = end
	}
}

// SendSyncUUID sends the sync UUID (the source, at resync start); the
// peer's OnSyncUUID gets it.
func (l *Link) SendSyncUUID(uuid uint64) error {
	return l.enqueue(outMsg{t: TypeSyncUUID, id: uuid})
}

// ---- Receiving (the receiver goroutine) ----

// recvBitmap collects the peer's bitmap chunks and hands the whole to
// OnBitmap at the last.
func (l *Link) recvBitmap(m *Bitmap) error {
	got := len(l.bitmap)
	switch {
	case len(m.RLE) > int(l.maxPayload):
		return violation(TypeBitmap, "chunk of %d bytes, over the agreed max payload %d", len(m.RLE), l.maxPayload)
	case m.Offset != uint64(got):
		return violation(TypeBitmap, "chunk at byte %d, expected %d", m.Offset, got)
	case len(m.RLE) == 0 && !m.Last:
		return violation(TypeBitmap, "empty chunk at byte %d that is not the last", m.Offset)
	case got+len(m.RLE) > l.maxBitmap:
		return violation(TypeBitmap, "bitmap of more than %d bytes (one per 4 KiB of the disk, plus %d)", l.maxBitmap, bitmapSlack)
	}
	l.bitmap = append(l.bitmap, m.RLE...)
	if !m.Last {
		return nil
	}
	rle := l.bitmap
	l.bitmap = nil
	if rle == nil {
		rle = []byte{}
	}
	if cb := l.cfg.OnBitmap; cb != nil {
		cb(rle)
	}
	return nil
}

// ---- Serving and applying (the applier's workers) ----

// fail ends the link for a protocol violation found outside the
// receiver (a compressed payload that does not decode).
func (l *Link) fail(err error) {
	l.log.Warn("replication: protocol violation", "resource", l.cfg.Resource, "peer", l.cfg.Peer, "err", err)
	l.shutdown(l.closedError(err), goodbyeReason(err.Error()), true)
}
