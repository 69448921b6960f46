package fsm

import "fmt"

// Role is a node's role (DRBD's drbd_role).
type Role uint8

// The roles.
const (
	RoleUnknown Role = iota // the peer's role while not connected
	Secondary
	Primary
)

var roleNames = [...]string{"Unknown", "Secondary", "Primary"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("Role(%d)", r)
}

// ConnState is the state of the peer connection, with DRBD 8.4's names
// (drbd_conns). StartingSyncS/T, Ahead and Behind are named for the
// status file but never entered (twinblock goes straight to WFBitMapS/T
// and has no congestion policy).
type ConnState uint8

// The connection states.
const (
	StandAlone     ConnState = iota // not trying to connect
	Disconnecting                   // tearing down on request
	Unconnected                     // about to try
	Timeout                         // the peer stopped answering (ping-timeout, ko-count)
	BrokenPipe                      // the connection broke
	NetworkFailure                  // the connection could not be used
	ProtocolError                   // the peer violated the protocol
	TearDown                        // the peer closed the connection
	WFConnection                    // waiting for the peer (DRBD 9: Connecting)
	WFReportParams                  // connected, exchanging parameters
	Connected                       // replicating
	StartingSyncS
	StartingSyncT
	WFBitMapS
	WFBitMapT
	WFSyncUUID
	SyncSource
	SyncTarget
	PausedSyncS
	PausedSyncT
	VerifyS
	VerifyT
	Ahead
	Behind
)

var connNames = [...]string{
	"StandAlone", "Disconnecting", "Unconnected", "Timeout", "BrokenPipe", "NetworkFailure",
	"ProtocolError", "TearDown", "WFConnection", "WFReportParams", "Connected",
	"StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID",
	"SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT", "VerifyS", "VerifyT", "Ahead", "Behind",
}

func (c ConnState) String() string {
	if int(c) < len(connNames) {
		return connNames[c]
	}
	return fmt.Sprintf("ConnState(%d)", c)
}

// Established reports a usable connection (Connected or later).
func (c ConnState) Established() bool { return c >= Connected }

// Syncing reports the states of a resync or verify in progress, from the
// bitmap exchange on.
func (c ConnState) Syncing() bool { return c > Connected }

// DiskState is the state of a node's data (drbd_disk_state), ordered as
// DRBD orders them: comparisons such as d >= Outdated are meaningful.
type DiskState uint8

// The disk states.
const (
	Diskless DiskState = iota
	Attaching
	Failed
	Negotiating
	Inconsistent
	Outdated
	DUnknown // the peer's disk while not connected
	Consistent
	UpToDate
)

var diskNames = [...]string{
	"Diskless", "Attaching", "Failed", "Negotiating", "Inconsistent", "Outdated", "DUnknown", "Consistent", "UpToDate",
}

func (d DiskState) String() string {
	if int(d) < len(diskNames) {
		return diskNames[d]
	}
	return fmt.Sprintf("DiskState(%d)", d)
}

// hasData reports a disk holding data that can take writes (DRBD's
// D_INCONSISTENT and better, except DUnknown).
func (d DiskState) hasData() bool { return d >= Inconsistent && d != DUnknown }

// State is the externally visible state of a node and what it knows of
// its peer.
type State struct {
	Role     Role
	PeerRole Role
	Conn     ConnState
	Disk     DiskState
	PeerDisk DiskState
}

// String is the /proc/drbd form: cs:… ro:…/… ds:…/….
func (s State) String() string {
	return fmt.Sprintf("cs:%s ro:%s/%s ds:%s/%s", s.Conn, s.Role, s.PeerRole, s.Disk, s.PeerDisk)
}

// IOErrorPolicy is on-io-error.
type IOErrorPolicy uint8

// The policies.
const (
	OnErrorDetach IOErrorPolicy = iota // the disk is dropped; I/O continues through the peer
	OnErrorPassOn                      // the error goes to the NBD client; the disk stays
)

// StateError is a refused state change, worded as DRBD's
// ("State change failed: (-2) Need access to UpToDate data").
type StateError struct {
	Code int
	Msg  string
}

func (e *StateError) Error() string {
	return fmt.Sprintf("State change failed: (%d) %s", e.Code, e.Msg)
}

// DRBD's refusal codes (drbd_strings.c) that twinblock uses.
var (
	ErrTwoPrimaries      = &StateError{-1, "Multiple primaries not allowed by config"}
	ErrNoUpToDateDisk    = &StateError{-2, "Need access to UpToDate data"}
	ErrNoRemoteDisk      = &StateError{-5, "Can not start OV/resync since peer has no disk"}
	ErrResyncRunning     = &StateError{-8, "Can not start OV/resync since it is already active"}
	ErrIsDiskless        = &StateError{-11, "Device is diskless, the requested operation requires a disk"}
	ErrDeviceInUse       = &StateError{-12, "Device is held open by someone"}
	ErrNoVerifyAlg       = &StateError{-14, "Can not start OV/resync since verify-alg is not configured"}
	ErrNeedConnection    = &StateError{-15, "Need a connection to start verify or resync"}
	ErrConnectedOutdates = &StateError{-17, "Refusing to be Outdated while Connected"}
	ErrInTransient       = &StateError{-18, "In transient state, retry after next state change"}
)

// Failure is a refused configuration request, worded as drbdsetup's
// ("Failure: (124) Device is attached to a disk (use detach first)").
type Failure struct {
	Code int
	Msg  string
}

func (e *Failure) Error() string { return fmt.Sprintf("Failure: (%d) %s", e.Code, e.Msg) }

// drbdsetup's configuration errors (drbd_nl ret codes) that twinblock uses.
var (
	ErrDiskConfigured = &Failure{124, "Device is attached to a disk (use detach first)"}
	ErrNetConfigured  = &Failure{125, "Device has a net-config (use disconnect first)"}
	// ErrDataNotCurrent: a Primary without a disk refused the disk it
	// opened (drbd_adm_attach's ERR_DATA_NOT_CURRENT); AttachRefused
	// wraps it with the reason.
	ErrDataNotCurrent = &Failure{156, "Can only attach to the data we lost last"}
)
