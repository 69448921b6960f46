package raftnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/twinblock/twinblock/pkg/quorum"
)

// Timing is the raft group's timers. LAN values: a failed leader is
// noticed in Heartbeat..2×Heartbeat and replaced after an election of
// Election..2×Election (raft randomises both).
type Timing struct {
	Heartbeat time.Duration // raft HeartbeatTimeout
	Election  time.Duration // raft ElectionTimeout (≥ Heartbeat)
	Lease     time.Duration // raft LeaderLeaseTimeout (≤ Heartbeat): a leader without a majority steps down within it
	Commit    time.Duration // raft CommitTimeout
	// Quorate: a follower that heard from no leader for this long
	// counts itself without quorum.
	Quorate time.Duration
}

// DefaultTiming is the LAN timing the issue asks for: heartbeat and
// election 500 ms, the lease below them.
func DefaultTiming() Timing {
	return Timing{Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond,
		Lease: 250 * time.Millisecond, Commit: 50 * time.Millisecond, Quorate: 500 * time.Millisecond}
}

// Config configures a Node.
type Config struct {
	ID      quorum.NodeID
	Members map[quorum.NodeID]raft.ServerAddress // every voter, this node included
	// Resources: each resource of the group and its two data nodes.
	Resources map[string][2]quorum.NodeID
	// Dir holds raft.db (log and stable store) and the snapshots. Empty:
	// in memory (tests only: raft's InmemStore is not durable).
	Dir string
	// Network carries the group: each member listens on its address in
	// Members (or on Listener, if set) and dials the others, with Auth.
	// Forwarded commands use it too. Ignored if Transport is set.
	Network  Network
	Listener net.Listener
	Auth     Auth
	// Transport replaces the network (raft's InmemTransport in tests:
	// no forwarding then).
	Transport raft.Transport
	Timing    Timing // zero: DefaultTiming
	Logger    *slog.Logger
}

// Node is one member of a quorum group.
type Node struct {
	cfg    Config
	raft   *raft.Raft
	fsm    *raftFSM
	closer []io.Closer
	log    *slog.Logger

	mux   *mux    // nil with Config.Transport
	net   Network // for forwarding
	local string  // this member's address

	mu          sync.Mutex // serialises Submit's barrier bookkeeping
	barrierTerm uint64     // the term whose Barrier completed

	obs     chan raft.Observation
	obsDone chan struct{}
	cmu     sync.Mutex
	failed  map[quorum.NodeID]time.Time // leader: members whose heartbeats fail, and their last contact
	// heard: the leader this node followed before it was elected, and
	// when it last heard from it (raft's LastContact then); the new
	// term's replication to it starts with a fresh contact time that is
	// no contact at all.
	heard      map[quorum.NodeID]time.Time
	lastLeader quorum.NodeID
	fpDone     chan struct{} // followPrimary returned
}

// ErrNotLeader: Submit ran on a node that does not lead the group; Leader
// names the one that does, if known.
var ErrNotLeader = errors.New("quorum: not the raft leader")

// New starts a member: it opens (or creates) the stores, bootstraps the
// group with every member as a voter if this node has no state yet
// (every member does the same with the same Members), and joins.
func New(cfg Config) (*Node, error) {
	if cfg.Timing == (Timing{}) {
		cfg.Timing = DefaultTiming()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, ok := cfg.Members[cfg.ID]; !ok {
		return nil, fmt.Errorf("quorum: node %s is not a member (%v)", cfg.ID, cfg.Members)
	}
	st, err := quorum.NewState(cfg.Resources)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, fsm: &raftFSM{initial: st.Clone(), state: st}, log: cfg.Logger.With("quorum", cfg.ID)}
	rc := raftConfig(cfg)
	if cfg.Transport == nil {
		if err := n.listen(rc); err != nil {
			return nil, err
		}
		cfg.Transport = n.cfg.Transport
	}
	var logs raft.LogStore
	var stable raft.StableStore
	var snaps raft.SnapshotStore
	if cfg.Dir == "" {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("quorum: %w", err)
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")})
		if err != nil {
			return nil, fmt.Errorf("quorum: %s: %w", filepath.Join(cfg.Dir, "raft.db"), err)
		}
		n.closer = append(n.closer, bolt)
		logs, stable = bolt, bolt
		if snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, rc.Logger); err != nil {
			_ = bolt.Close()
			return nil, fmt.Errorf("quorum: snapshots in %s: %w", cfg.Dir, err)
		}
	}
	had, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("quorum: %w", err)
	}
	if !had {
		var servers []raft.Server
		for id, addr := range cfg.Members {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: addr})
		}
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, cfg.Transport, raft.Configuration{Servers: servers}); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.closeStores()
			return nil, fmt.Errorf("quorum: bootstrap: %w", err)
		}
	}
	if n.raft, err = raft.NewRaft(rc, n.fsm, logs, stable, snaps, cfg.Transport); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("quorum: %w", err)
	}
	n.watchContacts()
	n.fpDone = make(chan struct{})
	go func() {
		defer close(n.fpDone)
		n.followPrimary()
	}()
	return n, nil
}

// watchContacts follows the leader's heartbeats to each member (raft's
// observations, blocking so that none is dropped: a lost "resumed"
// would make a live member look gone): a member whose heartbeats fail
// is recorded with its last contact, until they resume.
func (n *Node) watchContacts() {
	n.failed, n.heard = map[quorum.NodeID]time.Time{}, map[quorum.NodeID]time.Time{}
	n.obs, n.obsDone = make(chan raft.Observation, 64), make(chan struct{})
	n.raft.RegisterObserver(raft.NewObserver(n.obs, true, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation:
			return true
		}
		return false
	}))
	go func() {
		for {
			select {
			case o := <-n.obs:
				n.cmu.Lock()
				switch d := o.Data.(type) {
				case raft.FailedHeartbeatObservation:
					p := quorum.NodeID(d.PeerID)
					if _, ok := n.failed[p]; !ok {
						last := d.LastContact
						if h, ok := n.heard[p]; ok && h.Before(last) {
							last = h
						}
						n.failed[p] = last
					}
				case raft.ResumedHeartbeatObservation:
					delete(n.failed, quorum.NodeID(d.PeerID))
					delete(n.heard, quorum.NodeID(d.PeerID))
				case raft.LeaderObservation:
					// A new term: what an earlier leader saw is not
					// this one's to judge. What this node heard of the
					// leader it followed is.
					clear(n.failed)
					clear(n.heard)
					id := quorum.NodeID(d.LeaderID)
					if id == n.cfg.ID && n.lastLeader != "" && n.lastLeader != id {
						n.heard[n.lastLeader] = n.raft.LastContact()
					}
					if id != "" {
						n.lastLeader = id
					}
				}
				n.cmu.Unlock()
			case <-n.obsDone:
				return
			}
		}
	}()
}

// gone reports whether member p, seen from this leader, has been out of
// contact long enough that it cannot count itself quorate any more, and
// so serves nothing: its heartbeats have failed since a last contact
// more than Timing.Quorate plus one heartbeat ago (the margin covers a
// heartbeat that reached p but whose answer was lost). For the leader
// this node followed before its election, the last contact is the
// last time it heard from it as a follower. The leader itself is never
// gone. (Write safety does not rest on this bound: the epoch
// fence and the fence-peer commit keep a replaced Primary from
// acknowledging anything; the bound keeps it from serving reads while
// its replacement serves.)
func (n *Node) gone(p quorum.NodeID) bool {
	if p == n.cfg.ID {
		return false
	}
	n.cmu.Lock()
	last, ok := n.failed[p]
	n.cmu.Unlock()
	return ok && time.Since(last) >= n.cfg.Timing.Quorate+n.cfg.Timing.Heartbeat
}

// followPrimary runs on the leader: it hands raft's leadership to the
// member that is Primary (of the first resource, by name, that has one),
// checked every heartbeat, unless that member's heartbeats fail. Then
// the loss of the witness or of the Secondary costs no election, and the
// Primary, which counts itself quorate while it leads a majority,
// never holds its requests while one runs.
func (n *Node) followPrimary() {
	t := time.NewTicker(n.cfg.Timing.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-n.obsDone:
			return
		case <-t.C:
		}
		if n.raft.State() != raft.Leader {
			continue
		}
		p := n.fsm.primary()
		addr, ok := n.cfg.Members[p]
		if p == "" || p == n.cfg.ID || !ok {
			continue
		}
		n.cmu.Lock()
		_, failing := n.failed[p]
		n.cmu.Unlock()
		if failing {
			continue
		}
		if err := n.raft.LeadershipTransferToServer(raft.ServerID(p), addr).Error(); err != nil {
			n.log.Debug("quorum: handing the leadership to the Primary failed", "primary", p, "err", err)
		} else {
			n.log.Info("quorum: leadership handed to the Primary", "primary", p)
		}
	}
}

// listen opens this member's quorum address: the mux, raft's network
// transport over it, and the forwarded commands' server.
func (n *Node) listen(rc *raft.Config) error {
	cfg := &n.cfg
	if cfg.Network == nil {
		return errors.New("quorum: no Network and no Transport")
	}
	n.net, n.local = cfg.Network, string(cfg.Members[cfg.ID])
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = cfg.Network.Listen("tcp", n.local); err != nil {
			return fmt.Errorf("quorum: listen on %s: %w", n.local, err)
		}
	}
	n.mux = newMux(ln, cfg.ID, cfg.Auth, func(err error) { n.log.Warn("quorum connection", "err", err) })
	ids := make(map[raft.ServerAddress]quorum.NodeID, len(cfg.Members))
	for id, addr := range cfg.Members {
		ids[addr] = id
	}
	sl := &streamLayer{mux: n.mux, net: cfg.Network, local: n.local, ids: ids}
	// rpcTimeout: a member cut off by a partition (its packets dropped,
	// no reset) shows as failed heartbeats only once an RPC times out,
	// and the takeover bound counts from there.
	cfg.Transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: sl, MaxPool: 3, Timeout: rpcTimeout, Logger: rc.Logger})
	n.mux.serve(n.serveCommand)
	return nil
}

func raftConfig(cfg Config) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	t := cfg.Timing
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout, rc.CommitTimeout = t.Heartbeat, t.Election, t.Lease, t.Commit
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{cfg.Logger}})
	// A handful of entries per failover: snapshots now and then keep
	// the log short.
	rc.SnapshotThreshold, rc.TrailingLogs = 1024, 1024
	return rc
}

// slogWriter carries raft's log lines (warnings and errors) into slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (n *Node) closeStores() {
	for _, c := range n.closer {
		_ = c.Close()
	}
	if n.mux != nil {
		_ = n.cfg.Transport.(io.Closer).Close()
		_ = n.mux.Close()
		n.mux.wait()
	}
}

// Close leaves the group (raft shuts down; the others go on), closes the
// listener and the stores.
func (n *Node) Close() error {
	err := n.raft.Shutdown().Error()
	close(n.obsDone)
	<-n.fpDone
	n.closeStores()
	return err
}

// Leader returns the member that leads the group, "" if none is known.
func (n *Node) Leader() quorum.NodeID {
	_, id := n.raft.LeaderWithID()
	return quorum.NodeID(id)
}

// IsLeader reports whether this node leads the group.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Quorate reports whether this node is part of a majority now: it leads
// (raft's lease makes a leader without a majority step down within
// Timing.Lease), or it follows a known leader it heard from within
// Timing.Quorate, or it is a candidate that heard from one within it.
func (n *Node) Quorate() bool {
	switch n.raft.State() {
	case raft.Leader:
		return true
	case raft.Follower:
		return n.Leader() != "" && time.Since(n.raft.LastContact()) < n.cfg.Timing.Quorate
	case raft.Candidate:
		// A candidate that heard from a leader within the bound is still
		// inside it: above all the Primary the leadership is handed to
		// (followPrimary), which is a candidate for the moment of the
		// transfer and must not fail a request for it. (A candidate
		// after a leader's loss has heard from none for longer than the
		// heartbeat timeout, which is not below the bound.)
		return time.Since(n.raft.LastContact()) < n.cfg.Timing.Quorate
	}
	return false
}

// View returns this node's copy of a resource's state: what it applied
// so far, which may lag the leader's.
func (n *Node) View(resource string) (quorum.Resource, bool) { return n.fsm.view(resource) }

// Submit decides a command on the leader: after the term's Barrier (so
// it sees every earlier commit), it applies it and returns the Result.
// A command refused as stale whose effect is there (a retry of one that
// committed: quorum.Granted) is returned as granted. An error (raft's
// ErrLeadershipLost among them) leaves the outcome open: the caller
// retries with the same command. A follower forwards it to the leader
// over the group's network (without one, it returns ErrNotLeader).
func (n *Node) Submit(ctx context.Context, c quorum.Command) (quorum.Result, error) {
	if n.raft.State() != raft.Leader && n.mux != nil {
		return n.forward(ctx, c)
	}
	return n.submitLocal(ctx, c)
}

func (n *Node) submitLocal(ctx context.Context, c quorum.Command) (quorum.Result, error) {
	if n.raft.State() != raft.Leader {
		return quorum.Result{}, fmt.Errorf("%w (leader %q)", ErrNotLeader, n.Leader())
	}
	timeout := n.timeout(ctx)
	if err := n.barrier(timeout); err != nil {
		return quorum.Result{}, err
	}
	if c.Op == quorum.OpPromote && !c.Takeover {
		// Another node is Primary: the promotion replaces it only if
		// it is gone (the leader decides, after the Barrier above).
		if v, ok := n.fsm.view(c.Resource); ok && v.Primary != "" && v.Primary != c.Node {
			if n.gone(v.Primary) {
				c.Takeover = true
			} else {
				n.cmu.Lock()
				last, failing := n.failed[v.Primary]
				n.cmu.Unlock()
				n.log.Debug("quorum: the Primary is not gone", "primary", v.Primary, "failing", failing, "last-contact", last)
			}
		}
	}
	b, err := c.Marshal()
	if err != nil {
		return quorum.Result{}, err
	}
	f := n.raft.Apply(b, timeout)
	if err := f.Error(); err != nil {
		// ErrLeadershipLost: committed or not, nobody can say yet.
		// Whoever leads next commits it if a majority has it; the CAS
		// refuses a second application. The caller retries, and
		// Granted tells the two apart.
		return quorum.Result{}, fmt.Errorf("quorum: %s: %w", c, err)
	}
	res, ok := f.Response().(quorum.Result)
	if !ok {
		return quorum.Result{}, fmt.Errorf("quorum: %s: unexpected FSM response %T", c, f.Response())
	}
	if res.Err != nil && quorum.Granted(c, res.After) && errors.Is(res.Err, quorum.ErrStaleEpoch) {
		// A retry of a command that committed before: its effect is
		// there, the retry changed nothing.
		res.Err = nil
	}
	return res, nil
}

func (n *Node) barrier(timeout time.Duration) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	term := n.raft.CurrentTerm()
	if n.barrierTerm == term {
		return nil
	}
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		return fmt.Errorf("quorum: barrier of term %d: %w", term, err)
	}
	n.barrierTerm = term
	return nil
}

func (n *Node) timeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 10 * n.cfg.Timing.Election
}
