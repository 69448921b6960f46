package node

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/netsim"
)

// The driver's scenario tests: two Resources (the whole Ready loop, with
// the real link, resync engine and device) on crashable in-memory disks,
// the in-memory network and the fake clock, with a fake exporter that can
// be told to fail. Each file in testdata/driver is a story of blocks: the
// commands, a "----" line, and what they printed (the verbs' results and,
// after "status", both nodes' states). -update rewrites the expected
// output. What they pin is the driver's side of each transition: that
// the actions a Ready asks for are taken, the verbs report their
// failures, and the status follows.

var updateDriver = flag.Bool("update", false, "rewrite the expected output of testdata/driver/*.txt")

// fakeExporter is an exporter that opens nothing; failNext makes the
// next Open fail as a taken address would.
type fakeExporter struct {
	mu       sync.Mutex
	open     bool
	failNext bool
	opens    int
}

func (e *fakeExporter) Open() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failNext {
		e.failNext = false
		return errors.New("r0: cannot serve the NBD export on 127.0.0.1:10809: address already in use")
	}
	if !e.open {
		e.opens++
	}
	e.open = true
	return nil
}

func (e *fakeExporter) Close() {
	e.mu.Lock()
	e.open = false
	e.mu.Unlock()
}

func (e *fakeExporter) Sessions() int { return 0 }

func (e *fakeExporter) state() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.open {
		return "serving"
	}
	return "closed"
}

// driverRig is the two nodes of a driver scenario.
type driverRig struct {
	t     *testing.T
	net   *netsim.Network
	clk   *clock.Fake
	cfg   *config.Resource
	nodes map[string]*driverNode
	out   *strings.Builder
}

type driverNode struct {
	name, host string
	backing    *disk.Crash
	faulty     *disk.Faulty
	exp        *fakeExporter
	r          *Resource
	cancel     context.CancelFunc
}

func newDriverRig(t *testing.T, out *strings.Builder) *driverRig {
	cfg, err := config.Parse("driver.conf", []byte(`resource r0 {
  protocol C;
  net { ping-int 1; ping-timeout 5; timeout 20; connect-int 1; ko-count 3; }
  disk { on-io-error detach; c-plan-ahead 0; resync-rate 1M; }
  meta-disk internal;
  on a { address 127.0.0.1:7789; disk a.img; nbd-listen 127.0.0.1:10809; }
  on b { address 127.0.0.2:7789; disk b.img; nbd-listen 127.0.0.2:10809; }
}
`))
	require.NoError(t, err)
	g := &driverRig{t: t, net: netsim.New(), clk: clock.NewFake(time.Unix(1_800_000_000, 0)), cfg: cfg.Resources[0],
		nodes: map[string]*driverNode{}, out: out}
	for _, name := range []string{"a", "b"} {
		d, _ := inSyncDisk(t, name)
		n := &driverNode{name: name, host: "127.0.0.1", backing: d, exp: &fakeExporter{}}
		if name == "b" {
			n.host = "127.0.0.2"
		}
		n.faulty = disk.NewFaulty(d, nil)
		g.nodes[name] = n
	}
	t.Cleanup(func() {
		for _, n := range g.nodes {
			if n.r != nil {
				_ = n.r.Close()
				n.cancel()
			}
		}
	})
	return g
}

// start runs node n's Resource (StandAlone, Diskless, Secondary).
func (g *driverRig) start(n *driverNode) {
	env := Env{Net: g.net, Clock: g.clk, OpenDisk: func(path string) (disk.Disk, error) {
		if path != n.name+".img" {
			return nil, fmt.Errorf("no disk %s", path)
		}
		return n.faulty, nil
	}}
	r, err := NewResourceEnv(g.cfg, n.name, nil, nil, env)
	require.NoError(g.t, err)
	r.exp = n.exp
	ctx, cancel := context.WithCancel(context.Background())
	r.Start(ctx)
	n.r, n.cancel = r, cancel
}

// do runs a verb on node n and prints its result.
func (g *driverRig) do(n *driverNode, verb string, ev fsm.Event) {
	if err := n.r.Do(context.Background(), ev); err != nil {
		fmt.Fprintf(g.out, "%s: %s: %v\n", n.name, verb, err)
		return
	}
	fmt.Fprintf(g.out, "%s: %s: ok\n", n.name, verb)
}

// settle advances the fake clock a tick at a time until neither node's
// status has changed for 30 ticks (2000 at most).
func (g *driverRig) settle() {
	same, last := 0, ""
	for range 2000 {
		var b strings.Builder
		for _, name := range []string{"a", "b"} {
			if n := g.nodes[name]; n.r != nil {
				s := n.r.Status()
				fmt.Fprintf(&b, "%s|%v|", line(s), s.Sync != nil)
			}
		}
		if b.String() == last {
			if same++; same == 30 {
				return
			}
		} else {
			same, last = 0, b.String()
		}
		g.clk.Advance(clock.Tick)
		time.Sleep(300 * time.Microsecond)
	}
	g.t.Fatalf("the nodes did not settle: %s", last)
}

func (g *driverRig) run(cmd string) {
	f := strings.Fields(cmd)
	arg := func(i int) string {
		if i >= len(f) {
			g.t.Fatalf("%q: missing argument %d", cmd, i)
		}
		return f[i]
	}
	node := func() *driverNode {
		n := g.nodes[arg(1)]
		if n == nil {
			g.t.Fatalf("%q: no node %s", cmd, arg(1))
		}
		return n
	}
	switch f[0] {
	case "start":
		g.start(node())
	case "attach":
		g.do(node(), "attach", fsm.AttachBegin{})
	case "connect":
		g.do(node(), "connect", fsm.Connect{})
	case "disconnect":
		g.do(node(), "disconnect", fsm.Disconnect{})
	case "primary":
		g.do(node(), "primary", fsm.Promote{})
	case "secondary":
		g.do(node(), "secondary", fsm.Demote{})
	case "invalidate":
		g.do(node(), "invalidate", fsm.Invalidate{})
	case "export-fails":
		n := node()
		n.exp.mu.Lock()
		n.exp.failNext = true
		n.exp.mu.Unlock()
	case "disk-fails":
		node().faulty.SetInjector(func(o disk.Op) error {
			if o.Kind == disk.OpRead {
				return nil
			}
			return disk.ErrInjected
		})
	case "disk-heals":
		node().faulty.SetInjector(nil)
	case "cut":
		g.net.Cut("127.0.0.1", "127.0.0.2")
	case "partition":
		g.net.Partition("127.0.0.1", "127.0.0.2")
	case "heal":
		g.net.Heal("127.0.0.1", "127.0.0.2")
	case "write":
		n := node()
		off, err := strconv.ParseInt(arg(2), 0, 64)
		require.NoError(g.t, err)
		size, err := strconv.ParseInt(arg(3), 0, 64)
		require.NoError(g.t, err)
		// Time goes on while it waits: a partitioned peer is dropped by
		// the state machine's timeouts.
		done := make(chan error, 1)
		go func() { done <- n.r.dev.WriteAt(content(uint64(off)|1<<63, off, size), off, false) }()
		var werr error
	wait:
		for {
			select {
			case werr = <-done:
				break wait
			case <-time.After(2 * time.Millisecond):
				g.clk.Advance(clock.Tick)
			}
		}
		fmt.Fprintf(g.out, "%s: write %d+%d: %v\n", n.name, off, size, werr)
	case "tick":
		k, err := strconv.Atoi(arg(1))
		require.NoError(g.t, err)
		for range k {
			g.clk.Advance(clock.Tick)
			time.Sleep(300 * time.Microsecond)
		}
	case "settle":
		g.settle()
	case "status":
		for _, name := range []string{"a", "b"} {
			n := g.nodes[name]
			if n.r == nil {
				continue
			}
			s := n.r.Status()
			sync := ""
			if s.Sync != nil {
				sync = " resync"
			}
			// How many blocks are marked depends on how far a resync
			// got in the ticks given: the stories say none or some.
			oos := "0"
			if s.OutOfSync > 0 {
				oos = "some"
			}
			fmt.Fprintf(g.out, "%s: %s %s/%s %s/%s oos:%s export:%s%s\n", name, s.Conn, s.Role, s.PeerRole, s.Disk, s.PeerDisk, oos, n.exp.state(), sync)
		}
	case "same-data":
		a, b := make([]byte, tBacking), make([]byte, tBacking)
		require.NoError(g.t, g.nodes["a"].backing.ReadAt(a, 0))
		require.NoError(g.t, g.nodes["b"].backing.ReadAt(b, 0))
		// The data areas (the metadata at the end differs by design).
		dataSize := g.nodes["a"].r.exportSize()
		fmt.Fprintf(g.out, "data areas equal: %v\n", bytes.Equal(a[:dataSize], b[:dataSize]))
	default:
		g.t.Fatalf("unknown command %q", cmd)
	}
}

// TestDriverScenarios runs testdata/driver/*.txt.
func TestDriverScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/driver/*.txt")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	sort.Strings(files)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			src, err := os.ReadFile(file)
			require.NoError(t, err)
			var got, out strings.Builder
			g := newDriverRig(t, &out)
			for _, b := range strings.Split(strings.TrimSpace(string(src)), "\n\n") {
				cmd, _, _ := strings.Cut(b, "\n----")
				cmd = strings.TrimSpace(cmd)
				out.Reset()
				for _, l := range strings.Split(cmd, "\n") {
					if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
						g.run(l)
					}
				}
				fmt.Fprintf(&got, "%s\n----\n%s\n", cmd, out.String())
			}
			if *updateDriver {
				require.NoError(t, os.WriteFile(file, []byte(strings.TrimRight(got.String(), "\n")+"\n"), 0o644))
				return
			}
			require.Equal(t, strings.TrimRight(string(src), "\n"), strings.TrimRight(got.String(), "\n"))
		})
	}
}
