package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/backup"
	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/pkg/metrics"
	"github.com/twinblock/twinblock/pkg/quorum"
	"github.com/twinblock/twinblock/pkg/status"
	"github.com/twinblock/twinblock/replication"
	"github.com/twinblock/twinblock/splitbrain"
)

// counters are the /proc/drbd statistics the data path keeps.
type counters struct {
	diskWritten, diskRead atomic.Uint64
	// peerWritten: bytes the link wrote to the local disk (the peer's
	// replicated writes, and resync): /proc/drbd's dw counts them too.
	// Kept apart from diskWritten, which the resync throttle reads as
	// application I/O.
	peerWritten              atomic.Uint64
	localPending, appPending atomic.Int64
	// apInFlight: bytes of the writes submitted to the peer and not yet
	// answered by it (ap-in-flight).
	apInFlight atomic.Int64
	// lat: the device's request latency by operation (the NBD requests,
	// from the device's entry to its answer); rtt: a replicated write's
	// round trip, from its submission to the link to the peer's answer.
	// nil histograms (tests) observe nothing.
	lat [numLatOps]*metrics.Histogram
	rtt *metrics.Histogram
}

// The operations the latency histograms tell apart.
const (
	latRead = iota
	latWrite
	latTrim
	latWriteZeroes
	latFlush
	numLatOps
)

// latOpNames are the op label's values, by latency operation.
var latOpNames = [numLatOps]string{"read", "write", "trim", "write_zeroes", "flush"}

// newCounters returns counters with their histograms.
func newCounters() *counters {
	c := &counters{rtt: metrics.NewHistogram(metrics.LatencyBuckets)}
	for i := range c.lat {
		c.lat[i] = metrics.NewHistogram(metrics.LatencyBuckets)
	}
	return c
}

// Latency returns the resource's latency histograms: the NBD requests by
// operation (read, write, trim, write_zeroes, flush) and the replicated
// writes' round trip to the peer.
func (r *Resource) Latency() (requests map[string]metrics.HistogramSnapshot, replication metrics.HistogramSnapshot) {
	requests = make(map[string]metrics.HistogramSnapshot, numLatOps)
	for i, h := range r.stats.lat {
		requests[latOpNames[i]] = h.Snapshot()
	}
	return requests, r.stats.rtt.Snapshot()
}

// Resource runs one resource of this node: the state machine, its disk,
// its peer link and its NBD export. One goroutine (run) owns the state
// machine and all of the resource's fields below mu; the data path uses
// only the device. Commands arrive through Do.
type Resource struct {
	name    string
	cfg     *config.Resource
	liveCfg atomic.Pointer[config.Resource] // cfg, for other goroutines (Config)
	self    *config.Host
	peer    *config.Host
	log     *slog.Logger
	changed func() // the status changed (the daemon rewrites the file)
	nodeID  int    // the place of this host's on section (status node-id)

	env   Env
	fsm   *fsm.Node
	dev   *device
	stats *counters
	// kernel is the kernel NBD device attached while serving (device
	// /dev/nbdN; kernel.go).
	kernel *kernelDevice
	// liveLink is link, for the counters Status reads between snapshots.
	liveLink atomic.Pointer[replication.Link]
	events   chan struct{} // a signal: inbox has events
	inboxMu  sync.Mutex
	inbox    []any
	cmds     chan command
	// fences carries the data path's and the link's requests to make
	// the state machine stop counting on a link (device's honest-status
	// invariant); run serves it, also while it waits (await).
	fences chan fenceReq
	// fenced is the last link the state machine stopped counting on
	// (stepped out of the connected states for): a fence for it
	// returns at once.
	fenced atomic.Pointer[replication.Link]

	// Owned by run.
	store storage   // the disk holder (storage.go)
	data  disk.Disk // the data area
	md    *meta.Meta
	curMD atomic.Pointer[meta.Meta] // md, for the link's goroutines
	link  *replication.Link
	// swap is the disk every link writes to (through peerlessDisk): the
	// attached data area, swapped at attach and detach, so that a link
	// that outlives a disk never touches a closed one, and a disk
	// attached under a standing link (a Diskless Primary's, resynced in
	// place) is the one it writes.
	swap *swapDisk
	// epochs is the epoch fence of a quorum resource (nil without), and
	// epoch the quorum epoch this node serves under as Primary (0: not
	// Primary, or no quorum).
	epochs   *epochFence
	epoch    atomic.Uint64
	outdater *peerOutdater // a quorum resource's fence-peer (nil without)
	// autoFailover: options { auto-failover yes; } (quorum resources);
	// sawPrimary (run only): this node was connected to a Primary peer
	// since it was last Primary itself; failingOver: an automatic
	// failover is under way (maybeFailover).
	autoFailover atomic.Bool
	sawPrimary   bool
	failingOver  atomic.Bool
	// grantMu orders a promotion's grant (Do) and tendGroup's giving
	// back of a stale one; tending: a tendGroup request is under way.
	grantMu sync.Mutex
	tending atomic.Bool
	// autoPromote is options { auto-promote yes; } (DRBD 9's): the
	// export listens on a Secondary too, and a client's connection
	// promotes the node (promoteOnOpen). autoPromoted: this Primary role
	// came from it, and ends once no client has been seen for
	// autoDemoteAfter (autoDemote); lastOpen: when a client was last
	// seen or let in (the clock's UnixNano). goingDown (run only): the
	// shutdown has begun, the export stays closed.
	autoPromote  atomic.Bool
	autoPromoted atomic.Bool
	autoDemoting atomic.Bool
	lastOpen     atomic.Int64
	goingDown    bool
	hadQuorum    bool // run only: the last tick found this node quorate
	conn         connector
	exp          exporter
	attachErr    error // why the last attach failed
	listenErr    error // why the last startConnecting could not listen
	exportErr    error // why the last openExport failed
	syncer       syncRunner
	auth         authority // who may be Primary (authority.go)
	handshakes   int       // connection setups running (handshake .. evLink)

	// keeper holds the backup-discarded journal (pkg/backup); run calls
	// its hooks, the link's disk reads the armed journal.
	keeper *backup.Keeper

	verifyFound atomic.Uint64 // 4 KiB blocks online verify found out of sync (this run)

	mu   sync.Mutex // guards snap and explain
	snap status.Resource
	// explain is what Explain reports, copied by publish.
	explain struct {
		hs   *fsm.Handshake
		at   time.Time // when hs ran
		gi   genid.GI
		oos  uint64
		gran int64
	}
	handshakeAt time.Time // owned by run
	// refusal is the quorum group's last refusal of a promotion of this
	// node, for explain (under mu).
	refusal struct {
		err error
		at  time.Time
	}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{}
}

// fenceReq asks run to make the state machine leave the connected
// states of link, because a mirrored write failed on it (write) or it
// ended with writes the peer may lack; done is closed when it has.
type fenceReq struct {
	link  *replication.Link
	err   error
	write bool
	// md, when set, makes it a disk fence instead: the local disk of
	// that metadata failed (err), and the state machine must have
	// stepped DiskFailed before the caller acknowledges a write that
	// disk does not hold.
	md   *meta.Meta
	done chan struct{}
}

type command struct {
	ev       fsm.Event
	shutdown bool   // stop the export, then disconnect, demote, detach
	fn       func() // run on run's goroutine instead (inspect)
	epoch    uint64 // Promote: the quorum epoch granted (0 without quorum)
	reply    chan error
}

// Internal events from the resource's goroutines to run.
type (
	evLink struct {
		link *replication.Link
		err  error
		hs   bool              // from handshake (not a failed dial)
		sent replication.State // this node's State, as the handshake sent it
	}
	evLinkClosed struct {
		link *replication.Link
		err  error
	}
	// evDiskFailed: an I/O error on the disk of the attachment md
	// (nil: none), for the state machine's DiskFailed; stale once md is
	// no longer the one attached.
	evDiskFailed struct {
		md  *meta.Meta
		err error
	}
	evAccepted  struct{ nc net.Conn }
	evPeerState struct {
		link *replication.Link
		st   replication.State
	}
	evBitmap struct {
		link *replication.Link
		rle  []byte
	}
	evSyncUUID struct {
		link *replication.Link
		uuid uint64
	}
)

// NewResource prepares resource cfg for the node named self, in the
// real environment. Nothing runs until Start.
func NewResource(cfg *config.Resource, self string, log *slog.Logger, changed func()) (*Resource, error) {
	return NewResourceEnv(cfg, self, log, changed, Env{})
}

// NewResourceEnv is NewResource in the environment env.
func NewResourceEnv(cfg *config.Resource, self string, log *slog.Logger, changed func(), env Env) (*Resource, error) {
	me, peer, err := cfg.Host(self)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := checkDigests(cfg); err != nil {
		return nil, err
	}
	r := &Resource{env: env.withDefaults(), name: cfg.Name, cfg: cfg, self: me, peer: peer, log: log.With("resource", cfg.Name), changed: changed,
		events: make(chan struct{}, 1), cmds: make(chan command), fences: make(chan fenceReq), done: make(chan struct{}),
		stats: newCounters()}
	r.liveCfg.Store(cfg)
	if cfg.Hosts[1] == me {
		r.nodeID = 1
	}
	r.dev = newDevice(r.diskError, r.stats)
	r.dev.fence = func(l *replication.Link, err error) { r.fence(l, err, true) }
	r.dev.fenceDisk = r.fenceDisk
	r.dev.linkLeft = func(l *replication.Link) bool {
		if r.fenced.Load() == l {
			return true
		}
		select {
		case <-l.Done(): // closed, and a later link fenced since
			return true
		default:
			return false
		}
	}
	r.swap = &swapDisk{written: &r.stats.peerWritten}
	r.store = &fileStorage{name: cfg.Name, host: me, disk: &cfg.Disk, open: r.env.OpenDisk, log: r.log}
	r.syncer = &engineSyncer{cfg: cfg, clock: r.env.Clock, log: r.log, ctx: func() context.Context { return r.ctx },
		post: r.post, diskError: r.diskError, await: r.await, lock: r.dev.lockRange, handler: r.runHandler, found: &r.verifyFound, curMD: r.curMD.Load,
		appIO: func() int64 { return int64(r.stats.diskWritten.Load() + r.stats.diskRead.Load()) }}
	r.auth = localAuthority{}
	if env.Quorum != nil {
		r.auth = quorumAuthority{svc: env.Quorum, resource: cfg.Name, self: quorum.NodeID(me.Name)}
		replaced := func(serving uint64) { r.post(evSuperseded{serving: serving}) }
		r.epochs = &epochFence{md: r.curMD.Load, serving: r.epoch.Load, replaced: replaced}
		o := &peerOutdater{auth: r.auth, epoch: r.epoch.Load, ctx: func() context.Context { return r.ctx }, replaced: replaced}
		r.dev.outdatePeer = o.outdate
		r.outdater = o
		r.dev.quorate = env.Quorum.Quorate
		r.dev.suspendNoQuorum.Store(cfg.Options.String("on-no-quorum") == "suspend-io")
		r.dev.stop = r.done
		r.autoFailover.Store(cfg.Options.Bool("auto-failover"))
	}
	r.autoPromote.Store(cfg.Options.Bool("auto-promote"))
	r.kernel = &kernelDevice{path: me.NBDDevice, export: cfg.Name, listen: me.NBDListen, log: r.log, wg: &r.wg, changed: changed}
	r.exp = &nbdExporter{name: cfg.Name, listen: me.NBDListen, net: r.env.Net, dev: r.dev, log: r.log, wg: &r.wg,
		promote: r.promoteOnOpen}
	r.keeper = backup.New(backup.Config{Enabled: cfg.Net.Bool("backup-discarded"), Resource: cfg.Name,
		Self: me.Name, Peer: peer.Name, Dir: backup.Dir(me), Log: r.log})
	fc, err := fsmConfig(cfg, me, peer)
	if err != nil {
		return nil, err
	}
	r.fsm = fsm.New(fc)
	r.snap = r.snapshotLocked()
	return r, nil
}

// checkDigests refuses a csums-alg or verify-alg twinblock does not have.
func checkDigests(cfg *config.Resource) error {
	for _, k := range []string{"csums-alg", "verify-alg"} {
		if alg := cfg.Net.String(k); alg != "" && !knownDigest(alg) {
			return fmt.Errorf("%s: %s: net { %s %s; }: unknown algorithm (twinblock has crc32c, md5, sha1, sha256)", cfg.Pos, cfg.Name, k, alg)
		}
	}
	return nil
}

// fsmConfig is the state machine's configuration for host me of cfg.
func fsmConfig(cfg *config.Resource, me, peer *config.Host) (fsm.Config, error) {
	proto := byte('C')
	if cfg.Protocol != "" {
		proto = cfg.Protocol[0]
	}
	policy := fsm.OnErrorDetach
	if cfg.Disk.String("on-io-error") == "pass_on" {
		policy = fsm.OnErrorPassOn
	}
	sb, err := splitBrainPolicies(cfg, me.Name, peer.Name)
	if err != nil {
		return fsm.Config{}, err
	}
	ticks := func(d time.Duration) int { return int(d / clock.Tick) }
	return fsm.Config{
		Name: cfg.Name, Self: me.Name, Peer: peer.Name, Protocol: proto,
		Dialer:      me.Name < peer.Name,
		PingInt:     ticks(cfg.Net.Duration("ping-int")),
		PingTimeout: ticks(cfg.Net.Duration("ping-timeout")),
		Timeout:     ticks(cfg.Net.Duration("timeout")),
		KoCount:     int(cfg.Net.Int("ko-count")),
		ConnectInt:  ticks(cfg.Net.Duration("connect-int")),
		OnIOError:   policy,
		VerifyAlg:   knownDigest(cfg.Net.String("verify-alg")),
		SplitBrain:  sb,
		NewUUID:     randomUUID,
	}, nil
}

// knownDigest reports a verify-alg or csums-alg twinblock implements.
func knownDigest(alg string) bool {
	if alg == "" {
		return false
	}
	_, _, err := replication.Digest(alg)
	return err == nil
}

func randomUUID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) &^ genid.UUIDPrimaryBit
}

// Name returns the resource's name.
func (r *Resource) Name() string { return r.name }

// Start runs the resource's goroutine. The resource is StandAlone,
// Diskless and Secondary until commands say otherwise (drbdadm up).
func (r *Resource) Start(ctx context.Context) {
	r.ctx, r.cancel = context.WithCancel(ctx)
	if r.conn == nil {
		r.conn = &streamConnector{name: r.name, self: r.self.Address, peer: r.peer.Address, net: r.env.Net, log: r.log,
			ctx: r.ctx, wg: &r.wg,
			onConn:       func(nc net.Conn) { r.post(evAccepted{nc: nc}) },
			onDialFailed: func(err error) { r.post(evLink{err: err}) }}
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(r.done)
		r.run()
	}()
}

// Do applies an administrator's command and waits for the state machine
// to have acted on it.
func (r *Resource) Do(ctx context.Context, ev fsm.Event) error {
	c := command{ev: ev, reply: make(chan error, 1)}
	var role fsm.Role
	var sessions int
	if isPromote(ev) {
		r.autoPromoted.Store(false) // an explicit promotion stays (promoteOnOpen marks its own)
	}
	switch ev.(type) {
	case fsm.Promote, fsm.Demote:
		if err := r.inspect(ctx, func() { role, sessions = r.fsm.State().Role, r.exp.Sessions() }); err != nil {
			return err
		}
		if r.kernel.attached() {
			sessions-- // the kernel device's own: detached below
		}
	}
	// The before-* handlers, on this goroutine (run never waits for a
	// script): their failure refuses the role change.
	switch {
	case isPromote(ev) && role != fsm.Primary:
		if err := r.runHandlerSync(ctx, "before-promote"); err != nil {
			return fmt.Errorf("State change failed: %w", err)
		}
	case isDemote(ev) && role == fsm.Primary && sessions == 0:
		// (With clients on the device the demotion is refused, -12:
		// the service on top is left running.)
		if err := r.runHandlerSync(ctx, "before-demote"); err != nil {
			return fmt.Errorf("State change failed: %w", err)
		}
	case isDemote(ev) && role == fsm.Primary && ev.(fsm.Demote).Force:
		// secondary --force with clients on the device: the service on
		// top is told, and the demotion goes ahead whatever it says.
		if err := r.runHandlerSync(ctx, "before-demote"); err != nil {
			r.log.Warn("secondary --force: before-demote failed; demoting anyway", "err", err)
		}
	}
	if d, ok := ev.(fsm.Demote); ok && role == fsm.Primary && (sessions <= 0 || d.Force) {
		if err := r.detachKernel(ctx, d.Force, max(sessions, 0)); err != nil {
			return err // the daemon names the resource
		}
	}
	if p, ok := ev.(fsm.Promote); ok && r.epochs != nil {
		// The quorum's grant first, on this goroutine: run never waits
		// for a commit. grantMu: tendGroup gives back no grant while
		// this one is being taken.
		r.grantMu.Lock()
		defer r.grantMu.Unlock()
		req := promoteRequest{Force: p.Force}
		if err := r.inspect(ctx, func() {
			req.Disk, req.Current = r.fsm.State().Disk, r.fsm.GI()[genid.Current]
		}); err != nil {
			return err
		}
		epoch, err := r.auth.Promote(ctx, req)
		if err != nil {
			r.mu.Lock()
			r.refusal.err, r.refusal.at = err, r.env.Clock.Now()
			r.mu.Unlock()
			return fmt.Errorf("State change failed: %w", err)
		}
		c.epoch = epoch
	}
	return r.send(ctx, c)
}

// GetGI is drbdadm get-gi for a resource that is up: the generation
// identifiers and flags as the state machine holds them now, in one
// line (genid.GetGI's form).
func (r *Resource) GetGI(ctx context.Context) (string, error) {
	var gi genid.GI
	var f genid.Flags
	if err := r.inspect(ctx, func() { gi, f = r.fsm.GI(), r.fsm.Flags() }); err != nil {
		return "", err
	}
	return genid.GetGI(gi, f), nil
}

// SuspendIO is drbdadm suspend-io (on) and resume-io: while suspended,
// the device holds every request it is sent, without starting it
// (status suspended:user); resume-io lets them run. A demotion, forced
// or not, fails the held ones.
func (r *Resource) SuspendIO(on bool) {
	r.dev.userSuspended.Store(on)
	if on {
		r.log.Warn("suspend-io: requests are held until resume-io")
	} else {
		r.log.Info("resume-io: held requests run")
	}
}

func isPromote(ev fsm.Event) bool { _, ok := ev.(fsm.Promote); return ok }
func isDemote(ev fsm.Event) bool  { _, ok := ev.(fsm.Demote); return ok }

// inspect runs fn on run's goroutine and returns once it ran.
func (r *Resource) inspect(ctx context.Context, fn func()) error {
	return r.send(ctx, command{fn: fn, reply: make(chan error, 1)})
}

func (r *Resource) send(ctx context.Context, c command) error {
	select {
	case r.cmds <- c:
	case <-r.done:
		return errors.New("node: resource stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status returns the latest snapshot for the status file and verbs.
func (r *Resource) Status() status.Resource {
	r.mu.Lock()
	s := r.snap
	r.fillCounters(&s)
	r.mu.Unlock()
	if q := r.env.Quorum; q != nil {
		// Live, not from the snapshot: the group changes without a
		// Ready of this node.
		self := quorum.NodeID(r.self.Name)
		v, _ := q.View(r.name)
		s.Quorum = &status.QuorumStatus{Have: q.Quorate(), Epoch: v.Epoch, Primary: string(v.Primary),
			Leader: string(q.Leader()), Outdated: v.Nodes[self] != nil && v.Nodes[self].Outdated}
	}
	if why := r.dev.suspendedWhy(); why != "" {
		s.Suspended, s.SuspendedWhy = true, why
	}
	s.KernelDevice, s.KernelAttached, s.KernelError = r.kernel.status()
	return s
}

// post hands an event to run. It never blocks: the data path and the
// link's goroutines call it, and run may be waiting for them (a mode
// change drains the requests in flight, Link.Close waits for its
// goroutines), so a bounded channel could deadlock.
func (r *Resource) post(ev any) {
	r.inboxMu.Lock()
	r.inbox = append(r.inbox, ev)
	r.inboxMu.Unlock()
	select {
	case r.events <- struct{}{}:
	default:
	}
}

// fence makes the state machine stop counting on link l before the
// caller marks blocks out of sync that l did not carry, and returns once
// it has (or the resource stopped). Any goroutine but run may call it;
// run serves it even while it waits for the data path (await).
func (r *Resource) fence(l *replication.Link, err error, write bool) {
	if l == nil || r.fenced.Load() == l {
		return
	}
	f := fenceReq{link: l, err: err, write: write, done: make(chan struct{})}
	select {
	case r.fences <- f:
	case <-r.done:
		return
	}
	<-f.done // run closes it before it looks at anything else
}

// fenceDisk makes the state machine take in the failure of the local
// disk whose metadata is md (on-io-error) and returns once it has, and
// the status shows it: the device calls it before acknowledging a write
// that disk failed, so no status says UpToDate for a disk that lacks an
// acknowledged write (the disk half of the honest status).
func (r *Resource) fenceDisk(md *meta.Meta, err error) {
	f := fenceReq{md: md, err: err, done: make(chan struct{})}
	select {
	case r.fences <- f:
	case <-r.done:
		return
	}
	<-f.done
}

// onFence serves a fence (run only). It only steps the state machine;
// what that Ready asks for (closing the link) follows in process.
func (r *Resource) onFence(f fenceReq) {
	defer close(f.done)
	if f.md != nil {
		if f.md == r.md {
			r.diskFailed(fsm.DiskFailed{Err: f.err})
			r.publish()
		}
		return
	}
	if f.link != r.link || r.fenced.Load() == f.link {
		return // the state machine already left that connection
	}
	var err error
	if f.write {
		err = r.fsm.Step(fsm.PeerWriteFailed{Err: f.err})
	} else {
		err = r.fsm.Step(fsm.LinkDown{Cause: linkDownCause(f.err), Err: f.err})
	}
	r.stepped(err)
	// The status shows the new state before the caller marks anything
	// or acknowledges the write (the Ready's actions follow in process).
	r.publish()
	// Only now: fence returns at once for a fenced link, so a write
	// failing on it from another goroutine must not find it fenced
	// before the status is published (the torture test's check at each
	// acknowledgement caught that window, seed 1998715050314828971).
	r.fenced.Store(f.link)
}

// stepped reports an event the state machine refused, where nothing
// asked for it (the driver's own observations): a bug or a race the
// log must show.
func (r *Resource) stepped(err error) {
	if err != nil {
		r.log.Warn("state machine refused an event", "err", err)
	}
}

// linkDownCause is the connection state a link's end reports.
func linkDownCause(err error) fsm.ConnState {
	if errors.Is(err, replication.ErrProtocol) {
		return fsm.ProtocolError
	}
	return fsm.NetworkFailure
}

// await runs f, which may wait for the data path or for the link's
// goroutines (a mode change draining requests, Link.Close, the export's
// shutdown, the resync's workers), and serves fences meanwhile: a
// request in flight may be waiting for one, and it would otherwise wait
// for run, which waits for it. f must not touch the state machine.
func (r *Resource) await(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	for {
		select {
		case <-done:
			return
		case fr := <-r.fences:
			r.onFence(fr)
		}
	}
}

// closeLink ends link l, which the state machine already left.
func (r *Resource) closeLink(l *replication.Link, reason string) {
	r.fenced.Store(l)
	r.await(func() { _ = l.Close(reason) })
}

// takeInbox returns the events posted so far.
func (r *Resource) takeInbox() []any {
	r.inboxMu.Lock()
	defer r.inboxMu.Unlock()
	evs := r.inbox
	r.inbox = nil
	return evs
}

// Close takes the resource down cleanly (disconnect, detach) and stops
// its goroutines.
func (r *Resource) Close() error {
	if r.cancel == nil {
		return nil
	}
	c := command{shutdown: true, reply: make(chan error, 1)}
	select {
	case r.cmds <- c:
		<-c.reply
	case <-r.done:
	}
	r.cancel()
	r.wg.Wait()
	return nil
}

func (r *Resource) run() {
	tick, stopTick := r.env.Clock.NewTicker(clock.Tick)
	defer stopTick()
	var refresh int
	for {
		select {
		case <-r.ctx.Done():
			r.shutdown()
			return
		case c := <-r.cmds:
			if c.shutdown {
				r.goDown()
				c.reply <- nil
				continue
			}
			if c.fn != nil {
				c.fn()
				c.reply <- nil
				continue
			}
			err := r.command(c.ev, c.epoch)
			r.process()
			c.reply <- err
		case f := <-r.fences:
			r.onFence(f)
			r.process()
		case <-r.events:
			for _, ev := range r.takeInbox() {
				r.event(ev)
				r.process()
			}
		case <-tick:
			var a fsm.Activity
			if r.link != nil {
				a.Received = r.link.Received()
				a.Pending, a.OldestPending = r.link.Pending()
			}
			r.fsm.Tick(a)
			r.process()
			r.watchQuorum()
			r.tendGroup()
			r.maybeClearPeer(r.fsm.State())
			r.autoDemote()
			if refresh++; refresh%10 == 0 {
				r.publish() // counters move without state changes
			}
		}
	}
}

func (r *Resource) command(ev fsm.Event, epoch uint64) error {
	switch ev.(type) {
	case fsm.AttachBegin:
		if r.self.Disk == "" {
			return fmt.Errorf("host %s has no disk (disk none)", r.self.Name)
		}
	case fsm.Demote:
		// DRBD refuses to demote a device that is open.
		r.stepOpenCount()
	case fsm.Promote:
		if r.epochs != nil {
			if err := r.takeEpoch(epoch); err != nil {
				r.releaseGrant(epoch)
				return err
			}
		}
	}
	r.listenErr, r.exportErr = nil, nil
	wasPrimary := r.fsm.State().Role == fsm.Primary
	if err := r.fsm.Step(ev); err != nil {
		if _, ok := ev.(fsm.Promote); ok && !wasPrimary && r.epochs != nil {
			r.epoch.Store(0)
			r.releaseGrant(epoch)
		}
		return err
	}
	switch ev.(type) {
	case fsm.AttachBegin:
		r.attachErr = nil
		r.process() // opens the disk
		return r.attachErr
	case fsm.Connect:
		r.process() // listens for the peer
		return r.listenErr
	case fsm.Demote:
		if wasPrimary {
			r.releaseGrant(r.epoch.Swap(0))
			r.runHandler("after-demote")
		}
	case fsm.Promote:
		r.process() // opens the export
		if err := r.exportErr; err != nil {
			// A Primary nobody can reach is no Primary: back to
			// Secondary, and the verb fails.
			r.stepped(r.fsm.Step(fsm.Demote{}))
			r.process()
			r.releaseGrant(r.epoch.Swap(0))
			return fmt.Errorf("%w; stays Secondary", err)
		}
		if !wasPrimary {
			r.runHandler("after-promote")
		}
	}
	return nil
}

// takeEpoch makes the quorum epoch of a granted promotion this node's,
// durable (the fence's floor) before the promotion serves anything; the
// States it sends from now on carry it.
func (r *Resource) takeEpoch(epoch uint64) error {
	if epoch < r.epochs.Floor() {
		return fmt.Errorf("State change failed: the grant of epoch %d is older than epoch %d this node has seen", epoch, r.epochs.Floor())
	}
	if err := r.epochs.Raise(epoch); err != nil {
		return fmt.Errorf("State change failed: recording quorum epoch %d: %w", epoch, err)
	}
	r.epoch.Store(epoch)
	return nil
}

// releaseGrant gives a quorum grant back (epoch 0: none), off run's
// goroutine, until the resource stops; a failure is logged (the group
// keeps naming this node Primary until it is replaced or promoted
// again). A clean shutdown gives it back itself (goDown).
func (r *Resource) releaseGrant(epoch uint64) {
	if epoch == 0 || r.epochs == nil {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		if err := r.auth.Release(ctx, epoch); err != nil {
			r.log.Warn("quorum: giving back the grant of epoch failed", "epoch", epoch, "err", err)
		}
	}()
}

// stepOpenCount tells the state machine how many NBD sessions (the
// device's opens) there are now.
func (r *Resource) stepOpenCount() {
	r.stepped(r.fsm.Step(fsm.OpenCount{N: r.exp.Sessions()}))
}

// diskError reports an I/O error on the disk of attachment md, from any
// goroutine, without blocking: the link stops using that disk at once
// (swapDisk's invariant), and the state machine hears of it (DiskFailed,
// on run's goroutine).
func (r *Resource) diskError(md *meta.Meta, err error) {
	r.swap.fail(md)
	r.post(evDiskFailed{md: md, err: err})
}

func (r *Resource) event(ev any) {
	switch e := ev.(type) {
	case evSuperseded:
		r.superseded(e)
	case evDiskFailed:
		if e.md != r.md {
			// The disk it came from was detached since, and the one
			// attached now is not to blame: DRBD drains a failed
			// disk's requests before it can attach again (a stale
			// error detached a freshly attached disk: torture seed
			// 1658929834300997804).
			r.log.Info("a disk error from an earlier attachment: ignored", "err", e.err)
			return
		}
		r.diskFailed(fsm.DiskFailed{Err: e.err})
	case evAccepted:
		if r.link != nil || r.fsm.State().Conn != fsm.WFConnection {
			_ = e.nc.Close()
			// If this was our own dial, the state machine must hear
			// that it ended, or it waits for it and never dials again
			// (found by the torture test, seed 13197219439396952314:
			// a fenced link is still r.link until it has ended).
			r.stepped(r.fsm.Step(fsm.DialFailed{Err: errors.New("connection dropped: the previous one has not ended yet")}))
			return
		}
		r.handshake(e.nc)
	case evLink:
		if e.hs {
			r.handshakes--
		}
		if e.err != nil {
			r.log.Warn("connection attempt failed", "err", e.err)
			// A refusal for a stale quorum epoch is not: the replaced
			// Primary demotes, and the next attempt connects.
			fatal := (errors.Is(e.err, replication.ErrAuth) || errors.Is(e.err, replication.ErrHandshake)) &&
				!errors.Is(e.err, replication.ErrStaleEpoch)
			r.stepped(r.fsm.Step(fsm.DialFailed{Err: e.err, Fatal: fatal}))
			r.backupIdle()
			return
		}
		if r.link != nil || r.fsm.State().Conn != fsm.WFConnection {
			r.closeLink(e.link, "already connected")
			r.backupIdle()
			return
		}
		r.link = e.link
		r.liveLink.Store(e.link)
		// The handshake weighs this node's changes (after-sb policies)
		// and whether a Primary can demote (call-pri-lost-after-sb).
		r.stepOpenCount()
		var oos uint64
		if r.md != nil {
			oos = r.md.OutOfSync()
		}
		r.handshakeAt = time.Now()
		// backup-discarded: the journal armed for this connection
		// (handshake) is kept if the handshake discards this node.
		r.armBackup()
		prev := r.fsm.LastHandshake()
		r.stepped(r.fsm.Step(fsm.LinkUp{Peer: peerInfo(e.link.PeerState()), Sent: peerInfo(e.sent), OutOfSync: oos}))
		r.process() // the handshake's lines are logged before the keeper's
		var outcome *splitbrain.Outcome
		var peerGI genid.GI
		if hs := r.fsm.LastHandshake(); hs != nil && hs != prev {
			outcome, peerGI = &hs.Outcome, hs.Peer.GI
		}
		r.keeper.Decide(outcome, peerGI)
	case evLinkClosed:
		if e.link == nil || e.link != r.link {
			return
		}
		// The state machine leaves the connection, and the status
		// shows it, before the link leaves the data path: a write in
		// flight that failed on it waits in fence (served by the await
		// below) and is marked and acknowledged only after that. The
		// other order let a long torture run see a write acknowledged,
		// marked and missing on the peer behind a Connected
		// UpToDate/UpToDate status (seeds 9450930055808562195 and
		// 327014884018170981).
		r.stepped(r.fsm.Step(fsm.LinkDown{Cause: linkDownCause(e.err), Err: e.err}))
		r.link = nil
		r.liveLink.Store(nil)
		r.publish()
		r.fenced.Store(e.link) // after the publish, as in onFence
		r.dropLinkFromPath()
		if r.md != nil {
			// The link marked what the peer may lack (OnOutOfSync).
			if err := r.md.SyncBitmap(); err != nil {
				r.log.Error("bitmap write failed", "err", err)
			}
		}
	case evPeerState:
		if e.link == r.link {
			r.stepped(r.fsm.Step(fsm.PeerChanged{Peer: peerInfo(e.st)}))
		}
	case evBitmap:
		if e.link != r.link || r.md == nil {
			return
		}
		var err error
		r.md.WithBitmap(func(b *bitmap.Bitmap) { err = b.MergeRLEResized(e.rle) })
		if err == nil {
			err = r.md.SyncBitmap()
		}
		if err != nil {
			r.log.Error("peer's bitmap rejected", "err", err)
			r.stepped(r.fsm.Step(fsm.ResyncFailed{Err: fmt.Errorf("peer's bitmap: %w", err)}))
			return
		}
		r.log.Info("bitmaps merged", "out-of-sync KB", r.md.OutOfSync()*uint64(r.md.Layout().Granularity)>>10)
		r.stepped(r.fsm.Step(fsm.BitmapReceived{}))
	case evSyncUUID:
		if e.link == r.link {
			r.stepped(r.fsm.Step(fsm.SyncUUIDReceived{UUID: e.uuid}))
		}
	case evEngineDone:
		ev, err := r.syncer.Finished(e)
		switch {
		case err != nil:
			r.diskFailed(fsm.DiskFailed{Err: err})
		case ev != nil:
			r.stepped(r.fsm.Step(ev))
		}
	}
}

// process acts on the state machine's Ready, in the order fsm.Ready
// prescribes, until it has nothing more.
func (r *Resource) process() {
	for r.fsm.HasReady() {
		rd := r.fsm.Ready()
		r.fsm.Advance()
		for _, l := range rd.Log {
			r.log.Info(l)
		}
		if r.md != nil {
			if rd.SetAllOutOfSync {
				r.md.WithBitmap(func(b *bitmap.Bitmap) { b.SetAll() })
				if err := r.md.SyncBitmap(); err != nil {
					r.log.Error("bitmap write failed", "err", err)
				}
			}
			if rd.Meta != nil {
				ms := *rd.Meta
				if err := r.md.Update(func(sb *meta.Superblock) {
					sb.GI = ms.GI
					sb.Flags = sb.Flags&^fsm.ManagedFlags | ms.Flags
				}); err != nil {
					r.log.Error("metadata update failed", "err", err)
					r.diskFailed(fsm.DiskFailed{Err: err})
				}
			}
		}
		// A link the state machine left is closed before the new
		// IOMode is published: publishing waits for the requests in
		// flight, and those wait for that link's acks, which a silent
		// peer never sends (the real-process torture suite measured 24 s
		// without service behind a SIGSTOPped peer). Closed, the link
		// completes them with an error, and the device fences (already
		// done: the link is marked fenced) and marks them.
		for _, a := range rd.Actions {
			if a.Kind == fsm.ActCloseLink {
				r.action(a)
			}
		}
		if rd.IOMode != nil {
			if m := *rd.IOMode; weakens(r.dev.mode(), m) {
				// The status says so before the data path acts on it:
				// a write acknowledged without the peer, or without
				// this disk, never stands behind a status that still
				// promises both (found by the torture test's check at
				// each acknowledgement).
				r.publish()
			}
			r.applyPath(*rd.IOMode)
		}
		for _, a := range rd.Actions {
			if a.Kind != fsm.ActCloseLink {
				r.action(a)
			}
		}
		if rd.SendState && r.link != nil {
			_ = r.link.SendState(r.stateMsg())
		}
		if rd.SendBitmap && r.link != nil && r.md != nil {
			var rle []byte
			r.md.WithBitmap(func(b *bitmap.Bitmap) { rle = b.EncodeRLE(nil) })
			_ = r.link.SendBitmap(rle)
		}
		if rd.SyncUUID != 0 && r.link != nil {
			_ = r.link.SendSyncUUID(rd.SyncUUID)
		}
		for _, h := range rd.Handlers {
			r.runHandler(h)
		}
		st := r.fsm.State()
		if st.Conn == fsm.Connected && st.Disk == fsm.UpToDate && st.PeerDisk == fsm.UpToDate && r.md != nil &&
			(st.Role == fsm.Primary || st.PeerRole == fsm.Primary) {
			if n := r.md.OutOfSync(); n > 0 {
				// Blocks marked while the pair says it is in sync:
				// writes in flight while the connection came up, marked
				// after its handshake counted the bits (the IOMode that
				// mirrors them waited for them), or what online verify
				// found. The renegotiation resyncs them from the
				// Primary. (Between two Secondaries no side's data is
				// the reference: verify's marks wait for a connect, as
				// in DRBD.)
				r.stepped(r.fsm.Step(fsm.MarkedWhileInSync{Blocks: n}))
				if r.fsm.HasReady() {
					continue // that Ready renegotiates; the status follows it
				}
			}
		}
		r.maybeClearPeer(st)
		r.syncer.Reconcile(wantOf(st, r.link, r.md, r.data))
		r.keeper.Reconcile(st.Disk == fsm.UpToDate && st.Conn == fsm.Connected)
		r.maybeFailover(st)
		r.publish()
	}
}

// goDown is the clean shutdown (SIGTERM): the NBD export stops once its
// requests in flight are answered, then the node demotes, disconnects
// (the peer hears a Goodbye) and detaches, so the metadata says neither
// Primary nor crashed and the activity log is clean.
func (r *Resource) goDown() {
	r.goingDown = true
	// The kernel device first, while the export still serves: its dirty
	// pages reach both disks (whoever holds it open gets errors after).
	r.await(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), kernelDetachTimeout)
		_ = r.kernel.detach(ctx, true)
		cancel()
	})
	r.closeExport()
	wasPrimary := r.fsm.State().Role == fsm.Primary
	if wasPrimary {
		// The service on top stops first (a floating IP goes), bounded:
		// the shutdown goes on whatever the script does.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), shutdownHandlerTimeout)
		_ = r.runHandlerSync(ctx, "before-demote")
		cancel()
	}
	epoch := r.epoch.Swap(0)
	for _, ev := range []fsm.Event{fsm.OpenCount{N: 0}, fsm.Demote{}, fsm.Disconnect{}, fsm.Detach{}} {
		if err := r.fsm.Step(ev); err != nil {
			r.log.Warn("shutdown", "step", fmt.Sprintf("%T", ev), "err", err)
		}
		r.process()
	}
	if wasPrimary {
		r.runHandler("after-demote")
	}
	if epoch != 0 {
		// The quorum's grant goes back with the role, so that the
		// group can promote the peer at once (bounded: a group out of
		// reach leaves this node named Primary until it is replaced).
		ctx, cancel := context.WithTimeout(r.ctx, 3*time.Second)
		if err := r.auth.Release(ctx, epoch); err != nil {
			r.log.Warn("shutdown: giving the quorum grant back failed", "epoch", epoch, "err", err)
		}
		cancel()
	}
}

// shutdown runs when the context ends: whatever is still up goes down
// without the niceties (Close does them first).
func (r *Resource) shutdown() {
	r.await(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = r.kernel.detach(ctx, true)
		cancel()
	})
	r.closeExport()
	r.stopConnecting()
	r.syncer.Stop()
	if r.link != nil {
		r.closeLink(r.link, "shutting down")
		r.link = nil
		r.liveLink.Store(nil)
	}
	r.await(func() { r.dev.setPath(ioPath{}, 0) })
	r.closeDisk()
	r.publish()
}

// weakens reports whether the data path going from mode old to next
// stops holding a write on both disks: it stops mirroring, or stops
// writing the local disk or counting it UpToDate.
func weakens(old, next fsm.IOMode) bool {
	return (old.Mirror && !next.Mirror) || (old.Local && !next.Local) || (old.UpToDate && !next.UpToDate)
}

// publish refreshes the snapshot and tells the daemon.
func (r *Resource) publish() {
	r.mu.Lock()
	r.snap = r.snapshotLocked()
	r.explain.hs, r.explain.at, r.explain.gi = r.fsm.LastHandshake(), r.handshakeAt, r.fsm.GI()
	if r.md != nil {
		r.explain.oos, r.explain.gran = r.md.OutOfSync(), int64(r.md.Layout().Granularity)
	}
	r.mu.Unlock()
	if r.changed != nil {
		r.changed()
	}
}

// snapshotLocked builds the status snapshot (run's goroutine only).
func (r *Resource) snapshotLocked() status.Resource {
	st := r.fsm.State()
	s := status.Resource{
		Name: r.name, Minor: r.self.Minor, Configured: st.Conn != fsm.StandAlone || st.Disk != fsm.Diskless || st.Role == fsm.Primary,
		Self: r.self.Name, Peer: r.peer.Name,
		Role: st.Role.String(), PeerRole: st.PeerRole.String(),
		Conn: st.Conn.String(), Disk: st.Disk.String(), PeerDisk: st.PeerDisk.String(),
		Protocol:   r.fsm.IOMode().Protocol,
		WriteOrder: r.writeOrder(),
		Size:       uint64(max(r.exportSize(), 0)),
		NodeID:     r.nodeID, PeerNodeID: 1 - r.nodeID,
		Address: r.self.Address, PeerAddress: r.peer.Address,
	}
	if r.md != nil {
		ms := r.md.Stats()
		s.ALWrites, s.BMWrites = ms.ALTransactions, ms.BitmapPageWrites
		s.OutOfSync = r.md.OutOfSync() * uint64(r.md.Layout().Granularity)
	}
	if r.link != nil {
		ls := r.link.Stats()
		s.NetSent, s.NetRecv = ls.SentBytes+ls.ResyncSent, ls.RecvBytes+ls.ResyncRecv
		s.Pending, s.Unacked, s.Epochs = int64(ls.Pending), int64(ls.Unacked), int64(ls.Epochs)
	}
	s.NBDClients = r.exp.Sessions()
	s.PausedByUser, s.PausedByPeer = r.fsm.UserPaused(), r.fsm.PeerPaused()
	s.SplitBrain, s.SplitBrainRule = r.fsm.SplitBrain()
	r.syncer.Status(&s)
	return s
}

// fillCounters adds the data path's live counters.
func (r *Resource) fillCounters(s *status.Resource) {
	s.DiskWritten = r.stats.diskWritten.Load() + r.stats.peerWritten.Load()
	s.DiskRead = r.stats.diskRead.Load()
	s.LocalPending = r.stats.localPending.Load()
	s.AppPending = r.stats.appPending.Load()
	s.APInFlight = r.stats.apInFlight.Load()
	if l := r.liveLink.Load(); l != nil {
		ls := l.Stats()
		s.NetSent, s.NetRecv = ls.SentBytes+ls.ResyncSent, ls.RecvBytes+ls.ResyncRecv
		s.Pending, s.Unacked, s.Epochs = int64(ls.Pending), int64(ls.Unacked), int64(ls.Epochs)
	}
}

// HasDisk reports whether this node's section names a backing disk.
func (r *Resource) HasDisk() bool { return r.self.Disk != "" }
