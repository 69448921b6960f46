package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Cluster is two twinblock daemons on loopback, the first named node on
// 127.0.0.1 and the second on 127.0.0.2, each with its own disk, config,
// control socket, status file and log, and optionally a Proxy on the
// peer link (the first node's config names it as the second's address).
type Cluster struct {
	Dir   string
	Bin   string
	Names [2]string
	Nodes map[string]*Node
	Proxy *Proxy // nil unless Options.Proxy
	// Witness is the diskless third host of a quorum resource, "w" on
	// 127.0.0.3 (nil unless Options.Witness); it is not in Names.
	Witness *Node
	// Vars are the addresses the configuration files name (the second
	// node's peer-link address itself, not a Proxy's; Self empty).
	Vars Vars
	logf func(string, ...any)
}

// Options configure New.
type Options struct {
	// Dir holds every file of the cluster; Bin is the twinblock binary.
	Dir, Bin string
	// Names are the two nodes, on 127.0.0.1 and 127.0.0.2; "a" and "b"
	// if empty. The first dials the peer link (its name sorts first in
	// the config).
	Names    [2]string
	DiskSize int64
	// Faulty puts each disk behind nbdkit's error filter and nbdfuse
	// (FaultyDisk); otherwise disks are plain sparse files.
	Faulty bool
	// Proxy puts a Proxy on the peer link.
	Proxy bool
	// Witness makes r0 a quorum resource (options { quorum majority; })
	// with a diskless witness on 127.0.0.3 (Cluster.Witness), named
	// WitnessName ("w" if empty), and gives each node a quorum-address.
	Witness     bool
	WitnessName string
	// Config renders one node's configuration file; DefaultConfig if
	// nil.
	Config func(Vars) string
	// Fill, if set, writes a node's disk before create-md (the data
	// area keeps it: internal metadata sits at the end).
	Fill func(node string, f *os.File) error
	// NoCreateMD leaves create-md to the caller.
	NoCreateMD bool
	// DaemonArgs, if set, gives each node's extra daemon arguments
	// (Node.DaemonArgs) from its name and host.
	DaemonArgs func(name, host string) []string
	Logf       func(string, ...any)
}

// Vars is what one node's configuration file names: the two nodes' peer
// link addresses as that node sees them (with a Proxy, the first node
// sees the proxy as the second's address), their disks and their NBD
// listen addresses, in the order of Names.
type Vars struct {
	Self  string
	Names [2]string
	Addr  [2]string
	Disk  [2]string
	NBD   [2]string
	// Quorum: a witness, WitnessName at WitnessAddr, and each host's
	// quorum-address (the two nodes', then the witness's).
	Quorum      bool
	WitnessName string
	WitnessAddr string
	QuorumAddr  [3]string
}

// DefaultConfig is resource r0, protocol C, authenticated, with the
// timeouts short enough for tests (ping-int 1, connect-int 1).
func DefaultConfig(v Vars) string {
	return Config(v, "C", "s", "", "", "")
}

// Config renders resource r0 with the given protocol and shared secret,
// and extra statements in its net, disk and handlers sections.
func Config(v Vars, protocol, secret, net, disk, handlers string) string {
	if v.Quorum {
		return fmt.Sprintf(`resource r0 {
  protocol %s;
  net { cram-hmac-alg sha256; shared-secret "%s"; ping-int 1; ping-timeout 5; timeout 20; connect-int 1; %s }
  disk { on-io-error detach; %s }
  handlers { %s }
  options { quorum majority; on-no-quorum io-error; }
  meta-disk internal;
  on %s { address %s; disk %s; nbd-listen %s; quorum-address %s; }
  on %s { address %s; disk %s; nbd-listen %s; quorum-address %s; }
  on %s { address %s; disk none; quorum-address %s; }
}
`, protocol, secret, net, disk, handlers,
			v.Names[0], v.Addr[0], v.Disk[0], v.NBD[0], v.QuorumAddr[0], v.Names[1], v.Addr[1], v.Disk[1], v.NBD[1], v.QuorumAddr[1],
			v.WitnessName, v.WitnessAddr, v.QuorumAddr[2])
	}
	return fmt.Sprintf(`resource r0 {
  protocol %s;
  net { cram-hmac-alg sha256; shared-secret "%s"; ping-int 1; ping-timeout 5; timeout 20; connect-int 1; %s }
  disk { on-io-error detach; %s }
  handlers { %s }
  meta-disk internal;
  on %s { address %s; disk %s; nbd-listen %s; }
  on %s { address %s; disk %s; nbd-listen %s; }
}
`, protocol, secret, net, disk, handlers,
		v.Names[0], v.Addr[0], v.Disk[0], v.NBD[0], v.Names[1], v.Addr[1], v.Disk[1], v.NBD[1])
}

// Node is one daemon and what belongs to it.
type Node struct {
	Name, Host string
	Conf       string
	Control    string
	StatusFile string
	NBD        string // NBD listen address
	DiskPath   string // what the daemon opens
	Image      string // the bytes on the host's filesystem
	Disk       *FaultyDisk
	LogPath    string
	// DaemonArgs are added to the daemon's command line (set before
	// Start).
	DaemonArgs []string

	bin     string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool
	starts  int
	logOff  int64 // LogSince reads from here
	// fresh: the status file is trusted only once written after this
	// (the daemon's start or its SIGCONT): a stopped daemon's file is
	// stale.
	fresh time.Time
}

// FreeAddr is host:port of a port free on host now.
//
// The port is drawn below Linux's ephemeral range (32768 and up): a port
// the kernel picked with ":0" could be taken again, between this check
// and the daemon's listen, as the source port of an outgoing connection
// bound to the same address (the daemons bind theirs: a real run failed
// with "address already in use"). A port is handed out once per
// process.
func FreeAddr(host string) (string, error) {
	var lastErr error
	for range 200 {
		port := freePortLow + rand.IntN(freePortHigh-freePortLow)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			lastErr = err
			continue
		}
		addr := l.Addr().String()
		l.Close()
		return addr, nil
	}
	return "", fmt.Errorf("harness: no free port on %s: %w (127.0.0.2 must be usable: it is loopback on Linux)", host, lastErr)
}

// The ports FreeAddr draws from, and those it handed out in this process.
const freePortLow, freePortHigh = 20000, 32768

var handedOut sync.Map

// New writes the disks, configs and (unless NoCreateMD) the metadata.
// Nothing runs yet.
func New(o Options) (*Cluster, error) {
	if o.Names == [2]string{} {
		o.Names = [2]string{"a", "b"}
	}
	if o.Config == nil {
		o.Config = DefaultConfig
	}
	c := &Cluster{Dir: o.Dir, Bin: o.Bin, Names: o.Names, Nodes: map[string]*Node{}, logf: o.Logf}
	var v Vars
	v.Names = o.Names
	for i, host := range []string{"127.0.0.1", "127.0.0.2"} {
		name := o.Names[i]
		nd := &Node{Name: name, Host: host, bin: o.Bin,
			Conf:       filepath.Join(o.Dir, name+".conf"),
			Control:    filepath.Join(o.Dir, name+".sock"),
			StatusFile: filepath.Join(o.Dir, name+".status"),
			LogPath:    filepath.Join(o.Dir, name+".log"),
		}
		if o.DaemonArgs != nil {
			nd.DaemonArgs = o.DaemonArgs(name, host)
		}
		c.Nodes[name] = nd
		var err error
		if nd.NBD, err = FreeAddr(host); err != nil {
			c.Close()
			return nil, err
		}
		if v.Addr[i], err = FreeAddr(host); err != nil {
			c.Close()
			return nil, err
		}
		if o.Faulty {
			d, err := NewFaultyDisk(o.Dir, name, o.DiskSize, o.Logf)
			if err != nil {
				c.Close()
				return nil, err
			}
			nd.Disk, nd.DiskPath, nd.Image = d, d.Path(), d.Image
		} else {
			nd.Image = filepath.Join(o.Dir, name+".img")
			nd.DiskPath = nd.Image
			if err := makeSparse(nd.Image, o.DiskSize); err != nil {
				c.Close()
				return nil, err
			}
		}
		if o.Fill != nil {
			if err := fill(nd.Image, func(f *os.File) error { return o.Fill(name, f) }); err != nil {
				c.Close()
				return nil, err
			}
		}
		v.Disk[i], v.NBD[i] = nd.DiskPath, nd.NBD
	}
	if o.Witness {
		v.Quorum, v.WitnessName = true, o.WitnessName
		if v.WitnessName == "" {
			v.WitnessName = "w"
		}
		var err error
		for i, host := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
			if v.QuorumAddr[i], err = FreeAddr(host); err != nil {
				c.Close()
				return nil, err
			}
		}
		if v.WitnessAddr, err = FreeAddr("127.0.0.3"); err != nil {
			c.Close()
			return nil, err
		}
		wn := v.WitnessName
		w := &Node{Name: wn, Host: "127.0.0.3", bin: o.Bin,
			Conf:       filepath.Join(o.Dir, wn+".conf"),
			Control:    filepath.Join(o.Dir, wn+".sock"),
			StatusFile: filepath.Join(o.Dir, wn+".status"),
			LogPath:    filepath.Join(o.Dir, wn+".log"),
		}
		c.Witness = w
		v.Self = wn
		if err := os.WriteFile(w.Conf, []byte(o.Config(v)), 0o644); err != nil {
			c.Close()
			return nil, err
		}
	}
	second := v.Addr[1]
	c.Vars = v
	c.Vars.Self = ""
	if o.Proxy {
		p, err := NewProxy("127.0.0.2", second, "127.0.0.1")
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Proxy = p
	}
	for i, name := range o.Names {
		nd := c.Nodes[name]
		v.Self, v.Addr[1] = name, second
		if i == 0 && c.Proxy != nil {
			v.Addr[1] = c.Proxy.Addr()
		}
		if err := os.WriteFile(nd.Conf, []byte(o.Config(v)), 0o644); err != nil {
			c.Close()
			return nil, err
		}
		if o.NoCreateMD {
			continue
		}
		if out, err := nd.TB(30*time.Second, "create-md", "r0"); err != nil {
			c.Close()
			return nil, fmt.Errorf("harness: create-md on %s: %v: %s", nd.Name, err, out)
		}
	}
	return c, nil
}

func fill(path string, w func(*os.File) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := w(f); err != nil {
		f.Close()
		return fmt.Errorf("harness: filling %s: %w", path, err)
	}
	return f.Close()
}

// Node is the named node; it panics on a name the cluster lacks (a
// defect of the caller).
func (c *Cluster) Node(name string) *Node {
	n, ok := c.Nodes[name]
	if !ok {
		panic("harness: no node " + name)
	}
	return n
}

// Peer is the other node.
func (c *Cluster) Peer(n *Node) *Node {
	if n.Name == c.Names[0] {
		return c.Nodes[c.Names[1]]
	}
	return c.Nodes[c.Names[0]]
}

// Close stops both daemons (SIGCONT, SIGTERM, then SIGKILL), the proxy
// and the faulty disks. It reports the nodes that ignored SIGTERM.
func (c *Cluster) Close() []string {
	var killed []string
	for _, name := range c.Names {
		if n := c.Nodes[name]; n != nil && !n.Terminate() {
			killed = append(killed, name)
		}
	}
	if c.Witness != nil && !c.Witness.Terminate() {
		killed = append(killed, c.Witness.Name)
	}
	if c.Proxy != nil {
		c.Proxy.Close()
	}
	for _, n := range c.Nodes {
		if n.Disk != nil {
			n.Disk.Close()
		}
	}
	return killed
}

// TB runs a twinblock verb as this node, within timeout, and returns its
// output, trimmed.
func (n *Node) TB(timeout time.Duration, args ...string) (string, error) {
	return n.TBContext(context.Background(), timeout, args...)
}

// TBContext is TB, ended early by ctx.
func (n *Node) TBContext(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := append([]string{"--config", n.Conf, "--node", n.Name, "--control", n.Control}, args...)
	out, err := exec.CommandContext(ctx, n.bin, full...).CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("twinblock %s on %s: no answer within %v", strings.Join(args, " "), n.Name, timeout)
	}
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("twinblock %s on %s: %w", strings.Join(args, " "), n.Name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Start runs the daemon and waits for its control socket.
func (n *Node) Start() error {
	n.mu.Lock()
	if n.cmd != nil {
		select {
		case <-n.done:
		default:
			n.mu.Unlock()
			return fmt.Errorf("harness: %s already runs", n.Name)
		}
	}
	n.starts++
	_ = os.Remove(n.StatusFile)
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	fmt.Fprintf(logf, "=== %s start %d\n", time.Now().Format("15:04:05.000"), n.starts)
	args := append([]string{"--config", n.Conf, "--node", n.Name, "--control", n.Control,
		"daemon", "--status-file", n.StatusFile, "--state-dir", strings.TrimSuffix(n.StatusFile, ".status") + ".state"}, n.DaemonArgs...)
	cmd := exec.Command(n.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.mu.Unlock()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	n.cmd, n.done, n.stopped, n.fresh = cmd, done, false, time.Now()
	n.mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for {
		// The daemon answers: with the status, or with exit code 10 for
		// resources it has not brought up yet.
		_, err := n.TB(5*time.Second, "status")
		var ee *exec.ExitError
		if err == nil || errors.As(err, &ee) && ee.ExitCode() == 10 {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("harness: daemon %s exited at start:\n%s", n.Name, n.LogTail(20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("harness: daemon %s did not answer within 15 s:\n%s", n.Name, n.LogTail(20))
		}
	}
}

// StartUp is Start, then `up r0`.
func (n *Node) StartUp() error {
	if err := n.Start(); err != nil {
		return err
	}
	if out, err := n.TB(30*time.Second, "up", "r0"); err != nil {
		return fmt.Errorf("harness: up on %s: %w: %s", n.Name, err, out)
	}
	return nil
}

// WaitFor polls a one-line query verb (cstate, dstate, role) on r0 until
// it prints want, for at most within.
func (n *Node) WaitFor(ctx context.Context, verb, want string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		out, _ := n.TBContext(ctx, 10*time.Second, verb, "r0")
		if out == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("harness: %s: %s is %q, want %q after %v", n.Name, verb, out, want, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Alive reports whether the daemon runs (stopped or not).
func (n *Node) Alive() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// ExitedCleanly reports whether the daemon's last run has ended, with
// exit status 0.
func (n *Node) ExitedCleanly() bool {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return false
	}
	select {
	case <-done:
		return cmd.ProcessState.Success()
	default:
		return false
	}
}

// Stopped reports whether the daemon is SIGSTOPped.
func (n *Node) Stopped() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stopped
}

// Signal sends sig to the daemon (SIGHUP: reload its configuration).
func (n *Node) Signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return fmt.Errorf("harness: %s does not run", n.Name)
	}
	return n.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL and waits until the process is gone.
func (n *Node) Kill() { n.end(0, syscall.SIGKILL) }

// Quit sends SIGQUIT (a Go program writes every goroutine's stack to
// its log and exits), then SIGKILL if it still runs after 5 s.
func (n *Node) Quit() { n.end(5*time.Second, syscall.SIGCONT, syscall.SIGQUIT) }

// Stop sends SIGSTOP.
func (n *Node) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(syscall.SIGSTOP)
		n.stopped = true
	}
}

// Cont sends SIGCONT.
func (n *Node) Cont() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(syscall.SIGCONT)
		n.stopped, n.fresh = false, time.Now()
	}
}

// Terminate ends the daemon: SIGCONT and SIGTERM, SIGKILL after 10 s.
// It reports false if SIGKILL was needed.
func (n *Node) Terminate() bool { return n.end(10*time.Second, syscall.SIGCONT, syscall.SIGTERM) }

// end sends sigs to a running daemon and waits until it has exited: for
// ever with grace 0, else at most grace, then SIGKILL. It reports false
// if SIGKILL was needed.
func (n *Node) end(grace time.Duration, sigs ...syscall.Signal) bool {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.stopped = false
	n.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
	}
	for _, sig := range sigs {
		_ = cmd.Process.Signal(sig)
	}
	if grace == 0 {
		<-done
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
}

// Log is the daemon's whole log (every start of it).
func (n *Node) Log() string {
	b, err := os.ReadFile(n.LogPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// LogTail returns the last lines of the daemon's log, leaving out the
// per-request failures (counted instead).
func (n *Node) LogTail(lines int) string {
	b, err := os.ReadFile(n.LogPath)
	if err != nil {
		return err.Error()
	}
	var all []string
	failed := 0
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.Contains(l, "nbd: request failed") {
			failed++
			continue
		}
		all = append(all, l)
	}
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return fmt.Sprintf("(%d request failures left out)\n%s", failed, strings.Join(all, "\n"))
}

// SkipLog makes LogSince start after what the log holds now.
func (n *Node) SkipLog() {
	if fi, err := os.Stat(n.LogPath); err == nil {
		n.mu.Lock()
		n.logOff = fi.Size()
		n.mu.Unlock()
	}
}

// LogSince returns the log lines written since the last SkipLog that
// contain any of words.
func (n *Node) LogSince(words ...string) []string {
	n.mu.Lock()
	off := n.logOff
	n.mu.Unlock()
	f, err := os.Open(n.LogPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		for _, w := range words {
			if strings.Contains(sc.Text(), w) {
				out = append(out, sc.Text())
				break
			}
		}
	}
	return out
}

// Status is the state line and the out-of-sync count of the status file
// (DRBD 8.4's /proc/drbd).
type Status struct {
	CS, Role, PeerRole, Disk, PeerDisk string
	OOSKiB                             int64
	SplitBrain                         bool
	Text                               string
}

// Healthy: Connected, UpToDate/UpToDate, nothing out of sync.
func (s Status) Healthy() bool {
	return s.CS == "Connected" && s.Disk == "UpToDate" && s.PeerDisk == "UpToDate" && s.OOSKiB == 0
}

// Syncing: a resync runs (or is paused).
func (s Status) Syncing() bool {
	return strings.HasPrefix(s.CS, "Sync") || strings.HasPrefix(s.CS, "PausedSync")
}

func (s Status) String() string {
	return fmt.Sprintf("cs:%s ro:%s/%s ds:%s/%s oos:%d", s.CS, s.Role, s.PeerRole, s.Disk, s.PeerDisk, s.OOSKiB)
}

var (
	reState = regexp.MustCompile(`(?m)^ *0: cs:(\S+)(?: ro:(\S+)/(\S+) ds:(\S+)/(\S+))?`)
	reOOS   = regexp.MustCompile(`(?m) oos:(\d+)$`)
)

// ErrNotRunning: the daemon is dead or stopped, its status file stale.
var ErrNotRunning = errors.New("harness: daemon not running")

// ErrStale: the status file predates the daemon's last start or SIGCONT.
var ErrStale = errors.New("harness: status file not rewritten yet")

// Status reads the status file of a running daemon, once it has been
// rewritten since the daemon started or was continued.
func (n *Node) Status() (Status, error) {
	if !n.Alive() || n.Stopped() {
		return Status{}, ErrNotRunning
	}
	n.mu.Lock()
	fresh := n.fresh
	n.mu.Unlock()
	f, err := os.Open(n.StatusFile)
	if err != nil {
		return Status{}, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.ModTime().Before(fresh) {
		return Status{}, ErrStale
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return Status{}, err
	}
	return ParseStatus(string(b))
}

// ParseStatus parses the resource line of a status file.
func ParseStatus(text string) (Status, error) {
	s := Status{Text: text}
	m := reState.FindStringSubmatch(text)
	if m == nil {
		return s, fmt.Errorf("harness: no state line in %q", text)
	}
	s.CS, s.Role, s.PeerRole, s.Disk, s.PeerDisk = m[1], m[2], m[3], m[4], m[5]
	if m := reOOS.FindStringSubmatch(text); m != nil {
		s.OOSKiB, _ = strconv.ParseInt(m[1], 10, 64)
	}
	s.SplitBrain = strings.Contains(text, "split-brain:")
	return s, nil
}

// ReadData reads the first size bytes (the data area: the metadata is
// internal, at the end) of the node's disk as the daemon sees it.
func (n *Node) ReadData(size int64) ([]byte, error) {
	f, err := os.Open(n.DiskPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, size), buf); err != nil {
		return nil, err
	}
	return buf, nil
}
