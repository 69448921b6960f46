package fsm

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/splitbrain"
)

// Config is a node's fixed configuration. Durations are in ticks; the
// driver ticks every 100 ms, DRBD's unit for these settings.
type Config struct {
	Name     string // resource name, for the log
	Self     string // this node's name
	Peer     string // the peer's name
	Protocol byte   // 'A', 'B' or 'C'
	// Dialer: this node makes the connection attempts; the other only
	// accepts. (The node whose name sorts first dials, so that two nodes
	// never race two connections.)
	Dialer      bool
	PingInt     int // ticks of silence before a Ping (ping-int)
	PingTimeout int // ticks to wait for the PingAck (ping-timeout)
	Timeout     int // ticks a write may wait for its ack before a Ping (timeout)
	KoCount     int // timeouts of one write before the peer is dropped (ko-count; 0 = never)
	ConnectInt  int // the longest wait between connection attempts (connect-int)
	OnIOError   IOErrorPolicy
	// VerifyAlg: verify-alg is configured (online verify may start).
	VerifyAlg bool
	// SplitBrain: the after-sb policies and rr-conflict (net section).
	SplitBrain splitbrain.Policies
	// NewUUID returns a fresh random UUID for a new data generation.
	// Tests pass a deterministic source.
	NewUUID func() uint64
}

// Node is the state machine of one resource on one node: role,
// connection and disk, and the persistent generation identifiers. It is
// not safe for concurrent use and does no I/O: it takes events (Step,
// Tick) and says what to do in a Ready (see there), which the driver
// acts on before calling Advance.
//
// Invariants, checked after every Step and Tick (checkInvariants):
//   - Never Primary while the connected peer is Primary.
//   - A Primary has UpToDate data: its own disk, or (Diskless) an
//     established connection to a peer whose disk is UpToDate, or it
//     lost both and its IOMode fails all I/O.
//   - The IOMode published matches the state (ioMode), Serve only on a
//     Primary.
//   - The peer's role and disk are Unknown/DUnknown unless connected.
type Node struct {
	cfg Config

	role     Role
	conn     ConnState
	disk     DiskState
	peerRole Role
	peerDisk DiskState
	peerGI   genid.GI

	gi             genid.GI // the attached disk's; kept after a detach
	exposed        uint64   // a Primary: the current UUID of the data it serves
	crashedPrimary bool
	discardMyData  bool
	// missed: the data path acknowledged writes no disk of this node
	// holds (Attached.Missed), and no disk attached since was resynced
	// in full. Kept across a refused attach.
	missed bool
	// bitmapLost: a disk failed here since the last attach; its bitmap
	// may not have reached it (a failed disk takes no more metadata
	// writes), so what the peer lacks is unknown. The next disk
	// attached has every block marked out of sync (its state as its
	// flags say): whichever way the next resync goes, it is full.
	bitmapLost bool
	// attachRefused: why the last attach opened a disk and closed it
	// again (nil: it did not); the driver fails the verb with it.
	attachRefused error
	openCount     int
	handshake     *Handshake // the last sync handshake, for explain
	userPaused    bool       // pause-sync here; kept across connections
	peerPaused    bool       // pause-sync on the peer

	// connecting
	wantConnect bool
	dialIn      int // ticks until the next attempt
	backoff     int // current wait between attempts
	dialing     bool

	// liveness of the established connection
	lastReceived uint64
	silent       int // ticks without a message
	pingWait     int // ticks waiting for a PingAck, -1 if none outstanding
	oldest       uint64
	oldestAge    int
	ko           int

	ready      Ready
	lastMeta   MetaState
	metaValid  bool
	lastIOMode IOMode
}

// New returns a node: Secondary, StandAlone, Diskless.
func New(cfg Config) *Node {
	cfg = withDefaults(cfg)
	if cfg.NewUUID == nil {
		panic("fsm: Config.NewUUID is required")
	}
	n := &Node{cfg: cfg, role: Secondary, conn: StandAlone, disk: Diskless, peerRole: RoleUnknown, peerDisk: DUnknown, pingWait: -1}
	n.lastIOMode = n.ioMode()
	return n
}

// ErrReconfigureConnected: adjust changed what a connection runs on
// (protocol, timeouts, policies) while the node is not StandAlone.
var ErrReconfigureConnected = errors.New("the connection's settings change only while StandAlone (disconnect first)")

// ErrReconfigureIdentity: adjust changed the resource's or a host's name.
var ErrReconfigureIdentity = errors.New("a resource's or host's name cannot change on a running resource (down it first)")

// Reconfigure replaces the configuration's tunables (adjust): the
// protocol, the timeouts, on-io-error, verify-alg and the split-brain
// policies. The identity (Name, Self, Peer, Dialer) cannot change, and
// NewUUID stays. A change of anything but OnIOError needs the node
// StandAlone (the driver disconnects first): a connection keeps what it
// negotiated until it ends. The state does not change.
func (n *Node) Reconfigure(cfg Config) error {
	cfg = withDefaults(cfg)
	cfg.NewUUID = n.cfg.NewUUID
	if cfg.Name != n.cfg.Name || cfg.Self != n.cfg.Self || cfg.Peer != n.cfg.Peer || cfg.Dialer != n.cfg.Dialer {
		return ErrReconfigureIdentity
	}
	live, next := n.cfg, cfg
	live.OnIOError = cfg.OnIOError
	live.NewUUID, next.NewUUID = nil, nil // funcs are never DeepEqual
	if !reflect.DeepEqual(live, next) && n.conn != StandAlone {
		return ErrReconfigureConnected
	}
	n.cfg = cfg
	return nil
}

// withDefaults fills the zero tunables of cfg with their defaults.
func withDefaults(cfg Config) Config {
	if cfg.Protocol == 0 {
		cfg.Protocol = 'C'
	}
	if cfg.ConnectInt <= 0 {
		cfg.ConnectInt = 100
	}
	if cfg.PingInt <= 0 {
		cfg.PingInt = 100
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 5
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60
	}
	return cfg
}

// State returns the current state.
func (n *Node) State() State {
	return State{Role: n.role, PeerRole: n.peerRole, Conn: n.conn, Disk: n.disk, PeerDisk: n.peerDisk}
}

// GI returns the generation identifiers (zero while Diskless).
func (n *Node) GI() genid.GI { return n.gi }

// Flags returns the managed superblock flags for the current state
// (drbd_state.c's rule set, see flags).
func (n *Node) Flags() genid.Flags { return n.flags() }

// CrashedPrimary reports that the attached disk's node crashed while
// Primary and has not resynced since.
func (n *Node) CrashedPrimary() bool { return n.crashedPrimary }

// DiscardMyData reports the --discard-my-data of the last connect.
func (n *Node) DiscardMyData() bool { return n.discardMyData }

// Policies returns the split-brain configuration (sent to the peer).
func (n *Node) Policies() splitbrain.Policies { return n.cfg.SplitBrain }

// LastHandshake returns the last sync handshake (nil before the first).
func (n *Node) LastHandshake() *Handshake { return n.handshake }

// SplitBrain reports that the last handshake found a split brain that
// nothing resolved; it returns the rule that found it.
func (n *Node) SplitBrain() (bool, int) {
	if n.handshake == nil || n.handshake.Outcome.Decision != splitbrain.SplitBrainDrop {
		return false, 0
	}
	return true, n.handshake.Outcome.Rule
}

// AttachRefused returns why the disk the last attach opened was refused
// and closed again (wrapping ErrDataNotCurrent), or nil. The Attached
// step itself succeeds: the refusal is a state (Diskless) and an action
// (ActCloseDisk), and this is what the verb that asked reports.
func (n *Node) AttachRefused() error { return n.attachRefused }

// IOMode returns the I/O mode for the current state.
func (n *Node) IOMode() IOMode { return n.ioMode() }

// HasReady reports whether Ready has something to do.
func (n *Node) HasReady() bool { return !n.ready.Empty() }

// Ready returns what to do; see Ready for the order. Call Advance when
// done.
func (n *Node) Ready() Ready { return n.ready }

// Advance acknowledges the last Ready.
func (n *Node) Advance() { n.ready = Ready{} }

// Step applies an event. Commands that the state does not allow return a
// *StateError or *Failure and change nothing.
func (n *Node) Step(e Event) error {
	before := n.State()
	err := n.step(e)
	n.finish(before)
	return err
}

func (n *Node) step(e Event) error {
	switch e := e.(type) {
	case AttachBegin:
		if n.disk != Diskless {
			return ErrDiskConfigured
		}
		n.disk = Attaching
		n.attachRefused = nil
		n.act(ActOpenDisk, "attach")
	case Attached:
		if n.disk != Attaching {
			return ErrInTransient
		}
		n.attached(e)
	case AttachFailed:
		if n.disk == Attaching {
			n.disk = Diskless
			n.logf("attach failed: %v", e.Err)
		}
	case Detach:
		return n.detach()
	case DiskFailed:
		n.diskFailed(e.Err)
	case Connect:
		if n.conn != StandAlone {
			return ErrNetConfigured
		}
		n.discardMyData = e.DiscardMyData
		n.startConnecting()
	case Disconnect:
		n.wantConnect = false
		n.discardMyData = false
		if n.conn.Established() {
			n.act(ActCloseLink, "disconnect requested")
		}
		if n.conn != StandAlone {
			n.act(ActStopConnecting, "disconnect")
		}
		n.lostPeer(StandAlone)
	case DialFailed:
		n.dialing = false
		if n.conn != WFConnection {
			return nil
		}
		if e.Fatal {
			n.logf("connection refused: %v; going StandAlone", e.Err)
			n.wantConnect = false
			n.act(ActStopConnecting, "fatal handshake failure")
			n.conn = StandAlone
		}
	case LinkUp:
		n.dialing = false
		if n.conn != WFConnection {
			// A connection that completed after disconnect: drop it.
			n.act(ActCloseLink, "not connecting")
			return nil
		}
		if why := n.changedSince(e.Sent, e.OutOfSync); why != "" {
			// The peer decides on what this node sent, so this node
			// may not decide on anything else: a promotion (with its
			// new current UUID) between the two made the peer see the
			// same generation and connect in sync while this node
			// became the sync source of the blocks the peer had marked
			// (finding 13, the dishonest seeds). Again, with the
			// state as it is now.
			n.act(ActCloseLink, "state changed during the handshake")
			n.logf("dropping the new connection: %s since this node's State was sent; connecting again", why)
			return nil
		}
		n.linkUp(e.Peer, e.Sent.OutOfSync)
	case PeerChanged:
		if n.conn.Established() {
			n.peerChanged(e.Peer)
		}
	case PeerWriteFailed:
		if n.conn.Established() {
			// The peer did not take a write (or flush) this node is
			// about to acknowledge with its blocks marked out of sync:
			// Connected with an UpToDate peer would now be a lie. The
			// connection is dropped; the reconnect resyncs the marks.
			n.dropLink(NetworkFailure, fmt.Sprintf("peer did not take a write: %v", e.Err))
		}
	case MarkedWhileInSync:
		if n.conn == Connected && n.disk == UpToDate && n.peerDisk == UpToDate {
			n.dropLink(NetworkFailure, fmt.Sprintf("%d blocks marked out of sync while connected in sync: renegotiating", e.Blocks))
		}
	case LinkDown:
		if !n.conn.Established() && n.conn != WFReportParams {
			return nil
		}
		n.logf("connection lost (%s): %v", e.Cause, e.Err)
		n.lostPeer(e.Cause)
		n.startConnecting()
	case Promote:
		return n.promote(e.Force)
	case Demote:
		return n.demote(e.Force)
	case Outdate:
		return n.outdate()
	case Superseded:
		if n.role == Primary {
			n.logf("a newer Primary replaced this one (quorum epoch): demoted, its clients' requests fail")
			n.role = Secondary
			n.gi.SetPrimary(false)
		}
	case OpenCount:
		n.openCount = e.N
	case BitmapReceived:
		return n.bitmapReceived()
	case SyncUUIDReceived:
		n.syncUUIDReceived(e.UUID)
	case ResyncDone:
		n.resyncDone()
	case ResyncFailed:
		if n.conn.Established() {
			n.dropLink(NetworkFailure, fmt.Sprintf("resync failed: %v", e.Err))
		}
	case VerifyDone:
		n.verifyDone()
	case Invalidate:
		return n.invalidate()
	case InvalidateRemote:
		return n.invalidateRemote()
	case PauseSync:
		n.pauseSync(true)
	case ResumeSync:
		n.pauseSync(false)
	case StartVerify:
		return n.startVerify(n.cfg.VerifyAlg)
	default:
		panic(fmt.Sprintf("fsm: unknown event %T", e))
	}
	return nil
}

// Tick advances time by one tick (100 ms) with the driver's view of the
// connection.
func (n *Node) Tick(a Activity) {
	before := n.State()
	n.tick(a)
	n.finish(before)
}

func (n *Node) tick(a Activity) {
	switch {
	case n.conn == WFConnection && n.cfg.Dialer && !n.dialing:
		n.dialIn--
		if n.dialIn <= 0 {
			n.dialing = true
			n.act(ActDial, "")
			n.backoff = min(max(2*n.backoff, 1), n.cfg.ConnectInt)
			n.dialIn = n.backoff
		}
	case n.conn.Established():
		n.watchPeer(a)
	}
}

// watchPeer is DRBD's dead-peer detection: a Ping after ping-int ticks of
// silence, or when a write waited timeout ticks for its ack; no PingAck
// within ping-timeout ends the connection (Timeout), and so does one
// write outstanding for ko-count timeouts while the peer answers pings.
func (n *Node) watchPeer(a Activity) {
	if a.Received != n.lastReceived {
		n.lastReceived = a.Received
		n.silent = 0
		n.pingWait = -1
	} else {
		n.silent++
	}
	if n.pingWait >= 0 {
		n.pingWait++
		if n.pingWait > n.cfg.PingTimeout {
			n.dropLink(Timeout, "PingAck did not arrive in time")
			return
		}
	}
	ping := n.silent >= n.cfg.PingInt
	if a.Pending > 0 {
		if a.OldestPending != n.oldest {
			n.oldest, n.oldestAge, n.ko = a.OldestPending, 0, 0
		}
		n.oldestAge++
		if n.oldestAge >= n.cfg.Timeout {
			n.oldestAge = 0
			n.ko++
			if n.cfg.KoCount > 0 && n.ko >= n.cfg.KoCount {
				n.dropLink(Timeout, fmt.Sprintf("peer did not complete write %d in %d × timeout", n.oldest, n.ko))
				return
			}
			ping = true
		}
	} else {
		n.oldest, n.oldestAge, n.ko = 0, 0, 0
	}
	if ping && n.pingWait < 0 {
		n.pingWait = 0
		n.silent = 0
		n.act(ActSendPing, "")
	}
}

func (n *Node) dropLink(cause ConnState, why string) {
	n.act(ActCloseLink, why)
	n.logf("%s", why)
	n.lostPeer(cause)
	n.startConnecting()
}

func (n *Node) startConnecting() {
	if n.conn == StandAlone || !n.wantConnect {
		n.act(ActStartConnecting, "")
	}
	n.wantConnect = true
	n.conn = WFConnection
	n.dialIn, n.backoff = 0, 0
	n.dialing = false
}

func (n *Node) resetLiveness() {
	n.lastReceived, n.silent, n.pingWait = 0, 0, -1
	n.oldest, n.oldestAge, n.ko = 0, 0, 0
}

// attached computes the disk state of a freshly attached disk as DRBD's
// drbd_adm_attach does (without fencing, which twinblock does not have:
// fencing dont-care): consistent data that was UpToDate is UpToDate,
// consistent data that was not is Outdated, the rest Inconsistent.
func (n *Node) attached(e Attached) {
	n.missed = n.missed || e.Missed
	if n.bitmapLost {
		n.bitmapLost = false
		n.ready.SetAllOutOfSync = true
		n.logf("a disk failed here since the last attach, and its bitmap may be incomplete: every block out of sync")
	}
	upToDate := e.Flags&genid.FlagConsistent != 0 && e.Flags&genid.FlagWasUpToDate != 0
	if n.role == Primary && (n.missed || !upToDate || !genid.Equal(e.GI[genid.Current], n.exposed)) {
		// A Primary serves generation n.exposed through its peer; this
		// disk holds another one (drbd_adm_attach's ERR_DATA_NOT_CURRENT),
		// or lacks writes of it, or was not UpToDate when it left: it
		// can only be resynced from an UpToDate peer. (A Primary never
		// holds a disk that is not UpToDate without one: the torture
		// test's first long run hit that invariant's panic here.)
		if !(n.conn.Established() && n.peerDisk == UpToDate) {
			n.disk = Diskless
			n.act(ActCloseDisk, "attach refused")
			var why string
			switch {
			case n.missed:
				why = "this Primary acknowledged writes the disk does not hold, and no UpToDate peer can resync it"
			case !upToDate:
				why = fmt.Sprintf("the disk was not UpToDate (flags %s), and no UpToDate peer can resync it", e.Flags)
			default:
				why = fmt.Sprintf("the disk holds generation %016X, this Primary serves %016X", e.GI[genid.Current], n.exposed)
			}
			n.attachRefused = fmt.Errorf("%w: %s", ErrDataNotCurrent, why)
			n.logf("attach refused: %s", why)
			if n.missed && upToDate {
				// What this node knows of the missed writes is in
				// memory; the disk says UpToDate. Before it is closed
				// it says Inconsistent, so that after a restart of
				// this node it is never promoted, nor a sync source,
				// as it is (torture seed 1663341875507598789: the
				// restarted Primary overwrote its Inconsistent peer,
				// the only holder of a write acknowledged after the
				// disk failed). DRBD writes nothing to a disk it
				// refuses.
				ms := MetaState{GI: e.GI, Flags: e.Flags & ManagedFlags &^ (genid.FlagConsistent | genid.FlagWasUpToDate)}
				n.ready.Meta = &ms
				n.logf("the refused disk's flags now say Inconsistent: it lacks acknowledged writes")
			}
			return
		}
		n.gi = e.GI
		n.crashedPrimary = e.Flags&genid.FlagCrashedPrimary != 0
		n.disk = Inconsistent
		n.lastMeta, n.metaValid = MetaState{GI: n.gi, Flags: e.Flags & ManagedFlags}, true
		switch {
		case n.missed:
			n.logf("attached disk lacks writes this Primary acknowledged through its peer: Inconsistent until resynced in full")
		case !upToDate:
			n.logf("attached disk was not UpToDate (flags %s): Inconsistent until resynced in full", e.Flags)
		default:
			n.logf("attached disk of generation %016X is behind the data served (%016X): Inconsistent until resynced in full", e.GI[genid.Current], n.exposed)
		}
		// The writes this Primary made through its peer while it had no
		// disk are in no bitmap this disk knows of, and the peer cannot
		// tell them from older ones: the whole disk is resynced, in
		// place (dropping the connection would leave the Primary
		// without data). The peer becomes the source when it sees this
		// disk turn Inconsistent (peerSync).
		n.ready.SetAllOutOfSync = true
		n.ready.SendBitmap = true
		n.conn = WFBitMapT
		n.missed = false
		return
	}
	n.gi = e.GI
	n.crashedPrimary = e.Flags&genid.FlagCrashedPrimary != 0
	switch {
	case n.missed:
		// (A failed disk that missed nothing attaches as it was: the
		// writes that failed on it failed, or, on a Secondary, were
		// refused to the Primary, which marked them. It may be the
		// only copy of the data.)
		n.disk = Inconsistent
		n.ready.SetAllOutOfSync = true
		n.missed = false
		n.logf("attached disk lacks writes this node acknowledged: Inconsistent, every block out of sync")
	case e.Flags&genid.FlagConsistent == 0:
		n.disk = Inconsistent
	case e.Flags&genid.FlagWasUpToDate != 0:
		n.disk = UpToDate
	default:
		n.disk = Outdated
	}
	n.lastMeta, n.metaValid = MetaState{GI: n.gi, Flags: e.Flags & ManagedFlags}, true
	if n.conn.Established() {
		// The peer must hear of the disk and decide again whether a
		// resync is needed: reconnect (DRBD renegotiates in place).
		n.dropLink(NetworkFailure, "disk attached while connected: renegotiating")
	}
}

func (n *Node) detach() error {
	if n.disk == Diskless {
		return nil
	}
	if n.disk == Attaching {
		return ErrInTransient
	}
	if n.role == Primary && !(n.conn.Established() && n.peerDisk == UpToDate) {
		return ErrNoUpToDateDisk
	}
	if n.conn.Established() && n.peerRole == Primary && n.peerDisk != UpToDate {
		// The Primary peer reads and writes through this disk.
		return ErrNoUpToDateDisk
	}
	n.disk = Diskless
	n.metaValid = false
	n.act(ActCloseDisk, "detach")
	n.endSyncWithoutDisk()
	return nil
}

// endSyncWithoutDisk: a resync or verify cannot go on without this
// node's disk; the connection is renegotiated.
func (n *Node) endSyncWithoutDisk() {
	if n.conn.Syncing() {
		n.dropLink(NetworkFailure, "disk gone during "+n.conn.String()+": renegotiating")
	}
}

// diskFailed applies on-io-error. With detach, the disk is dropped
// (Failed, then Diskless) and a Primary carries on through its peer if it
// can; with pass_on nothing changes here: the data path returns the
// error to the client.
func (n *Node) diskFailed(err error) {
	if n.cfg.OnIOError == OnErrorPassOn || n.disk == Diskless || n.disk == Attaching {
		return
	}
	n.logf("local disk failed: %v; detaching (on-io-error detach)", err)
	n.bitmapLost = true
	n.disk = Diskless
	n.metaValid = false
	n.act(ActCloseDisk, "on-io-error detach")
	n.endSyncWithoutDisk()
}

func (n *Node) promote(force bool) error {
	if n.role == Primary {
		return nil
	}
	if n.conn.Established() && n.peerRole == Primary {
		return ErrTwoPrimaries
	}
	switch {
	case n.disk == UpToDate:
	case n.disk == Diskless:
		if !(n.conn.Established() && n.peerDisk == UpToDate) {
			return ErrNoUpToDateDisk
		}
	case force && n.disk.hasData() && (n.conn == WFSyncUUID || n.conn == SyncTarget || n.conn == PausedSyncT || n.conn == WFBitMapT):
		// The resync is making this disk a copy of the peer's.
		return ErrNoUpToDateDisk
	case force && n.disk.hasData():
		n.logf("forced promotion: this node's data becomes UpToDate")
		n.disk = UpToDate
	default:
		return ErrNoUpToDateDisk
	}
	n.role = Primary
	n.gi.SetPrimary(true)
	n.exposed = n.gi[genid.Current]
	if n.disk == Diskless {
		n.exposed = n.peerGI[genid.Current]
	} else if force || (!n.conn.Established() && n.gi[genid.Bitmap] == 0) {
		n.newCurrentUUID()
	}
	if force && n.conn == Connected && n.peerDisk.hasData() && n.peerDisk < UpToDate {
		// The peer must get all of this node's data: the initial sync.
		n.peerNeedsFull()
		n.startSource(true, "forced promotion")
	}
	return nil
}

func (n *Node) demote(force bool) error {
	if n.role != Primary {
		return nil
	}
	if n.openCount > 0 && !force {
		return ErrDeviceInUse
	}
	if n.openCount > 0 {
		n.logf("forced demotion with the device open: its clients' requests fail")
	}
	n.role = Secondary
	n.gi.SetPrimary(false)
	return nil
}

// outdate is drbdadm outdate: consistent data becomes Outdated (its
// metadata loses the was-UpToDate flag, so a restart keeps it Outdated
// and it cannot be promoted without --force); a disk without consistent
// data is left as it is.
func (n *Node) outdate() error {
	switch {
	case n.conn.Established():
		return ErrConnectedOutdates
	case n.role == Primary:
		return ErrNoUpToDateDisk
	case n.disk == Diskless:
		return ErrIsDiskless
	case n.disk <= Outdated:
		return nil
	}
	n.disk = Outdated
	n.logf("this node's data marked Outdated (outdate)")
	return nil
}

// newCurrentUUID starts a new data generation (drbd_uuid_new_current).
func (n *Node) newCurrentUUID() {
	n.gi.NewCurrent(n.cfg.NewUUID(), n.role == Primary)
	n.exposed = n.gi[genid.Current]
	n.logf("new current UUID %016X", n.gi[genid.Current])
}

func (n *Node) peerNeedsFull() {
	n.ready.SetAllOutOfSync = true
	if n.gi[genid.Bitmap] == 0 {
		n.gi.NewCurrent(n.cfg.NewUUID(), n.role == Primary)
		n.exposed = n.gi[genid.Current]
		n.logf("new current UUID %016X for the full resync of %s", n.gi[genid.Current], n.cfg.Peer)
	}
}

// lostPeer leaves the connected states. A Primary that loses the peer's
// copy of the data starts a new data generation, so that the writes it takes from now on are told apart
// from the peer's when they meet again (after_state_ch: "lost contact to
// peer's copy of the data").
func (n *Node) lostPeer(cause ConnState) {
	hadPeerData := n.conn.Established() && n.peerDisk.hasData() && n.peerDisk != Outdated
	n.conn = cause
	n.peerRole, n.peerDisk, n.peerGI = RoleUnknown, DUnknown, genid.GI{}
	n.peerPaused = false
	n.resetLiveness()
	if hadPeerData && n.role == Primary && n.disk == UpToDate && n.gi[genid.Bitmap] == 0 {
		n.newCurrentUUID()
	}
	if n.role == Primary && n.disk != UpToDate {
		n.logf("Primary without UpToDate data lost its peer: I/O fails until the peer returns")
	}
}

// linkUp runs the sync handshake on a fresh connection
// (drbd_sync_handshake, splitbrain.Negotiate) and acts on its outcome:
// the handlers it names, a demotion, the connection refused, or the
// resync it decided.
// changedSince reports how this node's state differs from sent, the
// State its handshake sent, in what the sync handshake decides on ("":
// not at all). Bits count only as none or some: a Primary's writes
// while it connects mark more blocks without changing the decision.
func (n *Node) changedSince(sent PeerInfo, outOfSync uint64) string {
	switch {
	case sent.Role != n.role:
		return fmt.Sprintf("the role changed (%s -> %s)", sent.Role, n.role)
	case sent.Disk != n.disk:
		return fmt.Sprintf("the disk state changed (%s -> %s)", sent.Disk, n.disk)
	case sent.GI != n.gi:
		return fmt.Sprintf("the generation identifiers changed (%s -> %s)", sent.GI, n.gi)
	case sent.CrashedPrimary != n.crashedPrimary:
		return "the crashed-primary flag changed"
	case sent.DiscardMyData != n.discardMyData:
		return "--discard-my-data changed"
	case (sent.OutOfSync == 0) != (outOfSync == 0):
		return fmt.Sprintf("the bitmap changed (%d -> %d bits set)", sent.OutOfSync, outOfSync)
	}
	return ""
}

func (n *Node) linkUp(p PeerInfo, outOfSync uint64) {
	n.resetLiveness()
	if n.disk == Diskless || p.Disk == Diskless {
		if n.role == Primary && p.Role == Primary {
			n.refuse(StandAlone, "both nodes are Primary (twinblock allows one Primary at a time)")
			return
		}
		if n.role == Primary && n.disk == Diskless && p.Disk.hasData() && !genid.Equal(p.GI[genid.Current], n.exposed) {
			// The peer's data is another generation than the one this
			// Primary served: serving it would make acknowledged
			// writes vanish (DRBD: "Can only connect to data with
			// current UUID").
			n.refuse(StandAlone, fmt.Sprintf("can only connect to data with current UUID %016X; the peer has %016X", n.exposed, p.GI[genid.Current]))
			return
		}
		// Nothing to compare: the one with data serves.
		n.established(p)
		return
	}
	if p.PoliciesSent {
		if k := n.cfg.SplitBrain.Incompatible(p.Policies); k != "" {
			n.refuse(StandAlone, fmt.Sprintf("incompatible %s settings: the two nodes' net sections must agree", k))
			return
		}
	}
	self := splitbrain.Side{GI: n.gi, CrashedPrimary: n.crashedPrimary, Primary: n.role == Primary,
		Inconsistent: n.disk == Inconsistent, Changed: outOfSync, DiscardMyData: n.discardMyData, InUse: n.openCount > 0}
	peer := splitbrain.Side{GI: p.GI, CrashedPrimary: p.CrashedPrimary, Primary: p.Role == Primary,
		Inconsistent: p.Disk == Inconsistent, Changed: p.OutOfSync, DiscardMyData: p.DiscardMyData}
	o := splitbrain.Negotiate(self, peer, n.cfg.SplitBrain, n.cfg.Self < n.cfg.Peer)
	n.handshake = &Handshake{Self: self, Peer: peer, Policies: n.cfg.SplitBrain, Outcome: o, ResolveConflicts: n.cfg.Self < n.cfg.Peer}
	for _, l := range o.Log {
		n.logf("%s", l)
	}
	n.ready.Handlers = append(n.ready.Handlers, o.Handlers...)
	if o.Refuse != "" {
		n.refuse(StandAlone, o.Refuse)
		return
	}
	if o.Demote {
		n.role = Secondary
		n.gi.SetPrimary(false)
	}
	switch o.Rule {
	case 34, 71:
		n.gi, _ = splitbrain.Correct(o.Rule, n.gi, p.GI)
		n.logf("was SyncSource, corrected myself (rule %d): %s", o.Rule, n.gi)
	case 35, 51:
		_, p.GI = splitbrain.Correct(o.Rule, n.gi, p.GI)
		n.logf("corrected the peer's tuple (rule %d): %s", o.Rule, p.GI)
	}
	if o.PeerDemotes {
		p.Role = Secondary // it demotes before it sends its next State
	}
	n.established(p)
	// DRBD clears --discard-my-data once a connection is established.
	n.discardMyData = false
	d := o.Decision
	switch {
	case d == splitbrain.NoSync:
		// Same data generation: whoever is UpToDate makes both so.
		if n.disk >= Outdated && p.Disk == UpToDate {
			n.disk = UpToDate
		}
		if p.Disk >= Outdated && n.disk == UpToDate {
			n.peerDisk = UpToDate
		}
	case d < 0: // this node is the sync target
		n.disk = Inconsistent
		n.peerDisk = UpToDate // DRBD's sanitize_state: a sync source is UpToDate
		n.ready.SetAllOutOfSync = d.Full()
		n.ready.SendBitmap = true
		n.conn = WFBitMapT
	default: // this node is the sync source
		n.peerDisk = Inconsistent
		n.disk = UpToDate // an Outdated or Consistent source becomes UpToDate (sanitize_state)
		n.ready.SetAllOutOfSync = d.Full()
		n.ready.SendBitmap = true
		n.conn = WFBitMapS
	}
	if d.Full() {
		n.logf("Writing the whole bitmap, full sync required after drbd_sync_handshake.")
	}
}

// established enters Connected with the peer's state.
func (n *Node) established(p PeerInfo) {
	n.conn = Connected
	n.peerRole, n.peerDisk, n.peerGI = p.Role, p.Disk, p.GI
	n.peerPaused = p.UserPaused
	if n.role == Primary && n.disk == Diskless {
		n.exposed = p.GI[genid.Current]
	}
	if p.Role == Primary && !p.Disk.hasData() && n.disk == UpToDate && n.gi[genid.Bitmap] == 0 {
		// A Diskless Primary writes through this disk alone: a new
		// generation, so that its own disk, when it comes back, is
		// told apart from this one (as in peerChanged).
		n.newCurrentUUID()
	}
}

// refuse ends a connection that the handshake rejected.
func (n *Node) refuse(to ConnState, why string) {
	n.logf("%s", why)
	n.act(ActCloseLink, why)
	n.act(ActStopConnecting, why)
	n.wantConnect = false
	// Leaving an established connection is losing the peer (a Primary
	// starts a new generation, as for any lost peer).
	n.lostPeer(to)
}

func (n *Node) peerChanged(p PeerInfo) {
	if p.Role == Primary && n.role == Primary {
		n.logf("peer became Primary while this node is Primary: dropping the connection")
		n.refuse(StandAlone, "two Primaries")
		return
	}
	oldDisk := n.peerDisk
	n.peerRole, n.peerDisk, n.peerGI = p.Role, p.Disk, p.GI
	if n.conn.Syncing() && p.Disk == Inconsistent {
		// Through the resync the peer is Inconsistent by design.
		oldDisk = Inconsistent
	}
	n.peerSync(oldDisk, p)
	if n.role == Primary && n.disk == Diskless {
		n.exposed = p.GI[genid.Current]
	}
	lostCopy := oldDisk.hasData() && oldDisk != Outdated && !(p.Disk.hasData() && p.Disk != Outdated)
	// The Primary's data now lives on one node only: whichever of the
	// two holds it starts a new generation (this node if it is Primary,
	// or if the Primary peer just lost its disk and writes through us).
	if lostCopy && (n.role == Primary || p.Role == Primary) && n.disk == UpToDate && n.gi[genid.Bitmap] == 0 {
		n.newCurrentUUID()
	}
}

// flags returns the managed superblock flags for the state (drbd_state.c
// __drbd_set_state's rules).
func (n *Node) flags() genid.Flags {
	var f genid.Flags
	if n.crashedPrimary {
		f |= genid.FlagCrashedPrimary
	}
	if n.role == Primary || (n.peerRole == Primary && n.peerDisk < Inconsistent) {
		f |= genid.FlagPrimaryInd
	}
	if n.conn.Established() {
		f |= genid.FlagConnectedInd
	}
	if n.disk > Inconsistent {
		f |= genid.FlagConsistent
	}
	if n.disk > Outdated {
		f |= genid.FlagWasUpToDate
	}
	if n.peerDisk >= Inconsistent && n.peerDisk <= Outdated {
		f |= genid.FlagPeerOutdated
	}
	return f
}

// ioMode derives the data path's mode from the state.
func (n *Node) ioMode() IOMode {
	m := IOMode{Protocol: n.cfg.Protocol, PassOn: n.cfg.OnIOError == OnErrorPassOn}
	m.Serve = n.role == Primary
	m.Local = n.disk.hasData()
	m.UpToDate = n.disk == UpToDate
	m.PeerUpToDate = n.conn.Established() && n.peerDisk == UpToDate
	m.Mirror = n.conn.Established() && n.peerDisk.hasData() && (m.Local || m.PeerUpToDate)
	m.PeerReads = n.disk != UpToDate && m.PeerUpToDate
	if m.PeerReads && m.Local && (n.conn == SyncTarget || n.conn == PausedSyncT) {
		// The bitmap is the union of both: what it does not mark is
		// already here.
		m.PeerReads, m.ReadDirtyFromPeer = false, true
	}
	if !m.Serve {
		// A Secondary writes only what the peer sends, through the link.
		m.Mirror, m.PeerReads, m.ReadDirtyFromPeer, m.PeerUpToDate = false, false, false, false
	}
	return m
}

// finish collects what changed into the Ready and checks invariants.
func (n *Node) finish(before State) {
	after := n.State()
	if before != after {
		n.ready.Log = append(n.ready.Log, describe(n.cfg.Name, before, after))
	}
	// The peer hears of changes to what State carries about this node.
	own := before.Role != after.Role || before.Disk != after.Disk ||
		(!before.Conn.Established() && after.Conn.Established())
	if n.metaValid {
		ms := MetaState{GI: n.gi, Flags: n.flags()}
		if ms != n.lastMeta {
			own = own || ms.GI != n.lastMeta.GI
			n.lastMeta = ms
			m := ms
			n.ready.Meta = &m
		}
	}
	n.ready.SendState = n.ready.SendState || (own && after.Conn.Established())
	if io := n.ioMode(); io != n.lastIOMode {
		n.lastIOMode = io
		n.ready.IOMode = &io
	}
	n.checkInvariants()
}

func (n *Node) checkInvariants() {
	if n.role == Primary && n.conn.Established() && n.peerRole == Primary {
		panic("fsm: two Primaries while connected")
	}
	if n.role == Primary && n.disk != UpToDate && n.disk != Diskless && n.disk != Attaching &&
		!(n.conn.Established() && n.peerDisk == UpToDate) && n.conn != WFConnection {
		panic(fmt.Sprintf("fsm: Primary with disk %s and no UpToDate peer", n.disk))
	}
	if !n.conn.Established() && (n.peerRole != RoleUnknown || n.peerDisk != DUnknown) {
		panic(fmt.Sprintf("fsm: peer %s/%s while %s", n.peerRole, n.peerDisk, n.conn))
	}
	if n.lastIOMode.Serve && n.role != Primary {
		panic("fsm: serving I/O as Secondary")
	}
	switch n.conn {
	case WFBitMapS, SyncSource, PausedSyncS:
		if n.disk != UpToDate {
			panic(fmt.Sprintf("fsm: %s with disk %s", n.conn, n.disk))
		}
	case WFSyncUUID, SyncTarget, PausedSyncT:
		if n.disk != Inconsistent || n.peerDisk != UpToDate {
			panic(fmt.Sprintf("fsm: %s with disks %s/%s", n.conn, n.disk, n.peerDisk))
		}
	}
}

func (n *Node) act(k ActionKind, reason string) {
	n.ready.Actions = append(n.ready.Actions, Action{Kind: k, Reason: reason})
}

func (n *Node) logf(format string, args ...any) {
	n.ready.Log = append(n.ready.Log, n.cfg.Name+": "+fmt.Sprintf(format, args...))
}

// describe is DRBD's state-change log line: "r0: role( Secondary ->
// Primary ) disk( Inconsistent -> UpToDate )".
func describe(name string, a, b State) string {
	var sb strings.Builder
	sb.WriteString(name + ":")
	part := func(label string, x, y fmt.Stringer) {
		if x.String() != y.String() {
			fmt.Fprintf(&sb, " %s( %s -> %s )", label, x, y)
		}
	}
	part("role", a.Role, b.Role)
	part("peer", a.PeerRole, b.PeerRole)
	part("conn", a.Conn, b.Conn)
	part("disk", a.Disk, b.Disk)
	part("pdsk", a.PeerDisk, b.PeerDisk)
	return sb.String()
}
