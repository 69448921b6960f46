package fsm

import (
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/splitbrain"
)

// ManagedFlags are the superblock flags the state machine owns; the
// driver keeps the others (FlagALClean, FlagFullSync, …) as they are
// when it persists Ready.Meta.
const ManagedFlags = genid.FlagConsistent | genid.FlagPrimaryInd | genid.FlagConnectedInd |
	genid.FlagWasUpToDate | genid.FlagPeerOutdated | genid.FlagCrashedPrimary

// MetaState is the persistent part of the node's state: the generation
// identifiers and the managed flags.
type MetaState struct {
	GI    genid.GI
	Flags genid.Flags
}

// IOMode tells the data path what it may do. The driver publishes it
// atomically; the data path never calls into the state machine.
//
// Invariants (checked by checkInvariants after every step):
//   - Serve only on a Primary.
//   - Mirror only while the connection is established and the peer's
//     disk can take writes.
//   - Serve implies Local or Mirror or a refusal of every request: a
//     Primary that has neither fails I/O with EIO.
type IOMode struct {
	Serve bool // the NBD export accepts clients and writes (Primary)
	Local bool // the local disk is read and written
	// UpToDate: the local disk is UpToDate, so a write the peer did not
	// take may be acknowledged with its blocks marked out of sync (the
	// bitmap then says "the peer lacks this"). Without it, such a write
	// fails: the mark would mean "fetch this from the peer".
	UpToDate bool
	// Mirror: writes are sent to the peer. A node without a usable disk
	// mirrors only to an UpToDate peer: with an Inconsistent one no data
	// is accessible (DRBD's on-no-data-accessible io-error), and a write
	// acknowledged there would rest on a disk nobody may read.
	Mirror    bool
	PeerReads bool // reads are sent to the peer (no usable local disk)
	// PeerUpToDate: the link stands and the peer's disk is UpToDate.
	// Reads go to the peer only then (PeerReads, ReadDirtyFromPeer, or
	// after a local read error): an Inconsistent peer's blocks are stale.
	PeerUpToDate bool
	// ReadDirtyFromPeer: a sync target with UpToDate peer reads the
	// blocks still out of sync from the peer and the others locally.
	ReadDirtyFromPeer bool
	Protocol          byte // the replication protocol ('A', 'B', 'C')
	// PassOn: a local I/O error is returned to the NBD client
	// (on-io-error pass_on) instead of being reported as DiskFailed
	// and hidden by the peer.
	PassOn bool
}

// ActionKind is something the driver must do.
type ActionKind uint8

// The actions.
const (
	// ActStartConnecting: start accepting (and, on the dialing side,
	// dialing) connections from the peer.
	ActStartConnecting ActionKind = iota + 1
	// ActDial: make one connection attempt now (dialing side only).
	ActDial
	// ActStopConnecting: stop accepting and dialing.
	ActStopConnecting
	// ActCloseLink: close the established connection (Reason goes into
	// the Goodbye and the log). The driver steps LinkDown when it ended,
	// unless the node already left the connected states.
	ActCloseLink
	// ActSendPing: send a Ping on the connection.
	ActSendPing
	// ActOpenDisk: open the disk and its metadata, then step Attached or
	// AttachFailed.
	ActOpenDisk
	// ActCloseDisk: the disk is gone from the I/O path (the IOMode of the
	// same Ready no longer uses it): wait for local I/O in flight, close
	// the metadata cleanly (Failed: as cleanly as the disk allows) and
	// the disk.
	ActCloseDisk
)

var actionNames = [...]string{"", "start-connecting", "dial", "stop-connecting", "close-link", "send-ping",
	"open-disk", "close-disk"}

func (k ActionKind) String() string {
	if int(k) < len(actionNames) {
		return actionNames[k]
	}
	return "action?"
}

// Action is one thing to do, with its reason for the log.
type Action struct {
	Kind   ActionKind
	Reason string
}

// Ready is what the node needs done after a Step or Tick. The driver
// acts on the fields in this order, then calls Advance:
//
//  1. SetAllOutOfSync, then Meta if non-nil, are persisted and made
//     durable (meta.SyncBitmap, meta.Update) BEFORE anything else: a new
//     data generation must be on disk before a write of it is
//     acknowledged, and the flags before the peer hears of the state
//     they describe.
//  2. IOMode, if non-nil, is published to the data path.
//  3. Actions, in order. Because they follow the publication, an
//     ActCloseDisk finds the data path already off the disk: the
//     driver drains what is in flight and closes. ActCloseLink is the
//     exception: the driver closes the link BEFORE step 2, because
//     publishing drains the requests in flight, and those wait for the
//     link's acks, which a silent peer never sends; closed, the link
//     completes them with an error (the data path then marks them,
//     the state machine having left the connection already).
//  4. SendState: the node's State goes to the peer.
//  5. SendBitmap: this node's bitmap goes to the peer (after the State,
//     so the peer knows this node's disk state when the bitmap arrives).
//  6. SyncUUID, if non-zero, goes to the peer (the sync source, after
//     its rotated generation identifiers were persisted in step 1).
//  7. Handlers are started, in order (in the background, as drbdadm
//     runs them: a handler never blocks the node).
//
// Log holds lines for the log, in DRBD's style ("conn( WFConnection ->
// Connected )").
type Ready struct {
	// SetAllOutOfSync: mark every block out of sync (a full resync of
	// the peer was decided).
	SetAllOutOfSync bool
	Meta            *MetaState
	Actions         []Action
	IOMode          *IOMode
	SendState       bool
	SendBitmap      bool
	SyncUUID        uint64
	// Handlers names the handlers section's commands to run
	// (split-brain, initial-split-brain, pri-lost-after-sb, pri-lost).
	Handlers []string
	Log      []string
}

// Empty reports a Ready with nothing to do.
func (r *Ready) Empty() bool {
	return !r.SetAllOutOfSync && r.Meta == nil && len(r.Actions) == 0 && r.IOMode == nil && !r.SendState &&
		!r.SendBitmap && r.SyncUUID == 0 && len(r.Handlers) == 0 && len(r.Log) == 0
}

// Handshake is the last sync handshake's inputs and outcome, kept for
// explain: both sides as this node saw them, the policies, and what
// splitbrain.Negotiate decided.
type Handshake struct {
	Self, Peer       splitbrain.Side
	Policies         splitbrain.Policies
	ResolveConflicts bool
	Outcome          splitbrain.Outcome
}
