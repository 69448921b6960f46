package node

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/pkg/netsim"
	"github.com/twinblock/twinblock/pkg/quorum"
	"github.com/twinblock/twinblock/pkg/status"
)

// The in-process torture test: two Resources in one process, on
// crashable disks (disk.Crash behind disk.Faulty), the in-memory network
// (netsim) and a fake clock. Each episode is a seeded random schedule of
// client operations through the Primary's device (every kind, sizes up
// to the export's 32 MiB, several at once), faults (cut, partition, a
// node's power loss, a failing disk) and admin actions (switchover,
// disconnect/connect, invalidate, verify). After every step it checks
// the nodes against a model of what was acknowledged:
//
//   - the Primary reads back, for every block written, a content the
//     model allows (the last acknowledged write; after a failed write or
//     a power loss, any of the candidates, sector by sector);
//   - a node promoted after the Primary's power loss lacks no
//     acknowledged write (it is promoted only if the Primary's status
//     said Connected, UpToDate/UpToDate: that status is the promise);
//   - Connected with UpToDate/UpToDate, outside a resync, means oos 0 on
//     both and byte-identical data;
//   - otherwise every block that differs between the nodes is marked in
//     a bitmap.
//
// A failing episode prints its seed and the trace of its steps; run it
// again with -torture.seed=SEED. The schedule replays exactly; the
// goroutines' interleaving may differ, so a rare race may need a few
// runs (-count).
var (
	tortureEpisodes = flag.Int("torture.episodes", 0, "episodes to run (0: $TWINBLOCK_TORTURE_EPISODES, else 30)")
	tortureDuration = flag.Duration("torture.duration", 0, "run episodes for this long instead of a count")
	tortureSeed     = flag.Uint64("torture.seed", 0, "run the one episode with this seed")
	tortureBase     = flag.Uint64("torture.base", 0, "derive the episodes' seeds from this one (0: the time)")
	tortureParallel = flag.Int("torture.parallel", 1, "episodes run at once (each has its own network, clock and disks)")
	tortureSteps    = flag.Int("torture.steps", 16, "steps per episode")
	tortureGoOn     = flag.Bool("torture.keepgoing", false, "go on after a failed episode (each failure prints its seed and trace)")
	tortureStrict   = flag.Bool("torture.strict", true, "fail on every violation; false: only a lost, divergent or dishonest one fails the test, the others (a pair that does not heal in time, a refused promotion) are logged and counted")
)

const (
	tBacking = 40 << 20 // each node's backing disk: room for a 32 MiB write
	tBlock   = 4096
	tSector  = 512
)

// tortureStats are the figures a run reports.
type tortureStats struct {
	mu                              sync.Mutex
	episodes, steps, acked, failed  int
	faults                          map[string]int
	lost, divergent, dishonest, bad int
}

func (s *tortureStats) fault(kind string) {
	s.mu.Lock()
	s.faults[kind]++
	s.mu.Unlock()
}

func TestTorture(t *testing.T) {
	if *tortureSeed == 0 && *tortureEpisodes == 0 && *tortureDuration == 0 && os.Getenv("TWINBLOCK_TORTURE_EPISODES") == "" {
		// make test runs a bounded number of episodes without the race
		// detector (make torture-short), make torture runs it for a
		// duration; the race-enabled unit run leaves it out.
		t.Skip("run by make torture-short and make torture (TWINBLOCK_TORTURE_EPISODES or -torture.*)")
	}
	st := &tortureStats{faults: map[string]int{}}
	run := func(seed uint64) bool {
		tt := newTorture(t, seed, st)
		ok := tt.episode()
		st.mu.Lock()
		st.episodes++
		st.mu.Unlock()
		switch {
		case ok:
		case tt.unsafe || *tortureStrict:
			t.Errorf("torture episode failed; replay with: go test ./pkg/node -run TestTorture -torture.seed=%d\ntrace:\n%s", seed, strings.Join(tt.trace, "\n"))
		default:
			t.Logf("torture episode violated liveness (not failing: -torture.strict=false); replay with: go test ./pkg/node -run TestTorture -torture.seed=%d\n%s", seed, tt.trace[len(tt.trace)-1])
			return true
		}
		return ok
	}
	switch {
	case *tortureSeed != 0:
		run(*tortureSeed)
	default:
		n := *tortureEpisodes
		if n == 0 {
			n, _ = strconv.Atoi(os.Getenv("TWINBLOCK_TORTURE_EPISODES"))
		}
		if n == 0 {
			n = 30
		}
		base := *tortureBase
		if base == 0 {
			base = uint64(time.Now().UnixNano())
		}
		start := time.Now()
		var next atomic.Int64
		var stop atomic.Bool
		var wg sync.WaitGroup
		for range max(1, *tortureParallel) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					i := next.Add(1) - 1
					if *tortureDuration > 0 {
						if time.Since(start) > *tortureDuration {
							return
						}
					} else if i >= int64(n) {
						return
					}
					if !run(base+uint64(i)*0x9e3779b97f4a7c15) && !*tortureGoOn {
						stop.Store(true)
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		kinds := make([]string, 0, len(st.faults))
		for k := range st.faults {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		var b strings.Builder
		for _, k := range kinds {
			fmt.Fprintf(&b, " %s=%d", k, st.faults[k])
		}
		t.Logf("in-process torture: %d episodes (%d steps) in %v (%.0f episodes/min); operations acknowledged %d, failed %d; faults:%s; lost %d, divergent %d, dishonest %d, other violations %d",
			st.episodes, st.steps, el.Round(time.Millisecond), float64(st.episodes)/el.Minutes(), st.acked, st.failed, b.String(), st.lost, st.divergent, st.dishonest, st.bad)
	}
}

// tnode is one node of an episode.
type tnode struct {
	name, host string
	backing    *disk.Crash
	faulty     *disk.Faulty
	r          *Resource
	cancel     context.CancelFunc
}

// blockModel is what one 4 KiB block may hold: cands now (on the
// Primary), durable after a power loss of the only node that holds it.
// Tag 0 is zeroes.
type blockModel struct {
	cands, durable []uint64
	// viaPeer: the last acknowledged write went through the peer alone
	// (a Diskless Primary's): the Primary's power loss does not touch it.
	viaPeer bool
}

type torture struct {
	t        *testing.T
	seed     uint64
	rng      *rand.Rand
	st       *tortureStats
	net      *netsim.Network
	clk      *clock.Fake
	cfg      *config.Resource
	nodes    [2]*tnode
	primary  int // the node that is Primary, -1 for none
	dataSize int64
	model    map[int64]*blockModel
	tag      uint64
	unsafe   bool      // a lost, divergent or dishonest violation
	logTo    io.Writer // the nodes' log (nil: $TWINBLOCK_TORTURE_LOG, or none)
	trace    []string
	diskMu   sync.Mutex // guards the nodes' backing (setDisk)
	// frozen: the Primary lost power mid-batch; requests that complete
	// from then on were never answered.
	frozen atomic.Bool
	// powerLosses counts freezes (checkAck skips a write whose peer lost
	// power while it was in flight).
	powerLosses atomic.Uint64
	traceMu     sync.Mutex // a mid-batch fault logs from its own goroutine
	failed      bool
	// quorum, if set, is the nodes' quorum group (Env.Quorum); group,
	// with -torture.quorum, is the episode's group, a member per node.
	quorum QuorumService
	group  *tortureGroup
}

func newTorture(t *testing.T, seed uint64, st *tortureStats) *torture {
	tt := &torture{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x7071)), st: st,
		net: netsim.New(), clk: clock.NewFake(time.Unix(1_800_000_000, 0)), model: map[int64]*blockModel{}, primary: -1}
	cfg, err := config.Parse("torture.conf", []byte(`resource r0 {
  protocol C;
  net { ping-int 1; ping-timeout 5; timeout 20; connect-int 1; ko-count 3; verify-alg crc32c; }
  disk { on-io-error detach; }
  options { on-no-quorum io-error; }
  meta-disk internal;
  on a { address 127.0.0.1:7789; disk a.img; nbd-listen 127.0.0.1:10809; }
  on b { address 127.0.0.2:7789; disk b.img; nbd-listen 127.0.0.2:10809; }
}
`))
	if err != nil {
		t.Fatal(err)
	}
	tt.cfg = cfg.Resources[0]
	if *tortureQuorum {
		tt.group = newTortureGroup()
	}
	for i, name := range []string{"a", "b"} {
		d, dataSize := inSyncDisk(t, name)
		tt.dataSize = dataSize
		tt.nodes[i] = &tnode{name: name, host: "127.0.0.1", backing: d}
		if name == "b" {
			tt.nodes[i].host = "127.0.0.2"
		}
	}
	return tt
}

// inSyncDisk is a crashable tBacking disk with internal metadata, equal
// (zeroes) to the other node's, in one UpToDate generation, as after a
// finished initial sync; it returns the disk and its data area's size.
func inSyncDisk(t *testing.T, name string) (*disk.Crash, int64) {
	t.Helper()
	d := disk.NewCrash(tBacking)
	l, err := meta.ComputeLayout(meta.InternalPlacement, tBacking, tBacking, meta.DefaultGranularity, meta.DefaultALExtents)
	require.NoError(t, err)
	_, err = meta.Format(d, l)
	require.NoError(t, err)
	md, err := meta.Open(d, meta.InternalPlacement, meta.Options{Name: name})
	require.NoError(t, err)
	require.NoError(t, md.Update(func(sb *meta.Superblock) {
		sb.GI = genid.GI{0x5eed000}
		sb.Flags = genid.FlagConsistent | genid.FlagWasUpToDate
	}))
	require.NoError(t, md.Close())
	require.NoError(t, d.Flush())
	return d, l.DataSize
}

func (tt *torture) logf(format string, args ...any) {
	tt.traceMu.Lock()
	defer tt.traceMu.Unlock()
	line := fmt.Sprintf(format, args...)
	if os.Getenv("TWINBLOCK_TORTURE_LOG") != "" {
		// With the nodes' log: wall-clock times to interleave by.
		line = time.Now().UTC().Format("15:04:05.000000 ") + line
	}
	tt.trace = append(tt.trace, line)
}

// fail records a violation of kind (lost, divergent, dishonest, bad).
func (tt *torture) fail(kind, format string, args ...any) {
	tt.st.mu.Lock()
	tt.unsafe = tt.unsafe || kind == "lost" || kind == "divergent" || kind == "dishonest"
	switch kind {
	case "lost":
		tt.st.lost++
	case "divergent":
		tt.st.divergent++
	case "dishonest":
		tt.st.dishonest++
	default:
		tt.st.bad++
	}
	tt.st.mu.Unlock()
	tt.logf("VIOLATION (%s): %s", kind, fmt.Sprintf(format, args...))
	tt.failed = true
}

// start runs node i's Resource on its current disk and brings it up
// (attach, connect), as `twinblock up`.
func (tt *torture) start(i int) {
	n := tt.nodes[i]
	n.faulty = disk.NewFaulty(n.backing, nil)
	env := Env{Net: tt.net, Clock: tt.clk, OpenDisk: func(path string) (disk.Disk, error) {
		if path != n.name+".img" {
			return nil, fmt.Errorf("torture: no disk %s", path)
		}
		return n.faulty, nil
	}, Quorum: tt.quorum}
	if tt.group != nil {
		tt.group.up(i)
		env.Quorum = tortureMember{g: tt.group, i: i}
	}
	var log *slog.Logger
	switch {
	case tt.logTo != nil:
		log = slog.New(slog.NewTextHandler(tt.logTo, nil)).With("node", n.name)
	case os.Getenv("TWINBLOCK_TORTURE_LOG") != "":
		log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", n.name)
	}
	r, err := NewResourceEnv(tt.cfg, n.name, log, nil, env)
	if err != nil {
		tt.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.Start(ctx)
	n.r, n.cancel = r, cancel
	if err := r.Do(ctx, fsm.AttachBegin{}); err != nil {
		tt.fail("bad", "attach %s: %v", n.name, err)
	}
	if err := r.Do(ctx, fsm.Connect{}); err != nil {
		tt.fail("bad", "connect %s: %v", n.name, err)
	}
}

// stop ends node i cleanly.
func (tt *torture) stop(i int) {
	n := tt.nodes[i]
	if n.r == nil {
		return
	}
	_ = n.r.Close()
	n.cancel()
	n.r = nil
}

func (tt *torture) do(i int, ev fsm.Event) error {
	return tt.nodes[i].r.Do(context.Background(), ev)
}

func (tt *torture) status(i int) status.Resource { return tt.nodes[i].r.Status() }

// settle advances the fake clock a tick at a time until ok holds or
// limit ticks passed; it reports whether ok held.
func (tt *torture) settle(limit int, ok func() bool) bool {
	for range limit {
		if ok() {
			return true
		}
		tt.clk.Advance(clock.Tick)
		time.Sleep(300 * time.Microsecond)
	}
	return ok()
}

// synced: both Connected, UpToDate/UpToDate (and, with a quorum group,
// neither held Outdated: the Primary cleared its peer).
func (tt *torture) synced() bool {
	for i := range tt.nodes {
		s := tt.status(i)
		if s.Conn != "Connected" || s.Disk != "UpToDate" || s.PeerDisk != "UpToDate" {
			return false
		}
	}
	return tt.group == nil || !tt.group.outdated()
}

// quiet: no node in a transient connection state (a handshake, a
// resync, a verify).
func (tt *torture) quiet() bool {
	for i := range tt.nodes {
		switch tt.status(i).Conn {
		case "Connected", "StandAlone", "WFConnection":
		default:
			return false
		}
	}
	return true
}

func (tt *torture) episode() (ok bool) {
	defer func() {
		for i := range tt.nodes {
			tt.stop(i)
		}
	}()
	tt.logf("seed %d", tt.seed)
	tt.start(0)
	tt.start(1)
	if !tt.settle(200, tt.synced) {
		tt.fail("bad", "the pair did not connect: %+v / %+v", tt.status(0), tt.status(1))
		return false
	}
	if err := tt.do(0, fsm.Promote{}); err != nil {
		tt.fail("bad", "promote a: %v", err)
		return false
	}
	tt.primary = 0
	for step := 0; step < *tortureSteps && !tt.failed; step++ {
		tt.st.mu.Lock()
		tt.st.steps++
		tt.st.mu.Unlock()
		tt.step()
		if !tt.failed {
			tt.check()
		}
	}
	if !tt.failed {
		// The end: heal everything; the pair must come back in sync,
		// with equal data holding every acknowledged write.
		tt.net.Heal("127.0.0.1", "127.0.0.2")
		tt.heal()
		if !tt.settle(1500, tt.synced) && tt.primary >= 0 && (tt.status(0).SplitBrain || tt.status(1).SplitBrain) {
			// A split brain (a Primary that crashed after it had taken a
			// new generation, while the peer was promoted): resolved as
			// an administrator does, the Secondary discarding its data.
			v := 1 - tt.primary
			tt.st.fault("split-brain")
			tt.logf("split brain: %s | %s; %s connects with --discard-my-data", line(tt.status(0)), line(tt.status(1)), tt.nodes[v].name)
			_ = tt.do(v, fsm.Disconnect{})
			if err := tt.do(v, fsm.Connect{DiscardMyData: true}); err != nil {
				tt.logf("connect --discard-my-data %s: %v", tt.nodes[v].name, err)
			}
			if tt.status(tt.primary).Conn == "StandAlone" {
				_ = tt.do(tt.primary, fsm.Connect{})
			}
		}
		if !tt.synced() && !tt.settle(1500, tt.synced) {
			tt.fail("bad", "no resync to UpToDate/UpToDate after healing: %s / %s", line(tt.status(0)), line(tt.status(1)))
		}
		if !tt.failed && tt.primary < 0 {
			// Nobody was Primary: a promotion must find every
			// acknowledged write.
			if err := tt.do(0, fsm.Promote{}); err != nil {
				tt.fail("bad", "promote a at the end (%s): %v", line(tt.status(0)), err)
			}
			tt.primary = 0
		}
		tt.check()
	}
	return !tt.failed
}

func line(s status.Resource) string {
	return fmt.Sprintf("%s %s/%s %s/%s oos:%d", s.Conn, s.Role, s.PeerRole, s.Disk, s.PeerDisk, s.OutOfSync>>10)
}

// heal brings both nodes back to attached and connecting.
func (tt *torture) heal() {
	for i, n := range tt.nodes {
		n.faulty.SetInjector(nil)
		s := tt.status(i)
		if s.Disk == "Failed" {
			tt.settle(50, func() bool { return tt.status(i).Disk != "Failed" })
		}
		if tt.status(i).Disk == "Diskless" {
			if err := tt.do(i, fsm.AttachBegin{}); err != nil {
				tt.logf("re-attach %s: %v", n.name, err)
			}
		}
		if tt.status(i).Conn == "StandAlone" {
			if err := tt.do(i, fsm.Connect{}); err != nil {
				tt.logf("connect %s: %v", n.name, err)
			}
		}
	}
}

// step runs one random step.
func (tt *torture) step() {
	if tt.primary < 0 {
		tt.restorePrimary()
	}
	if tt.group != nil && tt.rng.IntN(100) < 15 {
		tt.quorumFault()
		return
	}
	switch x := tt.rng.IntN(100); {
	case x < 55:
		tt.batch()
	case x < 59:
		tt.st.fault("cut")
		tt.logf("cut the link")
		tt.net.Cut("127.0.0.1", "127.0.0.2")
		tt.batch()
		tt.settle(300, tt.synced)
	case x < 63:
		// The link cut, or the Secondary's power lost, while the
		// Primary's requests are in flight.
		k := tt.rng.IntN(3)
		switch i := 1 - tt.primary; {
		case tt.primary >= 0 && k == 0 && tt.status(tt.primary).Disk == "UpToDate":
			tt.st.fault("secondary-power-loss-mid-batch")
			tt.batchWith(func() { tt.powerLoss(i) })
			tt.start(i)
		case tt.primary >= 0 && k == 1:
			tt.primaryPowerLossMidBatch()
		default:
			tt.st.fault("cut-mid-batch")
			tt.batchWith(func() {
				tt.logf("cut the link (mid-batch)")
				tt.net.Cut("127.0.0.1", "127.0.0.2")
			})
		}
		tt.settle(600, tt.synced)
	case x < 68:
		tt.st.fault("partition")
		tt.logf("partition")
		tt.net.Partition("127.0.0.1", "127.0.0.2")
		tt.batch()
		tt.settle(80, func() bool { return tt.primary < 0 || tt.status(tt.primary).Conn != "Connected" })
		tt.batch()
		tt.net.Heal("127.0.0.1", "127.0.0.2")
		tt.logf("heal")
		tt.settle(600, tt.synced)
	case x < 78:
		tt.crash(tt.rng.IntN(2))
	case x < 84:
		tt.diskError(tt.rng.IntN(2))
	case x < 89:
		tt.switchover()
	case x < 93:
		i := tt.rng.IntN(2)
		tt.st.fault("disconnect")
		tt.logf("disconnect %s", tt.nodes[i].name)
		_ = tt.do(i, fsm.Disconnect{})
		tt.batch()
		tt.logf("connect %s", tt.nodes[i].name)
		_ = tt.do(i, fsm.Connect{})
		tt.settle(300, tt.synced)
	case x < 97:
		if tt.primary < 0 {
			return
		}
		i := 1 - tt.primary
		tt.st.fault("invalidate")
		err := tt.do(i, fsm.Invalidate{})
		tt.logf("invalidate %s: %v", tt.nodes[i].name, err)
		tt.batch()
		tt.settle(1200, tt.synced)
	default:
		if tt.primary < 0 {
			return
		}
		tt.st.fault("verify")
		err := tt.do(tt.primary, fsm.StartVerify{})
		tt.logf("verify on %s: %v", tt.nodes[tt.primary].name, err)
		tt.settle(1200, tt.quiet)
	}
}

// restorePrimary: no node is Primary (a restart that did not resync in
// time): as an administrator would, once the pair is back in sync,
// promote one of them (a node alone may hold UpToDate-looking data that
// its peer went on without: DRBD, too, leaves that to fencing). If the
// pair does not sync, the step runs without a Primary (the admin
// actions that need one are skipped).
func (tt *torture) restorePrimary() {
	tt.heal()
	if !tt.settle(600, tt.synced) {
		return
	}
	for i := range tt.nodes {
		if err := tt.do(i, fsm.Promote{}); err != nil {
			tt.logf("promote %s (%s): %v", tt.nodes[i].name, line(tt.status(i)), err)
			continue
		}
		tt.primary = i
		tt.logf("%s promoted (there was no Primary)", tt.nodes[i].name)
		tt.checkReads("lost")
		return
	}
}

// ticking runs wait while time goes on: a peer that stops answering is
// dropped by the state machine's timeouts (ko-count, ping-timeout).
func (tt *torture) ticking(wait func()) {
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	for {
		select {
		case <-done:
			return
		case <-time.After(2 * time.Millisecond):
			tt.clk.Advance(clock.Tick)
		}
	}
}

// clientOp is one client request.
type clientOp struct {
	kind   string // write, fua, trim, zeroes, flush
	off, n int64
	tag    uint64
	err    error
	late   bool // completed after the Primary lost power: never answered
	// viaPeer: acknowledged by a Diskless Primary through its peer
	// alone; it survives the Primary's power loss whether flushed or
	// not (not the peer's, unless flushed).
	viaPeer bool
}

// errNeverAnswered: the request completed after its Primary lost power.
var errNeverAnswered = errors.New("never answered: the Primary lost power")

var tortureSizes = []int64{4096, 8192, 65536, 1<<20 - 4096, 1 << 20, 1<<20 + 4096, 1280 << 10, 3 << 20, 32 << 20}

// batch runs 1..4 concurrent requests on disjoint ranges (and at most
// one FLUSH) through the Primary's device, then updates the model with
// what was acknowledged; a FLUSH runs after the others.
func (tt *torture) batch() { tt.batchWith(nil) }

// batchWith runs a batch with mid, if not nil, started at a random
// moment while its requests are in flight (a fault that strikes during
// I/O, not between requests).
func (tt *torture) batchWith(mid func()) {
	if tt.primary < 0 {
		return
	}
	var ops []*clientOp
	var used [][2]int64
	for range 1 + tt.rng.IntN(4) {
		o := &clientOp{}
		switch x := tt.rng.IntN(100); {
		case x < 60:
			o.kind = "write"
		case x < 72:
			o.kind = "fua"
		case x < 80:
			o.kind = "trim"
		case x < 88:
			o.kind = "zeroes"
		default:
			o.kind = "flush"
		}
		if o.kind == "flush" && slices.ContainsFunc(ops, func(p *clientOp) bool { return p.kind == "flush" }) {
			// One FLUSH a batch: it runs after the others (a second one
			// was logged as acknowledged without ever running, and the
			// model took its blocks as durable: seed 1166434383492643100).
			continue
		}
		if o.kind != "flush" {
			var n int64
			switch x := tt.rng.IntN(100); {
			case x < 2:
				n = 32 << 20
			case x < 30:
				n = tortureSizes[tt.rng.IntN(len(tortureSizes)-1)]
			default:
				n = int64(1+tt.rng.IntN(16)) * tBlock
			}
			// A few hot spots, so that writes overwrite each other.
			blocks := tt.dataSize / tBlock
			first := int64(tt.rng.IntN(int(blocks)))
			if tt.rng.IntN(2) == 0 {
				first = int64(tt.rng.IntN(64))
			}
			o.off = min(first*tBlock, tt.dataSize-n)
			o.n = n
			overlap := false
			for _, u := range used {
				if o.off < u[1] && u[0] < o.off+o.n {
					overlap = true
				}
			}
			if overlap {
				continue
			}
			used = append(used, [2]int64{o.off, o.off + o.n})
			if o.kind == "write" || o.kind == "fua" {
				tt.tag++
				o.tag = tt.tag<<16 | tt.seed&0xffff | 1<<63
			}
		}
		ops = append(ops, o)
	}
	dev := tt.nodes[tt.primary].r.dev
	var wg sync.WaitGroup
	var flush *clientOp
	for _, o := range ops {
		if o.kind == "flush" {
			flush = o
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			losses := tt.powerLosses.Load()
			switch o.kind {
			case "write", "fua":
				o.err = dev.WriteAt(content(o.tag, o.off, o.n), o.off, o.kind == "fua")
			case "trim":
				o.err = dev.Trim(o.off, o.n, false)
			case "zeroes":
				o.err = dev.WriteZeroes(o.off, o.n, true, false)
			}
			o.late = tt.frozen.Load()
			if o.err == nil && !o.late {
				// A Primary without a disk of its own acknowledged it
				// through its peer alone: it lives on the peer, which a
				// power loss of the Primary does not touch.
				if s := tt.status(tt.primary); s.Disk == "Diskless" && s.Conn == "Connected" && s.PeerDisk == "UpToDate" {
					o.viaPeer = true
				}
			}
			if o.err == nil && !o.late && (o.kind == "write" || o.kind == "fua") {
				tt.checkAck(o, losses)
			}
		}()
	}
	// Time goes on while requests are in flight: a peer that stops
	// answering is dropped by the state machine's timeouts (ko-count).
	if mid != nil {
		delay := time.Duration(tt.rng.IntN(1500)) * time.Microsecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(delay)
			mid()
		}()
	}
	tt.ticking(wg.Wait)
	if flush != nil {
		// After the others: a FLUSH covers what was acknowledged before
		// it was sent. The clock goes on meanwhile too: a partitioned
		// peer never answers its Barrier (finding 4 was a frozen clock).
		tt.ticking(func() { flush.err = dev.Flush() })
		flush.late = tt.frozen.Load()
	}
	for _, o := range ops {
		if o.late {
			tt.logf("  %s %d+%d tag %x: %v, after the power loss (unknown)", o.kind, o.off, o.n, o.tag, o.err)
			if o.err == nil {
				o.err = errNeverAnswered
			}
		} else {
			tt.logf("  %s %d+%d tag %x: %v", o.kind, o.off, o.n, o.tag, o.err)
		}
		tt.st.mu.Lock()
		if o.err == nil {
			tt.st.acked++
		} else {
			tt.st.failed++
		}
		tt.st.mu.Unlock()
		if o.kind == "flush" {
			if o.err == nil {
				for _, m := range tt.model {
					m.durable = slices.Clone(m.cands)
				}
			}
			continue
		}
		for b := o.off / tBlock; b < (o.off+o.n)/tBlock; b++ {
			m := tt.block(b)
			switch {
			case o.err != nil:
				m.cands = appendNew(m.cands, o.tag)
				m.durable = appendNew(m.durable, o.tag)
			case o.kind == "fua":
				m.cands, m.durable = []uint64{o.tag}, []uint64{o.tag}
				m.viaPeer = o.viaPeer
			default:
				m.cands = []uint64{o.tag}
				m.durable = appendNew(m.durable, o.tag)
				m.viaPeer = o.viaPeer
			}
		}
	}
}

// disk returns node n's disk; a mid-batch power loss replaces it from
// another goroutine (setDisk).
func (tt *torture) disk(n *tnode) *disk.Crash {
	tt.diskMu.Lock()
	defer tt.diskMu.Unlock()
	return n.backing
}

func (tt *torture) setDisk(n *tnode, d *disk.Crash) {
	tt.diskMu.Lock()
	n.backing = d
	tt.diskMu.Unlock()
}

// checkAck checks the honest status at the moment a write is
// acknowledged: if the Primary's published status then says Connected
// with the peer's disk UpToDate, the peer's disk holds the write (protocol
// C applied it before the ack; a write the peer did not take is
// acknowledged only after the status left Connected). Batches write
// disjoint ranges, so nothing else changes that range meanwhile.
//
// losses is the count of power losses when the write was sent: a peer
// that lost power since held the write in a cache it may have lost, and
// its disk is a crash clone now; the check is skipped.
func (tt *torture) checkAck(o *clientOp, losses uint64) {
	p := tt.primary
	s := tt.status(p)
	if s.Conn != "Connected" || s.PeerDisk != "UpToDate" {
		return
	}
	peer := tt.nodes[1-p]
	got := make([]byte, o.n)
	if err := tt.disk(peer).ReadAt(got, o.off); err != nil || tt.powerLosses.Load() != losses {
		return
	}
	if want := content(o.tag, o.off, o.n); string(got) != string(want) {
		for b := int64(0); b < o.n/tBlock; b++ {
			if string(got[b*tBlock:(b+1)*tBlock]) != string(want[b*tBlock:(b+1)*tBlock]) {
				tt.fail("dishonest", "write %d+%d tag %x acknowledged while %s said %s, and block %d of the peer %s holds tag %x",
					o.off, o.n, o.tag, tt.nodes[p].name, line(s), o.off/tBlock+b, peer.name, binary.LittleEndian.Uint64(got[b*tBlock:]))
				return
			}
		}
	}
}

func appendNew(s []uint64, v uint64) []uint64 {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func (tt *torture) block(b int64) *blockModel {
	m := tt.model[b]
	if m == nil {
		m = &blockModel{cands: []uint64{0}, durable: []uint64{0}}
		tt.model[b] = m
	}
	return m
}

// content is what a write of tag puts at [off, off+n): every sector
// names its tag, its block and its index, so a read tells which write
// it came from and whether it is torn or foreign.
func content(tag uint64, off, n int64) []byte {
	p := make([]byte, n)
	if tag == 0 {
		return p
	}
	for s := int64(0); s < n; s += tSector {
		sec := p[s : s+tSector]
		fillSector(sec, tag, (off+s)/tBlock, ((off+s)%tBlock)/tSector)
	}
	return p
}

func fillSector(sec []byte, tag uint64, block, idx int64) {
	binary.LittleEndian.PutUint64(sec[0:], tag)
	binary.LittleEndian.PutUint64(sec[8:], uint64(block))
	binary.LittleEndian.PutUint64(sec[16:], uint64(idx))
	x := tag ^ uint64(block)*0x9e3779b97f4a7c15 ^ uint64(idx)
	for i := 24; i < len(sec); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(sec[i:], x)
	}
}

// allowed reports whether the 4 KiB p (block b) is made of sectors of
// the candidate tags.
func allowed(p []byte, b int64, cands []uint64) bool {
	want := make([]byte, tSector)
	for s := int64(0); s < tBlock/tSector; s++ {
		sec := p[s*tSector : (s+1)*tSector]
		tag := binary.LittleEndian.Uint64(sec)
		if !slices.Contains(cands, tag) {
			return false
		}
		if tag == 0 {
			clear(want)
		} else {
			fillSector(want, tag, b, s)
		}
		if string(want) != string(sec) {
			return false
		}
	}
	return true
}

// crash is a power loss of node i: its connections reset, its disk
// keeps what was durable (and a random part of its volatile cache), and
// it restarts. If it was the Primary, the other node is promoted when
// the Primary's status promised that it holds every acknowledged write
// (Connected, UpToDate/UpToDate); otherwise the crashed node restarts
// as the Primary and the model keeps only what was durable on it.
func (tt *torture) crash(i int) {
	tt.st.fault("crash")
	n := tt.nodes[i]
	before := tt.status(i)
	tt.logf("power loss of %s (%s)", n.name, line(before))
	keep := tt.rng.Float64()
	n.backing = tt.cutPower(i, rand.New(rand.NewPCG(tt.seed, uint64(len(tt.trace)))), keep)
	tt.restartAfterCrash(i, before)
}

// restartAfterCrash goes on after node i lost power, its status having
// been before: the failover or the restart, and the model's update.
func (tt *torture) restartAfterCrash(i int, before status.Resource) {
	n := tt.nodes[i]
	wasPrimary := i == tt.primary
	// The Primary's status promised that the peer holds every
	// acknowledged write: Connected with UpToDate/UpToDate, or a
	// Primary whose own disk was not UpToDate (its writes went through
	// an UpToDate peer, or failed).
	failover := before.Conn == "Connected" && before.PeerDisk == "UpToDate"
	if !wasPrimary && tt.primary >= 0 && tt.status(tt.primary).Disk != "UpToDate" {
		// The Primary's own disk is not UpToDate: the crashed node held
		// the only good copy, and power loss takes what was not flushed
		// (as NBD allows).
		for _, m := range tt.model {
			m.cands = slices.Clone(m.durable)
		}
	}
	if wasPrimary && !failover && before.Disk != "UpToDate" {
		// A Primary without UpToDate data of its own served through
		// its peer: the writes it acknowledged so are there (viaPeer:
		// durable in the model), not on its own disk, which no restart
		// can know is behind. It is not promoted alone: the pair
		// resyncs, then it is promoted again (as an administrator
		// would). What it acknowledged earlier on its own disk alone,
		// and did not flush, may be gone with that disk's cache (seeds
		// 7083408667347918681 and 15438716915923466379).
		for _, m := range tt.model {
			if !m.viaPeer {
				m.cands = slices.Clone(m.durable)
			}
		}
		tt.primary = -1
		tt.start(i)
		if !tt.settle(1500, tt.synced) {
			tt.logf("the restarted %s and its peer did not resync: no Primary (%s | %s)", n.name, line(tt.status(0)), line(tt.status(1)))
			return
		}
		if err := tt.do(i, fsm.Promote{}); err != nil {
			tt.fail("bad", "promote the resynced %s (%s): %v", n.name, line(tt.status(i)), err)
			return
		}
		tt.primary = i
		tt.checkReads("lost")
		return
	}
	if wasPrimary {
		tt.primary = -1
		if failover {
			o := 1 - i
			// Until the survivor saw the link go: a verify or resync
			// state is connected too (seed 962354945543338358: VerifyT).
			tt.settle(100, func() bool { return !linkUp(tt.status(o)) })
			if err := tt.do(o, fsm.Promote{}); err != nil {
				kind := "lost"
				if errors.Is(err, quorum.ErrOutdated) {
					// The group still holds the peer Outdated (the clear
					// after its resync had not committed): it refuses
					// a node it cannot vouch for, safe but not live.
					kind = "bad"
				}
				tt.fail(kind, "failover: promote %s (%s): %v", tt.nodes[o].name, line(tt.status(o)), err)
				return
			}
			tt.primary = o
			tt.logf("failover to %s", tt.nodes[o].name)
			tt.checkReads("lost")
		} else {
			// The crashed Primary was the only holder of what it
			// acknowledged since it lost the peer: what was not
			// flushed may be gone.
			for _, m := range tt.model {
				m.cands = slices.Clone(m.durable)
			}
		}
	}
	tt.start(i)
	if wasPrimary && tt.primary < 0 {
		tt.settle(200, func() bool { return tt.status(i).Disk == "UpToDate" })
		if err := tt.do(i, fsm.Promote{}); err != nil {
			tt.fail("bad", "promote the restarted %s (%s): %v", n.name, line(tt.status(i)), err)
			return
		}
		tt.primary = i
	}
	tt.settle(600, tt.synced)
}

// powerLoss cuts node i's power: its connections reset, its disk keeps
// what was durable and part of its volatile cache, and it is stopped
// (start brings it back). Only for a node whose loss costs no
// acknowledged write: the Secondary of a Primary with an UpToDate disk.
func (tt *torture) powerLoss(i int) {
	n := tt.nodes[i]
	tt.logf("power loss of %s (mid-batch; %s)", n.name, line(tt.status(i)))
	tt.traceMu.Lock()
	seq := uint64(len(tt.trace))
	tt.traceMu.Unlock()
	tt.setDisk(n, tt.cutPower(i, rand.New(rand.NewPCG(tt.seed, seq)), 0.5))
}

// cutPower is the moment node i loses power (freeze), then what its
// disk keeps (a crash clone: the durable data and the part keep of its
// volatile cache), and the end of the node.
func (tt *torture) cutPower(i int, rng *rand.Rand, keep float64) *disk.Crash {
	tt.freeze(i)
	clone := tt.disk(tt.nodes[i]).CrashClone(rng, keep)
	tt.bury(i)
	return clone
}

// freeze makes node i a dead machine while it still runs: its disk
// fails every request, its connections are reset, its packets dropped
// and no new connection reaches it. Without it, a node being stopped
// reconnected and answered its peer's Barriers from the disk the crash
// clone had already left behind.
func (tt *torture) freeze(i int) {
	tt.powerLosses.Add(1)
	n, o := tt.nodes[i], tt.nodes[1-i]
	tt.net.Partition(n.host, o.host)
	n.faulty.SetInjector(func(disk.Op) error { return disk.ErrInjected })
	tt.net.Isolate(n.host)
	if tt.group != nil {
		tt.group.down(i) // its member is gone with it (start brings it back)
	}
}

// bury stops the frozen node i and lifts its partition.
func (tt *torture) bury(i int) {
	tt.stop(i)
	tt.net.Heal(tt.nodes[i].host, tt.nodes[1-i].host)
}

// primaryPowerLossMidBatch: the Primary loses power while its requests
// are in flight. A request that completed after that moment was never
// answered (the client's connection died with the node): its outcome
// is unknown, as for a failed one. What was acknowledged before must
// survive as for a crash between requests (restartAfterCrash); the
// status that decides the failover is the one at the moment of the
// power loss.
func (tt *torture) primaryPowerLossMidBatch() {
	tt.st.fault("primary-power-loss-mid-batch")
	i := tt.primary
	n := tt.nodes[i]
	keep := tt.rng.Float64()
	// The failover decision needs the status as it was at the moment
	// of the loss: the status read after the freeze may already show
	// its effects (the disk failing, the link gone), the one read
	// before the batch not what happened during it. A failover takes
	// both saying Connected with the peer's disk UpToDate; the disk
	// state is the one from before.
	before := tt.status(i)
	tt.batchWith(func() {
		tt.freeze(i)
		tt.frozen.Store(true)
		if at := tt.status(i); at.Conn != "Connected" || at.PeerDisk != "UpToDate" {
			before.Conn, before.PeerDisk = at.Conn, at.PeerDisk
		}
		tt.traceMu.Lock()
		seq := uint64(len(tt.trace))
		tt.traceMu.Unlock()
		tt.logf("power loss of %s (mid-batch; %s)", n.name, line(before))
		tt.setDisk(n, tt.disk(n).CrashClone(rand.New(rand.NewPCG(tt.seed, seq)), keep))
	})
	tt.frozen.Store(false)
	tt.bury(i)
	tt.restartAfterCrash(i, before)
}

// diskError makes node i's disk fail half its writes and flushes for
// one batch, then heals it: the node detaches (on-io-error detach) and
// is attached again, to be resynced.
func (tt *torture) diskError(i int) {
	tt.st.fault("disk-error")
	n := tt.nodes[i]
	tt.logf("disk of %s fails", n.name)
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(tt.seed, uint64(len(tt.trace))))
	n.faulty.SetInjector(func(o disk.Op) error {
		if o.Kind == disk.OpRead {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if rng.IntN(2) == 0 {
			return disk.ErrInjected
		}
		return nil
	})
	tt.batch()
	tt.batch()
	n.faulty.SetInjector(nil)
	tt.settle(50, func() bool { d := tt.status(i).Disk; return d == "Diskless" || d == "UpToDate" })
	tt.logf("disk of %s healed (%s)", n.name, line(tt.status(i)))
	tt.heal()
	tt.settle(1200, tt.synced)
}

// switchover demotes the Primary and promotes the other node, when the
// pair is in sync.
func (tt *torture) switchover() {
	if tt.primary < 0 || !tt.synced() {
		return
	}
	tt.st.fault("switchover")
	o := 1 - tt.primary
	// The peer must have heard of the promotion first: otherwise its
	// "Secondary" below is the stale view from before it, and the
	// Primary State still on its way makes it refuse the promotion (or
	// the connection: finding 8), as an administrator too fast would see.
	tt.settle(500, func() bool { return tt.status(o).PeerRole == "Primary" })
	if err := tt.do(tt.primary, fsm.Demote{}); err != nil {
		tt.fail("bad", "demote %s: %v", tt.nodes[tt.primary].name, err)
		return
	}
	tt.primary = -1
	// The peer learns of the demotion from its State message.
	tt.settle(500, func() bool { return tt.status(o).PeerRole != "Primary" })
	if err := tt.do(o, fsm.Promote{}); err != nil {
		tt.fail("bad", "promote %s: %v", tt.nodes[o].name, err)
		return
	}
	tt.logf("switchover to %s", tt.nodes[o].name)
	tt.primary = o
	tt.checkReads("lost")
}

// checkReads reads every block of the model through the Primary, in
// runs of up to 1 MiB of consecutive blocks (reads of many sizes, and
// far fewer requests than one per block).
func (tt *torture) checkReads(kind string) {
	if tt.primary < 0 {
		return
	}
	dev := tt.nodes[tt.primary].r.dev
	blocks := tt.modelBlocks()
	buf := make([]byte, maxRun*tBlock)
	// Reads may go to the peer, which may not answer: time goes on.
	tt.ticking(func() {
		for _, r := range runs(blocks) {
			i, j := r[0], r[1]
			p := buf[:int64(j-i)*tBlock]
			err := dev.ReadAt(p, blocks[i]*tBlock)
			for try := 0; err != nil && try < 3; try++ {
				// A read through the peer fails when the link ends under
				// it (a ping timeout while time goes on): no data is
				// lost if the next read finds UpToDate data, or the
				// status, once it caught up, says there is none.
				time.Sleep(2 * time.Millisecond)
				err = dev.ReadAt(p, blocks[i]*tBlock)
			}
			if err != nil {
				if s := tt.status(tt.primary); s.Disk != "UpToDate" && s.PeerDisk != "UpToDate" {
					continue // no UpToDate data reachable: I/O errors are right
				}
				tt.fail(kind, "read blocks %d..%d on %s: %v", blocks[i], blocks[j-1], tt.nodes[tt.primary].name, err)
				return
			}
			for k := i; k < j; k++ {
				b := blocks[k]
				blk := p[int64(k-i)*tBlock : int64(k-i+1)*tBlock]
				if m := tt.model[b]; !allowed(blk, b, m.cands) {
					tt.fail(kind, "block %d on the Primary %s holds tag %x, want one of %x", b, tt.nodes[tt.primary].name, binary.LittleEndian.Uint64(blk), m.cands)
					return
				}
			}
		}
	})
}

// maxRun is the most blocks the checks read at once (1 MiB).
const maxRun = 256

// modelBlocks returns the blocks of the model, in order.
func (tt *torture) modelBlocks() []int64 {
	blocks := make([]int64, 0, len(tt.model))
	for b := range tt.model {
		blocks = append(blocks, b)
	}
	slices.Sort(blocks)
	return blocks
}

// runs splits sorted blocks into index ranges [i, j) of consecutive
// blocks, maxRun at most each.
func runs(blocks []int64) [][2]int {
	var out [][2]int
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && j-i < maxRun && blocks[j] == blocks[j-1]+1 {
			j++
		}
		out = append(out, [2]int{i, j})
		i = j
	}
	return out
}

// check runs the invariants after a step.
func (tt *torture) check() {
	tt.checkReads("lost")
	if tt.failed {
		return
	}
	sa, sb := tt.status(0), tt.status(1)
	tt.logf("  a: %s | b: %s", line(sa), line(sb))
	inSync := func(s status.Resource) bool {
		return s.Conn == "Connected" && s.Disk == "UpToDate" && s.PeerDisk == "UpToDate"
	}
	for _, s := range []status.Resource{sa, sb} {
		if inSync(s) && s.OutOfSync > 0 {
			tt.fail("dishonest", "%s shows Connected UpToDate/UpToDate with oos %d", s.Self, s.OutOfSync>>10)
			return
		}
	}
	if !tt.quiet() {
		return
	}
	// Compare the data areas (what the disks hold, caches included) and
	// the bitmaps over the blocks written.
	var differ []int64
	blocks := tt.modelBlocks()
	ra, rb := make([]byte, maxRun*tBlock), make([]byte, maxRun*tBlock)
	for _, r := range runs(blocks) {
		n := int64(r[1]-r[0]) * tBlock
		if err := tt.nodes[0].backing.ReadAt(ra[:n], blocks[r[0]]*tBlock); err != nil {
			tt.t.Fatal(err)
		}
		if err := tt.nodes[1].backing.ReadAt(rb[:n], blocks[r[0]]*tBlock); err != nil {
			tt.t.Fatal(err)
		}
		for k := r[0]; k < r[1]; k++ {
			blk := blocks[k]
			a, b := ra[int64(k-r[0])*tBlock:int64(k-r[0]+1)*tBlock], rb[int64(k-r[0])*tBlock:int64(k-r[0]+1)*tBlock]
			if string(a) == string(b) {
				continue
			}
			if inSync(sa) && inSync(sb) {
				tt.fail("divergent", "block %d differs (a: tag %x, b: tag %x) while both say Connected UpToDate/UpToDate (now %s | %s)",
					blk, binary.LittleEndian.Uint64(a), binary.LittleEndian.Uint64(b), line(tt.status(0)), line(tt.status(1)))
				return
			}
			differ = append(differ, blk)
		}
	}
	if len(differ) == 0 || sa.Disk == "Diskless" || sb.Disk == "Diskless" || sa.Disk == "Inconsistent" || sb.Disk == "Inconsistent" {
		return // a node without consistent data resyncs all it lacks
	}
	marked := map[int64]bool{}
	for _, n := range tt.nodes {
		if md := n.r.curMD.Load(); md != nil {
			md.WithBitmap(func(bm *bitmap.Bitmap) {
				for _, blk := range differ {
					if first, last, ok := bm.BlocksOf(blk*tBlock, tBlock); ok {
						for i := first; i <= last; i++ {
							marked[blk] = marked[blk] || bm.Test(i)
						}
					}
				}
			})
		}
	}
	for _, blk := range differ {
		if !marked[blk] {
			tt.fail("divergent", "block %d differs between the nodes and no bitmap marks it (%s | %s)", blk, line(sa), line(sb))
			return
		}
	}
}

// linkUp reports whether s is one of the connected states (Connected,
// and the sync, verify and bitmap-exchange states that run on the link).
func linkUp(s status.Resource) bool {
	connection, _ := status.DRBD9Conn(s.Conn)
	return connection == "Connected"
}
