package torture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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

// Cluster is two twinblock daemons, a (127.0.0.1) and b (127.0.0.2), each
// with its own disk, config, control socket, status file and log, and the
// Proxy on the peer link (a's config names it as b's address).
type Cluster struct {
	Dir   string
	Bin   string
	Nodes map[string]*Node
	Proxy *Proxy
	logf  func(string, ...any)
}

// ClusterOptions configure NewCluster.
type ClusterOptions struct {
	Dir, Bin string
	DiskSize int64
	// Faulty puts each disk behind nbdkit's error filter and nbdfuse
	// (FaultyDisk); otherwise disks are plain sparse files.
	Faulty bool
	// ResyncRate is the fixed resync rate (resync-rate, c-plan-ahead 0),
	// e.g. "16M", slow enough for a crash to land inside a resync.
	ResyncRate string
	Logf       func(string, ...any)
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

func freeAddr(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// NewCluster writes the disks, configs and metadata. Nothing runs yet.
func NewCluster(o ClusterOptions) (*Cluster, error) {
	c := &Cluster{Dir: o.Dir, Bin: o.Bin, Nodes: map[string]*Node{}, logf: o.Logf}
	peer := map[string]string{}
	for _, n := range []struct{ name, host string }{{"a", "127.0.0.1"}, {"b", "127.0.0.2"}} {
		nd := &Node{Name: n.name, Host: n.host, bin: o.Bin,
			Conf:       filepath.Join(o.Dir, n.name+".conf"),
			Control:    filepath.Join(o.Dir, n.name+".sock"),
			StatusFile: filepath.Join(o.Dir, n.name+".status"),
			LogPath:    filepath.Join(o.Dir, n.name+".log"),
		}
		var err error
		if nd.NBD, err = freeAddr(n.host); err != nil {
			return nil, err
		}
		if peer[n.name], err = freeAddr(n.host); err != nil {
			return nil, err
		}
		if o.Faulty {
			d, err := NewFaultyDisk(o.Dir, n.name, o.DiskSize, o.Logf)
			if err != nil {
				c.Close()
				return nil, err
			}
			nd.Disk, nd.DiskPath, nd.Image = d, d.Path(), d.Image
		} else {
			nd.Image = filepath.Join(o.Dir, n.name+".img")
			nd.DiskPath = nd.Image
			if err := makeSparse(nd.Image, o.DiskSize); err != nil {
				return nil, err
			}
		}
		c.Nodes[n.name] = nd
	}
	p, err := NewProxy("127.0.0.2", peer["b"], "127.0.0.1")
	if err != nil {
		c.Close()
		return nil, err
	}
	c.Proxy = p
	bAddr := map[string]string{"a": p.Addr(), "b": peer["b"]}
	a, b := c.Nodes["a"], c.Nodes["b"]
	for _, nd := range []*Node{a, b} {
		conf := fmt.Sprintf(`resource r0 {
  protocol C;
  net { cram-hmac-alg sha256; shared-secret "torture"; ping-int 1; ping-timeout 5; timeout 20; connect-int 1; ko-count 7; }
  disk { on-io-error detach; c-plan-ahead 0; resync-rate %s; }
  meta-disk internal;
  on a { address %s; disk %s; nbd-listen %s; }
  on b { address %s; disk %s; nbd-listen %s; }
}
`, o.ResyncRate, peer["a"], a.DiskPath, a.NBD, bAddr[nd.Name], b.DiskPath, b.NBD)
		if err := os.WriteFile(nd.Conf, []byte(conf), 0o644); err != nil {
			c.Close()
			return nil, err
		}
		if out, err := nd.TB(30*time.Second, "create-md", "r0"); err != nil {
			c.Close()
			return nil, fmt.Errorf("torture: create-md on %s: %v: %s", nd.Name, err, out)
		}
	}
	return c, nil
}

// Peer is the other node.
func (c *Cluster) Peer(n *Node) *Node {
	if n.Name == "a" {
		return c.Nodes["b"]
	}
	return c.Nodes["a"]
}

// Close stops both daemons (SIGCONT, SIGTERM, then SIGKILL), the proxy
// and the faulty disks.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		n.Terminate()
	}
	if c.Proxy != nil {
		c.Proxy.Close()
	}
	for _, n := range c.Nodes {
		if n.Disk != nil {
			n.Disk.Close()
		}
	}
}

// TB runs a twinblock verb as this node, within timeout.
func (n *Node) TB(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"--config", n.Conf, "--node", n.Name, "--control", n.Control}, args...)
	out, err := exec.CommandContext(ctx, n.bin, full...).CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("twinblock %s on %s: no answer within %v", strings.Join(args, " "), n.Name, timeout)
	}
	return strings.TrimSpace(string(out)), err
}

// Start runs the daemon, waits for its control socket and brings the
// resource up.
func (n *Node) Start() error {
	n.mu.Lock()
	if n.cmd != nil {
		select {
		case <-n.done:
		default:
			n.mu.Unlock()
			return fmt.Errorf("torture: %s already runs", n.Name)
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
	cmd := exec.Command(n.bin, "--config", n.Conf, "--node", n.Name, "--control", n.Control,
		"daemon", "--status-file", n.StatusFile)
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
		if _, err := n.TB(5*time.Second, "status"); err == nil {
			break
		}
		select {
		case <-done:
			return fmt.Errorf("torture: daemon %s exited at start", n.Name)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("torture: daemon %s did not answer within 15 s", n.Name)
		}
	}
	if out, err := n.TB(30*time.Second, "up", "r0"); err != nil {
		return fmt.Errorf("torture: up on %s: %v: %s", n.Name, err, out)
	}
	return nil
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

// Stopped reports whether the daemon is SIGSTOPped.
func (n *Node) Stopped() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stopped
}

// Kill sends SIGKILL and waits until the process is gone.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.stopped = false
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Quit sends SIGQUIT (a Go program writes every goroutine's stack to
// its log and exits), then SIGKILL if it still runs after 5 s.
func (n *Node) Quit() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.stopped = false
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

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
func (n *Node) Terminate() bool {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
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
var ErrNotRunning = errors.New("torture: daemon not running")

// ErrStale: the status file predates the daemon's last start or SIGCONT.
var ErrStale = errors.New("torture: status file not rewritten yet")

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
		return s, fmt.Errorf("torture: no state line in %q", text)
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
