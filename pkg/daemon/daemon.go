package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/node"
	"github.com/twinblock/twinblock/pkg/quorum"
	"github.com/twinblock/twinblock/pkg/quorum/raftnode"
	"github.com/twinblock/twinblock/pkg/status"
)

// Version is twinblock's version: --version, the status file's first
// line and the control socket's responses (the one place it is set).
const Version = "0.1.0"

// Options configure a daemon.
type Options struct {
	Config     *config.Config
	Node       string // this host's `on` name
	Control    string // the control socket path
	StatusFile string // the status file path
	// StateDir holds the quorum groups' raft state (StateDir/quorum/RES:
	// the log, the stable store and the snapshots); default
	// /var/lib/twinblock.
	StateDir string
	// Metrics is the address of the Prometheus endpoint (host:port;
	// "" none).
	Metrics string
	// Procs fixes GOMAXPROCS (the CPUs that run Go code at once); 0
	// adapts it to the demand (adaptProcs).
	Procs int
	// Pprof is the address of Go's profiling endpoint (net/http/pprof,
	// /debug/pprof/; "" none): for `go tool pprof` while a benchmark runs.
	Pprof  string
	Logger *slog.Logger
}

// Daemon hosts the resources of one node.
type Daemon struct {
	opts Options
	log  *slog.Logger
	// mu guards resources and byName (adjust adds and removes).
	mu        sync.RWMutex
	resources []*node.Resource
	byName    map[string]*node.Resource
	// envProcs: GOMAXPROCS is set in the environment (adaptProcs leaves it).
	envProcs bool
	// adjustMu serializes adjust (the verb and SIGHUP) and guards
	// stopping: the shutdown has begun, adjust changes nothing.
	adjustMu sync.Mutex
	stopping bool
	// subMu guards subs: the events2 streams, told of every change.
	subMu   sync.Mutex
	subs    map[chan struct{}]struct{}
	lock    *os.File
	ln      net.Listener
	changed chan struct{}
	wg      sync.WaitGroup
	// quorums are the members of the quorum groups of the resources this
	// node hosts or witnesses (one group per resource).
	quorums []*raftnode.Node
}

// New prepares the daemon: the resources that have an `on` section for
// opts.Node. Nothing runs until Run but the members of the quorum
// groups (quorum resources, and those this node witnesses), which join
// their groups at once.
func New(opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StateDir == "" {
		opts.StateDir = "/var/lib/twinblock"
	}
	d := &Daemon{opts: opts, log: opts.Logger, byName: map[string]*node.Resource{}, changed: make(chan struct{}, 1),
		subs: map[chan struct{}]struct{}{}, envProcs: os.Getenv("GOMAXPROCS") != ""}
	fail := func(err error) (*Daemon, error) {
		d.closeQuorums()
		return nil, err
	}
	for _, rc := range opts.Config.Resources {
		if rc.IsWitness(opts.Node) {
			if _, err := d.quorumMember(rc); err != nil {
				return fail(err)
			}
			d.log.Info("witness of a quorum resource: a member of its group, no data", "resource", rc.Name)
			continue
		}
		if _, _, err := rc.Host(opts.Node); err != nil {
			d.log.Warn("resource has no section for this node: not hosted", "resource", rc.Name, "node", opts.Node)
			continue
		}
		env := node.Env{}
		if rc.Quorum() {
			q, err := d.quorumMember(rc)
			if err != nil {
				return fail(err)
			}
			env.Quorum = q
		}
		r, err := node.NewResourceEnv(rc, opts.Node, opts.Logger, d.notify, env)
		if err != nil {
			return fail(err)
		}
		d.resources = append(d.resources, r)
		d.byName[rc.Name] = r
	}
	if len(d.resources) == 0 && len(d.quorums) == 0 {
		return nil, fmt.Errorf("daemon: no resource of %s has an `on %s` section", opts.Config.Files[0], opts.Node)
	}
	return d, nil
}

// quorumMember starts this node's member of rc's quorum group (it runs
// from now on: the group elects a leader while the daemon starts).
func (d *Daemon) quorumMember(rc *config.Resource) (*raftnode.Node, error) {
	members := map[quorum.NodeID]raft.ServerAddress{}
	for _, h := range []*config.Host{rc.Hosts[0], rc.Hosts[1], rc.Witness} {
		members[quorum.NodeID(h.Name)] = raft.ServerAddress(h.QuorumAddress)
	}
	q, err := raftnode.New(raftnode.Config{
		ID: quorum.NodeID(d.opts.Node), Members: members,
		Resources: map[string][2]quorum.NodeID{rc.Name: {quorum.NodeID(rc.Hosts[0].Name), quorum.NodeID(rc.Hosts[1].Name)}},
		Dir:       filepath.Join(d.opts.StateDir, "quorum", rc.Name),
		Network:   node.TCP{},
		Auth:      raftnode.Auth{Alg: rc.Net.String("cram-hmac-alg"), Secret: rc.Net.String("shared-secret")},
		Logger:    d.log.With("resource", rc.Name),
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: resource %s: %w", rc.Name, err)
	}
	d.quorums = append(d.quorums, q)
	return q, nil
}

func (d *Daemon) closeQuorums() {
	for _, q := range d.quorums {
		if err := q.Close(); err != nil {
			d.log.Warn("quorum member close", "err", err)
		}
	}
	d.quorums = nil
}

func (d *Daemon) notify() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
	d.subMu.Lock()
	for ch := range d.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	d.subMu.Unlock()
}

// Run serves until ctx ends, then takes every resource down cleanly.
func (d *Daemon) Run(ctx context.Context) error {
	if err := d.listen(); err != nil {
		d.closeQuorums()
		return err
	}
	defer d.unlock()
	if d.opts.Pprof != "" {
		ln, err := net.Listen("tcp", d.opts.Pprof)
		if err != nil {
			d.closeQuorums()
			return fmt.Errorf("daemon: --pprof %s: %w", d.opts.Pprof, err)
		}
		d.log.Info("serving Go's profiler", "addr", ln.Addr().String(), "path", "/debug/pprof/")
		d.wg.Add(1)
		go func() { defer d.wg.Done(); d.servePprof(ctx, ln) }()
	}
	var metricsLn net.Listener
	if d.opts.Metrics != "" {
		ln, err := net.Listen("tcp", d.opts.Metrics)
		if err != nil {
			d.closeQuorums()
			return fmt.Errorf("daemon: --metrics %s: %w", d.opts.Metrics, err)
		}
		metricsLn = ln
	}
	for _, r := range d.resources {
		// Not ctx: the resources must outlive the signal long enough to
		// go down cleanly (Close).
		r.Start(context.WithoutCancel(ctx))
	}
	d.log.Info("twinblock daemon running", "node", d.opts.Node, "control", d.opts.Control, "status", d.opts.StatusFile)
	d.wg.Add(2)
	go func() { defer d.wg.Done(); d.serve(ctx) }()
	go func() { defer d.wg.Done(); d.statusLoop(ctx) }()
	if metricsLn != nil {
		d.log.Info("serving Prometheus metrics", "addr", metricsLn.Addr().String(), "path", "/metrics")
		d.wg.Add(1)
		go func() { defer d.wg.Done(); d.serveMetrics(ctx, metricsLn) }()
	}
	<-ctx.Done()
	_ = d.ln.Close()
	d.log.Info("shutting down: taking every resource down")
	d.adjustMu.Lock() // no adjust adds or removes one meanwhile, nor after
	d.stopping = true
	d.adjustMu.Unlock()
	d.mu.RLock()
	all := slices.Clone(d.resources)
	d.mu.RUnlock()
	var wg sync.WaitGroup
	for _, r := range all {
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Close() }()
	}
	wg.Wait()
	d.closeQuorums() // after the resources: a demotion gives its grant back first
	d.wg.Wait()
	_ = d.writeStatus()
	return nil
}

// listen takes the lock and opens the control socket (mode 0600).
func (d *Daemon) listen() error {
	path := d.opts.Control
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return fmt.Errorf("daemon: another twinblock daemon is running on %s (it holds %s.lock)", path, path)
	}
	d.lock = lock
	_ = os.Remove(path) // stale: we hold the lock
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		d.unlock()
		return fmt.Errorf("daemon: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		d.unlock()
		return fmt.Errorf("daemon: %w", err)
	}
	d.ln = ln
	return nil
}

func (d *Daemon) unlock() {
	if d.lock != nil {
		_ = os.Remove(d.opts.Control)
		_ = d.lock.Close()
		d.lock = nil
	}
}

// The backoff of the control socket's accept loop after a failed Accept.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// serve answers the control socket until the daemon is closing: ctx
// ended, or Run closed the listener. Any other Accept error (EMFILE,
// ECONNABORTED) is logged and retried after a backoff that doubles from
// minAcceptBackoff to maxAcceptBackoff, as pkg/node's peer accept loop
// does (hashicorp/raft's shape): a loop that gave up would leave a
// running daemon that no admin verb can reach, not even `down`.
func (d *Daemon) serve(ctx context.Context) {
	var backoff time.Duration
	for {
		nc, err := d.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return // shutting down
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			d.log.Warn("control socket: accept failed; retrying", "in", backoff, "err", err)
			select {
			case <-time.After(backoff):
				continue
			case <-ctx.Done():
				return
			}
		}
		backoff = 0
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(5 * time.Minute))
			var req Request
			if err := json.NewDecoder(nc).Decode(&req); err != nil {
				_ = json.NewEncoder(nc).Encode(Response{Error: "bad request: " + err.Error()})
				return
			}
			if req.Verb == "events2" {
				d.events2(ctx, nc, req)
				return
			}
			if req.Verb == "adjust" {
				steps, err := d.adjust(ctx, req.ConfigPath, req.Resource, req.DryRun)
				resp := Response{Version: Version, Text: strings.Join(steps, "\n")}
				if err != nil {
					resp.Error = err.Error()
				}
				_ = json.NewEncoder(nc).Encode(resp)
				return
			}
			_ = json.NewEncoder(nc).Encode(d.handle(ctx, req))
		}()
	}
}

// handle runs one admin request on the resources it names.
func (d *Daemon) handle(ctx context.Context, req Request) Response {
	d.mu.RLock()
	targets := slices.Clone(d.resources)
	if req.Resource != "" && req.Resource != "all" {
		r, ok := d.byName[req.Resource]
		if !ok {
			d.mu.RUnlock()
			return Response{Error: fmt.Sprintf("%s: No such resource on node %s", req.Resource, d.opts.Node), NoSuchResource: true}
		}
		targets = []*node.Resource{r}
	}
	d.mu.RUnlock()
	for _, r := range targets {
		if err := d.apply(ctx, r, req); err != nil {
			return Response{Error: fmt.Sprintf("%s: %v", r.Name(), err)}
		}
	}
	resp := Response{Version: Version}
	for _, r := range targets {
		resp.Resources = append(resp.Resources, r.Status())
		switch req.Verb {
		case "explain":
			resp.Text += r.Explain()
		case "get-gi":
			gi, err := r.GetGI(ctx)
			if err != nil {
				return Response{Error: fmt.Sprintf("%s: %v", r.Name(), err)}
			}
			resp.Text += gi
		case "resize":
			line, err := r.Resize(ctx)
			if err != nil {
				return Response{Error: fmt.Sprintf("%s: %v", r.Name(), err)}
			}
			resp.Text += line + "\n"
			resp.Resources[len(resp.Resources)-1] = r.Status()
		}
	}
	return resp
}

func (d *Daemon) apply(ctx context.Context, r *node.Resource, req Request) error {
	tolerate := func(err error, ok ...error) error {
		for _, o := range ok {
			if errors.Is(err, o) {
				return nil
			}
		}
		return err
	}
	switch req.Verb {
	case "status", "role", "cstate", "dstate", "explain", "get-gi", "resize":
		return nil
	case "up":
		if r.Status().Disk == "Diskless" && r.HasDisk() {
			if err := r.Do(ctx, fsm.AttachBegin{}); err != nil {
				return tolerate(err, fsm.ErrDiskConfigured)
			}
		}
		return tolerate(r.Do(ctx, fsm.Connect{DiscardMyData: req.DiscardMyData}), fsm.ErrNetConfigured)
	case "down":
		if err := r.Do(ctx, fsm.Demote{}); err != nil {
			return err
		}
		if err := r.Do(ctx, fsm.Disconnect{}); err != nil {
			return err
		}
		return r.Do(ctx, fsm.Detach{})
	case "attach":
		return r.Do(ctx, fsm.AttachBegin{})
	case "detach":
		return r.Do(ctx, fsm.Detach{})
	case "connect":
		return r.Do(ctx, fsm.Connect{DiscardMyData: req.DiscardMyData})
	case "disconnect":
		return r.Do(ctx, fsm.Disconnect{})
	case "primary":
		return r.Do(ctx, fsm.Promote{Force: req.Force})
	case "secondary":
		return r.Do(ctx, fsm.Demote{Force: req.Force})
	case "outdate":
		return r.Do(ctx, fsm.Outdate{})
	case "suspend-io":
		r.SuspendIO(true)
		return nil
	case "resume-io":
		r.SuspendIO(false)
		return nil
	case "verify":
		return r.Do(ctx, fsm.StartVerify{})
	case "invalidate":
		return r.Do(ctx, fsm.Invalidate{})
	case "invalidate-remote":
		return r.Do(ctx, fsm.InvalidateRemote{})
	case "pause-sync":
		return r.Do(ctx, fsm.PauseSync{})
	case "resume-sync":
		return r.Do(ctx, fsm.ResumeSync{})
	}
	return fmt.Errorf("unknown verb %q", req.Verb)
}

// statusLoop rewrites the status file on every change and every second.
func (d *Daemon) statusLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last []byte
	for {
		rs := d.statuses()
		d.adaptProcs(rs)
		if b := renderStatus(rs); !bytes.Equal(b, last) {
			if err := status.WriteFileAtomic(d.opts.StatusFile, b, 0o644); err != nil {
				d.log.Error("status file", "path", d.opts.StatusFile, "err", err)
			} else {
				last = b
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-d.changed:
		case <-t.C:
			last = nil // at least once a second, even unchanged
		}
	}
}

// adaptProcs sizes GOMAXPROCS to the work the resources can keep busy,
// as `twinblock serve` does (docs/architecture.md, "One P per client"):
// one P per open NBD session and per resync or verify running, at least
// one, at most the CPU count, unless Options.Procs fixes it. A write's
// work is a chain of goroutines (the NBD reader, the peer link's sender
// and receiver, the peer's applier) that hand it on to each other; on one
// P those hand-offs are cheap switches, on several each one wakes a
// thread, and the Ps left idle spin in the scheduler for CPU that the
// NBD client and the peer on the same machine need (make bench:
// docs/nbd.md, integration/bench).
func (d *Daemon) adaptProcs(rs []status.Resource) {
	want := d.opts.Procs
	if want <= 0 && d.envProcs {
		return // GOMAXPROCS in the environment decides
	}
	if want <= 0 {
		demand := 0
		for _, r := range rs {
			demand += r.NBDClients
			if r.Sync != nil {
				demand++
			}
		}
		want = min(max(demand, 1), runtime.NumCPU())
	}
	if runtime.GOMAXPROCS(0) != want {
		runtime.GOMAXPROCS(want)
	}
}

// statuses is every resource's status.
func (d *Daemon) statuses() []status.Resource {
	d.mu.RLock()
	defer d.mu.RUnlock()
	rs := make([]status.Resource, 0, len(d.resources))
	for _, r := range d.resources {
		rs = append(rs, r.Status())
	}
	return rs
}

func (d *Daemon) render() []byte { return renderStatus(d.statuses()) }

// renderStatus is the status file's text for rs.
func renderStatus(rs []status.Resource) []byte {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Minor < rs[j].Minor })
	var b bytes.Buffer
	_ = status.WriteProcDRBD(&b, Version, rs)
	return b.Bytes()
}

func (d *Daemon) writeStatus() error {
	return status.WriteFileAtomic(d.opts.StatusFile, d.render(), 0o644)
}
