package fsm

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/splitbrain"
)

var update = flag.Bool("update", false, "rewrite the expected output of testdata/*.txt")

// cluster is two in-memory nodes and the wire between them. Every step
// runs the Ready loop to quiescence: Meta is "persisted" into disk, State
// messages are delivered, links open and close as the actions say.
type cluster struct {
	nodes  map[string]*Node
	disks  map[string]*MetaState // the persisted metadata; nil = no disk
	link   bool                  // a connection exists between a and b
	closed map[string]bool       // sides that closed the link while the network was cut
	cut    bool                  // the network drops everything
	msgs   uint64                // messages that crossed the link
	out    *strings.Builder
	uuids  uint64
	opened map[string]int
	// changed is each node's count of bits in its bitmap (the after-sb
	// policies' "changes"); the harness keeps no bitmap of its own.
	changed map[string]uint64
	missed  map[string]bool // the next Attached of the node says Missed
}

func newCluster(out *strings.Builder) *cluster {
	c := &cluster{nodes: map[string]*Node{}, disks: map[string]*MetaState{}, out: out, opened: map[string]int{}, closed: map[string]bool{}, changed: map[string]uint64{}, missed: map[string]bool{}}
	for _, name := range []string{"a", "b"} {
		peer := map[string]string{"a": "b", "b": "a"}[name]
		c.nodes[name] = New(Config{Name: "r0@" + name, Self: name, Peer: peer, Protocol: 'C', Dialer: name == "a",
			PingInt: 10, PingTimeout: 2, Timeout: 5, KoCount: 3, ConnectInt: 8,
			VerifyAlg: name == "a",
			NewUUID:   func() uint64 { c.uuids++; return c.uuids << 8 }})
		c.disks[name] = &MetaState{GI: genid.GI{genid.UUIDJustCreated}}
	}
	return c
}

func (c *cluster) other(name string) string { return map[string]string{"a": "b", "b": "a"}[name] }

func (c *cluster) peerInfo(name string) PeerInfo {
	n := c.nodes[name]
	return PeerInfo{Role: n.role, Disk: n.disk, GI: n.gi, CrashedPrimary: n.crashedPrimary,
		DiscardMyData: n.discardMyData, OutOfSync: c.changed[name],
		Policies: n.cfg.SplitBrain, PoliciesSent: true,
		UserPaused: n.userPaused, VerifySource: n.conn == VerifyS}
}

// settle runs the Ready loops of both nodes until neither has work.
func (c *cluster) settle() {
	for range 100 {
		busy := false
		for _, name := range []string{"a", "b"} {
			n := c.nodes[name]
			if !n.HasReady() {
				continue
			}
			busy = true
			rd := n.Ready()
			n.Advance()
			for _, l := range rd.Log {
				fmt.Fprintf(c.out, "%s\n", l)
			}
			if rd.Meta != nil {
				m := *rd.Meta
				c.disks[name] = &m
			}
			if rd.SetAllOutOfSync {
				fmt.Fprintf(c.out, "%s: all blocks marked out of sync\n", name)
			}
			for _, a := range rd.Actions {
				c.do(name, a)
			}
			for _, h := range rd.Handlers {
				fmt.Fprintf(c.out, "%s: handler %s\n", name, h)
			}
			o := c.other(name)
			if rd.SendState && c.link && !c.cut {
				c.step(o, PeerChanged{Peer: c.peerInfo(name)})
			}
			if rd.SendBitmap && c.link && !c.cut {
				fmt.Fprintf(c.out, "%s: bitmap sent\n", name)
				c.step(o, BitmapReceived{})
			}
			if rd.SyncUUID != 0 && c.link && !c.cut {
				fmt.Fprintf(c.out, "%s: sync UUID %x sent\n", name, rd.SyncUUID)
				c.step(o, SyncUUIDReceived{UUID: rd.SyncUUID})
			}
		}
		if !busy {
			return
		}
	}
	panic("cluster does not settle")
}

func (c *cluster) do(name string, a Action) {
	switch a.Kind {
	case ActOpenDisk:
		d := c.disks[name]
		if d == nil {
			c.step(name, AttachFailed{Err: fmt.Errorf("no disk")})
			return
		}
		c.step(name, Attached{GI: d.GI, Flags: d.Flags, Missed: c.missed[name]})
		c.missed[name] = false
	case ActDial:
		o := c.nodes[c.other(name)]
		if c.cut || o.conn != WFConnection || c.link {
			c.step(name, DialFailed{Err: fmt.Errorf("connection refused")})
			return
		}
		c.link = true
		pa, pb := c.peerInfo(name), c.peerInfo(c.other(name))
		c.step(name, LinkUp{Peer: pb, Sent: pa, OutOfSync: c.changed[name]})
		c.step(c.other(name), LinkUp{Peer: pa, Sent: pb, OutOfSync: c.changed[c.other(name)]})
	case ActCloseLink:
		switch {
		case !c.link:
		case c.cut:
			// The other side hears nothing; it must notice by itself.
			c.closed[name] = true
			if c.closed[c.other(name)] {
				c.link, c.closed = false, map[string]bool{}
			}
		default:
			c.link = false
			c.step(c.other(name), LinkDown{Cause: TearDown, Err: fmt.Errorf("peer closed: %s", a.Reason)})
		}
	case ActCloseDisk:
		fmt.Fprintf(c.out, "%s: disk closed\n", name)
	}
}

func (c *cluster) step(name string, e Event) {
	if err := c.nodes[name].Step(e); err != nil {
		fmt.Fprintf(c.out, "%s: error: %v\n", name, err)
	}
}

func (c *cluster) status() {
	for _, name := range []string{"a", "b"} {
		n := c.nodes[name]
		io := n.IOMode()
		var m []string
		for _, f := range []struct {
			on   bool
			name string
		}{{io.Serve, "serve"}, {io.Local, "local"}, {io.Mirror, "mirror"}, {io.PeerReads, "peer-reads"}, {io.ReadDirtyFromPeer, "dirty-reads-from-peer"}} {
			if f.on {
				m = append(m, f.name)
			}
		}
		if len(m) == 0 {
			m = []string{"-"}
		}
		fmt.Fprintf(c.out, "%s: %s io:%s gi:%s flags:%s\n", name, n.State(), strings.Join(m, ","), shortGI(n.gi), n.flags())
	}
}

func shortGI(g genid.GI) string {
	parts := make([]string, 4)
	for i, u := range g {
		parts[i] = strconv.FormatUint(u, 16)
	}
	return strings.Join(parts, ":")
}

// run executes one command line.
func (c *cluster) run(t *testing.T, line string) {
	f := strings.Fields(line)
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	switch f[0] {
	case "attach":
		// attach X missed: X's data path acknowledged writes through
		// the peer that no disk of X holds.
		c.missed[f[1]] = arg(2) == "missed"
		c.step(f[1], AttachBegin{})
	case "detach":
		c.step(f[1], Detach{})
	case "disk-error":
		c.step(f[1], DiskFailed{Err: fmt.Errorf("EIO")})
	case "peer-write-failed":
		// The data path of f[1] mirrored a write the peer did not take.
		c.step(f[1], PeerWriteFailed{Err: fmt.Errorf("%s", strings.Join(f[2:], " "))})
	case "connect":
		c.step(f[1], Connect{DiscardMyData: arg(2) == "--discard-my-data"})
	case "disconnect":
		c.step(f[1], Disconnect{})
	case "primary":
		c.step(f[1], Promote{Force: arg(2) == "--force"})
	case "secondary":
		c.step(f[1], Demote{})
	case "open":
		n, _ := strconv.Atoi(arg(2))
		c.opened[f[1]] = n
		c.step(f[1], OpenCount{N: n})
	case "crash":
		// The node's process dies: a fresh node reads its disk again;
		// its metadata says Primary if it was (meta.Open turns that into
		// crashed-primary).
		name := f[1]
		if c.link {
			c.link = false
			c.step(c.other(name), LinkDown{Cause: BrokenPipe, Err: fmt.Errorf("connection reset")})
		}
		old := c.nodes[name]
		if d := c.disks[name]; d != nil && d.Flags&genid.FlagPrimaryInd != 0 {
			d.Flags = d.Flags&^genid.FlagPrimaryInd | genid.FlagCrashedPrimary
		}
		c.nodes[name] = New(old.cfg)
	case "seed":
		// Both disks hold the same UpToDate generation, as after a
		// finished initial sync.
		for _, name := range []string{"a", "b"} {
			c.disks[name] = &MetaState{GI: genid.GI{0x5eed000}, Flags: genid.FlagConsistent | genid.FlagWasUpToDate}
		}
	case "cut":
		// The network drops everything: the nodes notice through ticks.
		c.cut = true
	case "heal":
		c.cut = false
		for name := range c.closed {
			// The side that kept its end learns at its next send.
			c.link, c.closed = false, map[string]bool{}
			c.step(c.other(name), LinkDown{Cause: BrokenPipe, Err: fmt.Errorf("connection reset by peer")})
		}
	case "tick":
		n, _ := strconv.Atoi(arg(1))
		pending, _ := strconv.Atoi(arg(2))
		for range n {
			if c.link && !c.cut {
				c.msgs++ // the peer answers
			}
			for _, name := range []string{"a", "b"} {
				act := Activity{Received: c.msgs}
				if pending > 0 && c.nodes[name].role == Primary {
					act.Pending, act.OldestPending = pending, 1
				}
				c.nodes[name].Tick(act)
			}
			c.settle()
		}
	case "invalidate":
		c.step(f[1], Invalidate{})
	case "invalidate-remote":
		c.step(f[1], InvalidateRemote{})
	case "pause-sync":
		c.step(f[1], PauseSync{})
	case "resume-sync":
		c.step(f[1], ResumeSync{})
	case "verify":
		c.step(f[1], StartVerify{})
	case "resync-done":
		// The sync target's engine fetched every block.
		c.step(f[1], ResyncDone{})
	case "resync-failed":
		c.step(f[1], ResyncFailed{Err: fmt.Errorf("link failed")})
	case "verify-done":
		c.step(f[1], VerifyDone{})
	case "changed":
		// changed NODE N: N blocks set in the node's bitmap.
		n, _ := strconv.ParseUint(arg(2), 10, 64)
		c.changed[f[1]] = n
	case "policy", "policy-on":
		// policy KEYWORD VALUE: both nodes' net section;
		// policy-on NODE KEYWORD VALUE: one node's.
		nodes := []string{"a", "b"}
		if f[0] == "policy-on" {
			nodes, f = []string{f[1]}, f[1:]
		}
		for _, name := range nodes {
			cfg := &c.nodes[name].cfg.SplitBrain
			var err error
			switch f[1] {
			case "rr-conflict":
				cfg.RRConflict, err = splitbrain.ParseRRConflict(arg(2))
			case "always-asbp":
				cfg.AlwaysASBP = arg(2) == "yes"
			case "after-sb-0pri":
				cfg.After0p, err = splitbrain.ParsePolicy(f[1], arg(2), name, c.other(name))
			case "after-sb-1pri":
				cfg.After1p, err = splitbrain.ParsePolicy(f[1], arg(2), name, c.other(name))
			case "after-sb-2pri":
				cfg.After2p, err = splitbrain.ParsePolicy(f[1], arg(2), name, c.other(name))
			default:
				t.Fatalf("unknown policy keyword %q", f[1])
			}
			require.NoError(t, err)
		}
	case "status":
		c.status()
	default:
		t.Fatalf("unknown command %q", line)
	}
	c.settle()
}

// TestScenarios runs the two-node stories in testdata/*.txt. Each block is
// a command, a "----" line and the expected trace; -update rewrites them.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	sort.Strings(files)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			src, err := os.ReadFile(file)
			require.NoError(t, err)
			var got strings.Builder
			var out strings.Builder
			c := newCluster(&out)
			blocks := strings.Split(strings.TrimSpace(string(src)), "\n\n")
			for _, b := range blocks {
				cmd, _, _ := strings.Cut(b, "\n----")
				cmd = strings.TrimSpace(cmd)
				out.Reset()
				for _, line := range strings.Split(cmd, "\n") {
					if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
						c.run(t, line)
					}
				}
				fmt.Fprintf(&got, "%s\n----\n%s\n", cmd, out.String())
			}
			want := string(src)
			if *update {
				require.NoError(t, os.WriteFile(file, []byte(strings.TrimRight(got.String(), "\n")+"\n"), 0o644))
				return
			}
			require.Equal(t, strings.TrimRight(want, "\n"), strings.TrimRight(got.String(), "\n"))
		})
	}
}
