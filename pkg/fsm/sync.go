package fsm

import (
	"fmt"

	"github.com/twinblock/twinblock/pkg/genid"
)

// The resync and verify transitions (DRBD 8.4's, without StartingSyncS/T):
//
//	sync source                          sync target
//	Connected ─(handshake +1/+2,         Connected ─(handshake -1/-2,
//	  invalidate-remote, forced            invalidate, or an unsolicited
//	  promotion, peer turned               Bitmap from the peer)
//	  Inconsistent)                        │ disk Inconsistent
//	  │ SendBitmap                         │ SendBitmap
//	WFBitMapS                            WFBitMapT
//	  │ BitmapReceived: rotate GI,         │ BitmapReceived
//	  │ persist, send sync UUID          WFSyncUUID
//	SyncSource ⇄ PausedSyncS               │ SyncUUIDReceived: adopt it
//	  │ peer's State says UpToDate:      SyncTarget ⇄ PausedSyncT
//	  │ FinishResyncSource                 │ ResyncDone: adopt the source's
//	Connected                              │ finished tuple, UpToDate
//	                                     Connected
//
// Both nodes send their bitmap and merge the peer's (bit-or), so both
// hold the union: every block either side changed while apart. The sync
// target pulls (the driver's resync engine) and clears bits as blocks
// land; the source clears bits as the target acknowledges them.
//
// Invariants (checkInvariants):
//   - SyncSource/PausedSyncS/WFBitMapS: this node's disk is UpToDate.
//   - SyncTarget/PausedSyncT/WFSyncUUID: this node's disk is Inconsistent
//     and the peer's UpToDate.
//   - A Primary never becomes a sync target at connect time with
//     consistent data (rr-conflict disconnect); it does on the
//     administrator's invalidate, or when it attached a disk behind.
//
// An interrupted resync resumes: the target's Inconsistent flag and its
// current UUID (the sync UUID, the source's bitmap UUID) are persisted
// when it starts, so the next handshake decides "target, use bitmap"
// (rule 50, or 51/71 if the sync UUID was lost), and both bitmaps, which
// the driver writes out as the resync progresses, still hold what is
// left.

// bitmapReceived completes the bitmap exchange.
func (n *Node) bitmapReceived() error {
	switch n.conn {
	case WFBitMapS:
		u := n.gi.StartResyncSource(n.cfg.NewUUID())
		if u == 0 {
			u = genid.UUIDNewBMOffset // a zero sync UUID cannot be sent
			n.gi[genid.Bitmap] = u
		}
		n.ready.SyncUUID = u
		n.peerDisk = Inconsistent
		n.conn = n.syncState(SyncSource)
		n.logf("Began resync as %s (sync UUID %016X)", n.conn, u)
	case WFBitMapT:
		n.conn = WFSyncUUID
	case Connected:
		// The peer starts a resync as source with the bitmap it sent.
		if !n.disk.hasData() || n.peerDisk != UpToDate {
			n.dropLink(ProtocolError, fmt.Sprintf("peer started a resync, but disks are %s/%s", n.disk, n.peerDisk))
			return nil
		}
		n.logf("peer requested a resync to this node (invalidate-remote or a forced promotion there)")
		n.disk = Inconsistent
		n.ready.SendBitmap = true
		n.conn = WFSyncUUID
	default:
		if n.conn.Established() {
			n.dropLink(ProtocolError, fmt.Sprintf("unexpected bitmap in %s", n.conn))
		}
	}
	return nil
}

func (n *Node) syncUUIDReceived(u uint64) {
	if n.conn != WFSyncUUID {
		if n.conn.Established() {
			n.dropLink(ProtocolError, fmt.Sprintf("unexpected sync UUID in %s", n.conn))
		}
		return
	}
	n.gi.StartResyncTarget(u)
	n.conn = n.syncState(SyncTarget)
	n.logf("Began resync as %s (sync UUID %016X)", n.conn, u)
}

// resyncDone ends the target's resync: it adopts the tuple the source
// will have after its own rotation, and its data is UpToDate.
func (n *Node) resyncDone() {
	if n.conn != SyncTarget && n.conn != PausedSyncT {
		return
	}
	src := n.peerGI
	src.FinishResyncSource()
	n.gi.FinishResyncTarget(src, n.role == Primary)
	n.disk = UpToDate
	n.crashedPrimary = false
	n.conn = Connected
	n.logf("Resync done: this node is UpToDate")
}

// sourceDone ends the source's resync when the target reports UpToDate.
func (n *Node) sourceDone() {
	n.gi.FinishResyncSource()
	n.crashedPrimary = false
	n.conn = Connected
	n.logf("Resync done: %s is UpToDate", n.cfg.Peer)
}

// syncState is SyncSource/SyncTarget, or its paused form when either
// administrator paused the resync.
func (n *Node) syncState(base ConnState) ConnState {
	paused := n.userPaused || n.peerPaused
	switch {
	case base == SyncSource && paused:
		return PausedSyncS
	case base == SyncTarget && paused:
		return PausedSyncT
	}
	return base
}

func (n *Node) updatePause() {
	switch n.conn {
	case SyncSource, PausedSyncS:
		n.conn = n.syncState(SyncSource)
	case SyncTarget, PausedSyncT:
		n.conn = n.syncState(SyncTarget)
	}
}

// UserPaused reports this node's pause-sync flag.
func (n *Node) UserPaused() bool { return n.userPaused }

// PeerPaused reports the peer's pause-sync flag.
func (n *Node) PeerPaused() bool { return n.peerPaused }

func (n *Node) pauseSync(pause bool) {
	if n.userPaused == pause {
		return
	}
	n.userPaused = pause
	n.updatePause()
	if n.conn.Established() {
		n.ready.SendState = true
	}
}

// invalidate discards this node's data: a full resync from the peer
// (connected), or an Inconsistent disk with every block out of sync for
// the next connection.
func (n *Node) invalidate() error {
	switch {
	case !n.disk.hasData():
		return ErrIsDiskless
	case n.conn.Syncing():
		return ErrResyncRunning
	case n.conn == Connected:
		if n.peerDisk != UpToDate {
			return ErrNoUpToDateDisk
		}
		n.disk = Inconsistent
		n.ready.SetAllOutOfSync = true
		n.ready.SendBitmap = true
		n.conn = WFBitMapT
		n.logf("invalidate: full resync from %s", n.cfg.Peer)
	default:
		if n.role == Primary {
			return ErrNoUpToDateDisk
		}
		n.disk = Inconsistent
		n.ready.SetAllOutOfSync = true
		n.logf("invalidate: every block out of sync; resync when connected")
	}
	return nil
}

// invalidateRemote makes this node the source of a full resync of the
// peer.
func (n *Node) invalidateRemote() error {
	switch {
	case n.conn.Syncing():
		return ErrResyncRunning
	case n.conn != Connected:
		return ErrNeedConnection
	case n.disk != UpToDate:
		return ErrNoUpToDateDisk
	case !n.peerDisk.hasData():
		return ErrNoRemoteDisk
	}
	n.startSource(true, "invalidate-remote")
	return nil
}

// startSource enters WFBitMapS while connected.
func (n *Node) startSource(full bool, why string) {
	if full {
		n.ready.SetAllOutOfSync = true
	}
	n.ready.SendBitmap = true
	n.peerDisk = Inconsistent
	n.conn = WFBitMapS
	n.logf("%s: resync of %s", why, n.cfg.Peer)
}

func (n *Node) startVerify(hasAlg bool) error {
	switch {
	case !hasAlg:
		return ErrNoVerifyAlg
	case n.conn.Syncing():
		return ErrResyncRunning
	case n.conn != Connected:
		return ErrNeedConnection
	case n.disk != UpToDate || n.peerDisk != UpToDate:
		return ErrNoUpToDateDisk
	}
	n.conn = VerifyS
	n.ready.SendState = true // the peer becomes VerifyT
	n.logf("Online verify started")
	return nil
}

func (n *Node) verifyDone() {
	if n.conn != VerifyS {
		return
	}
	n.conn = Connected
	n.ready.SendState = true
}

// peerSync follows the peer's State through a resync or verify.
func (n *Node) peerSync(oldPeerDisk DiskState, p PeerInfo) {
	n.peerPaused = p.UserPaused
	n.updatePause()
	switch {
	case (n.conn == SyncSource || n.conn == PausedSyncS) && p.Disk == UpToDate:
		n.sourceDone()
	case n.conn.Syncing() && !p.Disk.hasData():
		n.logf("peer lost its disk during %s", n.conn)
		n.conn = Connected
	case n.conn == Connected && p.VerifySource && n.disk == UpToDate:
		n.conn = VerifyT
	case n.conn == VerifyT && !p.VerifySource:
		n.conn = Connected
	case n.conn == Connected && n.disk == UpToDate && oldPeerDisk > Inconsistent && p.Disk == Inconsistent:
		// The peer invalidated its data: this node is the source.
		n.startSource(false, "peer invalidated its data")
	case n.conn == Connected && n.disk == UpToDate && !oldPeerDisk.hasData() && p.Disk == Inconsistent && p.Role == Primary:
		// The Diskless Primary attached a disk that is behind: it
		// resyncs from this node in place (attached).
		n.startSource(false, "the Diskless Primary attached a disk")
	}
}

// Verifying reports that this node runs online verify as VerifyS.
func (n *Node) Verifying() bool { return n.conn == VerifyS }
