package fsm

import (
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/splitbrain"
)

// Event is an input to Node.Step: an administrator's command, or
// something the driver observed (a connection, a disk error).
type Event interface{ isEvent() }

// PeerInfo is what a node learns of its peer from the peer's State
// message.
type PeerInfo struct {
	Role           Role
	Disk           DiskState
	GI             genid.GI
	CrashedPrimary bool
	DiscardMyData  bool   // the peer connected with --discard-my-data
	OutOfSync      uint64 // bits set in the peer's bitmap
	UserPaused     bool   // the peer's administrator paused the resync (pause-sync)
	VerifySource   bool   // the peer runs online verify as VerifyS
	// Policies is the peer's split-brain configuration, if it sent one
	// (PoliciesSent); the handshake refuses a peer whose differs.
	Policies     splitbrain.Policies
	PoliciesSent bool
}

type (
	// AttachBegin: the administrator asked to attach the disk. Refused
	// unless Diskless; on success the node is Attaching and the driver
	// opens the disk and metadata, then steps Attached or AttachFailed.
	AttachBegin struct{}
	// Attached: the disk and its metadata are open. GI and Flags are the
	// superblock's after the activity log was recovered.
	Attached struct {
		GI    genid.GI
		Flags genid.Flags
		// Missed: since the last disk was closed, the data path
		// acknowledged writes that no disk of this node holds (made
		// through the peer while the local write failed, or while
		// Diskless). Such a disk is resynced in full.
		Missed bool
	}
	// AttachFailed: opening the disk or its metadata failed.
	AttachFailed struct{ Err error }
	// Detach: the administrator asked to drop the disk.
	Detach struct{}
	// DiskFailed: the local disk returned an error (on-io-error decides).
	DiskFailed struct{ Err error }

	// Connect: start connecting to the peer (drbdadm connect).
	Connect struct{ DiscardMyData bool }
	// Disconnect: drop the connection and stop connecting.
	Disconnect struct{}
	// DialFailed: a connection attempt (dial, accept or handshake)
	// failed. Fatal failures (wrong shared secret, incompatible
	// configuration) make the node StandAlone, as DRBD does; the others
	// are retried.
	DialFailed struct {
		Err   error
		Fatal bool
	}
	// LinkUp: a connection passed the handshake; Peer is the peer's
	// State from it, Sent this node's State as the handshake sent it
	// (its OutOfSync: the bits set in this node's bitmap then, the
	// "changes" the after-sb policies weigh against the peer's), and
	// OutOfSync the bits set now. Both sides decide on the two States
	// exchanged, so they reach the same decision; a node whose state
	// changed since it sent its own drops the connection and connects
	// again.
	LinkUp struct {
		Peer      PeerInfo
		Sent      PeerInfo
		OutOfSync uint64
	}
	// PeerChanged: the peer sent a new State while connected.
	PeerChanged struct{ Peer PeerInfo }
	// LinkDown: the connection ended. Cause is the state to report
	// (NetworkFailure, BrokenPipe, Timeout, ProtocolError, TearDown).
	LinkDown struct {
		Cause ConnState
		Err   error
	}

	// PeerWriteFailed: the peer refused or failed a write or flush the
	// data path mirrored over the established connection (a NegAck, a
	// request the link could not carry, the link ending under it). The
	// data path acknowledges such a write with its blocks marked out of
	// sync only after this step, so the node leaves the connected
	// states first (DRBD's peer-disk-failed on a negative ack; twinblock
	// drops the connection, and the reconnect resyncs what was marked).
	PeerWriteFailed struct{ Err error }

	// MarkedWhileInSync: the driver found Blocks marked out of sync in
	// this node's bitmap while Connected with both disks UpToDate and
	// no resync: writes that were in flight while the connection came up
	// went to this disk alone and were marked after the handshake had
	// counted the bits. Connected UpToDate/UpToDate would be a lie (DRBD
	// shows such oos beside it until a resync); the connection is
	// renegotiated, and its handshake resyncs the marks.
	MarkedWhileInSync struct{ Blocks uint64 }

	// Promote: drbdadm primary [--force].
	Promote struct{ Force bool }
	// Outdate: drbdadm outdate: this node's data is marked Outdated (it
	// may lack writes its peer acknowledged); refused while connected or
	// Primary.
	Outdate struct{}
	// Demote: drbdadm secondary. Force (secondary --force) demotes even
	// with the device open: its clients' requests fail from then on.
	Demote struct{ Force bool }
	// Superseded: the quorum group replaced this Primary (a newer
	// epoch; twinblock's quorum, issue 15). It demotes even with the
	// device open, as DRBD 9's on-suspended-primary-outdated
	// force-secondary: its clients' requests fail from now on, and
	// nothing it held is acknowledged again.
	Superseded struct{}
	// OpenCount: the number of NBD sessions on the export changed.
	OpenCount struct{ N int }

	// BitmapReceived: the peer's bitmap arrived and the driver merged it
	// (bit-or) into this node's. In WFBitMapS/T it completes the
	// exchange; while Connected it means the peer starts a resync as
	// source (its invalidate-remote or forced promotion), so this node
	// becomes the target.
	BitmapReceived struct{}
	// SyncUUIDReceived: the sync source's sync UUID arrived (WFSyncUUID).
	SyncUUIDReceived struct{ UUID uint64 }
	// ResyncDone: the sync target's resync engine fetched every block
	// out of sync and made them durable (data flushed, bitmap written).
	ResyncDone struct{}
	// ResyncFailed: the resync engine stopped on an error (the link or a
	// disk failed), or the peer's bitmap could not be merged: the
	// connection is renegotiated and the resync resumes from the bitmap.
	ResyncFailed struct{ Err error }
	// VerifyDone: the online verify this node started (VerifyS) covered
	// the whole device.
	VerifyDone struct{}

	// Invalidate: drbdadm invalidate: this node's data is discarded and
	// fully resynced from the peer.
	Invalidate struct{}
	// InvalidateRemote: drbdadm invalidate-remote: the peer's data is
	// discarded and fully resynced from this node.
	InvalidateRemote struct{}
	// PauseSync, ResumeSync: drbdadm pause-sync / resume-sync (the
	// user's pause flag, kept across reconnects).
	PauseSync  struct{}
	ResumeSync struct{}
	// StartVerify: drbdadm verify: online verify with this node as
	// VerifyS.
	StartVerify struct{}
)

func (AttachBegin) isEvent()       {}
func (Attached) isEvent()          {}
func (AttachFailed) isEvent()      {}
func (Detach) isEvent()            {}
func (Outdate) isEvent()           {}
func (DiskFailed) isEvent()        {}
func (Connect) isEvent()           {}
func (Disconnect) isEvent()        {}
func (DialFailed) isEvent()        {}
func (LinkUp) isEvent()            {}
func (PeerChanged) isEvent()       {}
func (LinkDown) isEvent()          {}
func (PeerWriteFailed) isEvent()   {}
func (MarkedWhileInSync) isEvent() {}
func (Promote) isEvent()           {}
func (Demote) isEvent()            {}
func (Superseded) isEvent()        {}
func (OpenCount) isEvent()         {}

func (BitmapReceived) isEvent()   {}
func (SyncUUIDReceived) isEvent() {}
func (ResyncDone) isEvent()       {}
func (ResyncFailed) isEvent()     {}
func (VerifyDone) isEvent()       {}
func (Invalidate) isEvent()       {}
func (InvalidateRemote) isEvent() {}
func (PauseSync) isEvent()        {}
func (ResumeSync) isEvent()       {}
func (StartVerify) isEvent()      {}

// Activity is what the driver reports on every tick about the live
// connection, so that the node can notice a silent peer without reading
// a clock.
type Activity struct {
	Received      uint64 // messages received on the connection so far
	Pending       int    // replicated requests waiting for the peer
	OldestPending uint64 // sequence number of the oldest of them
}
