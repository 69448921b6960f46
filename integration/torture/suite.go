package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twinblock/twinblock/internal/harness"
	"github.com/twinblock/twinblock/nbd/client"
)

// Config configures a run.
type Config struct {
	Bin, Dir string
	Seed     uint64
	// Duration: no episode starts after it (0: no limit). Episodes: at
	// most this many (0: no limit). One of them must be set.
	Duration time.Duration
	Episodes int
	Kinds    []Kind
	DiskSize int64
	Workers  int
	// Faulty puts the disks on FaultyDisks (nbdkit + nbdfuse); without
	// it the disk-fail kinds do not run.
	Faulty     bool
	ResyncRate string
	// MaxOutage bounds a SIGSTOP and a black hole (a cut: two thirds).
	MaxOutage time.Duration
	// StrictService makes a stretch without service longer than allowed
	// (see slowAllowance) a finding instead of a warning.
	StrictService bool
	// StuckAfter: a request in flight this long, or a pair not healthy
	// this long after the heal began, is a finding.
	StuckAfter time.Duration
	Logf       func(string, ...any)
}

// Finding is a broken promise: a lost, torn or foreign block, a
// divergence, a dishonest status, a stuck pair, a refused operation.
type Finding struct {
	Episode int
	Kind    string // the episode's fault kind
	Class   string
	Detail  string
}

func (f Finding) String() string {
	return fmt.Sprintf("episode %d (%s): %s: %s", f.Episode, f.Kind, f.Class, f.Detail)
}

// KindStats are one fault kind's episodes.
type KindStats struct {
	Episodes int
	Failed   uint64        // requests with an error reply (EIO from a Primary without UpToDate data, …)
	Unknown  uint64        // requests without a reply (the Primary killed)
	Gap      time.Duration // longest time without service
	Findings int
}

// Report is what a run did and found.
type Report struct {
	Seed       uint64
	Episodes   int
	Elapsed    time.Duration
	ByKind     [numKinds]KindStats
	Writer     WriterStats
	Failovers  int
	ResyncHits int // resync-kill episodes whose kill landed in a resync
	// Blocks and episodes that broke a promise.
	Lost, Torn, Foreign, Divergent int
	Dishonest                      int // episodes: healthy status, different disks
	Stuck                          int
	Slow                           []string // episodes without service longer than allowed (warnings)
	BlocksChecked                  uint64
	Gap                            time.Duration
	GapWhere                       string
	Findings                       []Finding
	DiskSize                       int64
	Faulty                         bool
}

// Failed reports whether any promise was broken.
func (r *Report) Failed() bool { return len(r.Findings) > 0 }

// Suite is one run: the cluster, the ledger, the writer and the nemesis.
type Suite struct {
	cfg     Config
	cl      *harness.Cluster
	l       *Ledger
	w       *Writer
	rng     *rand.Rand
	primary string
	size    int64
	killed  map[string]bool
	start   time.Time
	// allow: the longest time without service this episode may show
	// before a warning (0: not checked, the Primary was killed).
	allow time.Duration

	mu   sync.Mutex // guards rep.Findings and the counts the writer's callback touches
	rep  Report
	ep   int
	kind Kind
}

func (s *Suite) logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	ep, kind := s.ep, s.kind
	s.mu.Unlock()
	prefix := fmt.Sprintf("[%7.3fs] ", time.Since(s.start).Seconds())
	if ep > 0 {
		prefix += fmt.Sprintf("ep %d %s: ", ep, kind)
	}
	s.cfg.Logf("%s%s", prefix, msg)
}

func (s *Suite) finding(class, detail string) {
	s.mu.Lock()
	f := Finding{Episode: s.ep, Kind: s.kind.String(), Class: class, Detail: detail}
	s.rep.Findings = append(s.rep.Findings, f)
	if s.ep > 0 {
		s.rep.ByKind[s.kind].Findings++
	}
	if class == "stuck" {
		s.rep.Stuck++
	}
	s.mu.Unlock()
	s.logf("FINDING %s: %s", class, detail)
}

// verdicts records ledger verdicts as findings (at most 8 listed).
func (s *Suite) verdicts(where string, vs []Verdict) {
	var lost, torn, foreign int
	var lines []string
	for i, v := range vs {
		switch {
		case v.Lost():
			lost++
		case v.Kind == Torn:
			torn++
		default:
			foreign++
		}
		if i < 8 {
			lines = append(lines, "  "+v.String())
		}
	}
	s.mu.Lock()
	s.rep.Lost += lost
	s.rep.Torn += torn
	s.rep.Foreign += foreign
	s.mu.Unlock()
	class := "lost"
	if lost == 0 {
		class = "torn/foreign"
	}
	s.finding(class, fmt.Sprintf("%s: %d lost, %d torn, %d foreign blocks:\n%s", where, lost, torn, foreign, strings.Join(lines, "\n")))
}

// between returns a random duration in [lo, hi).
func (s *Suite) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

// sleep waits d while watching for requests stuck longer than StuckAfter.
func (s *Suite) sleep(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		time.Sleep(min(100*time.Millisecond, time.Until(end)))
		if age, what := s.w.Oldest(); age > s.cfg.StuckAfter {
			s.finding("stuck", "a request waits: "+what)
			return
		}
	}
}

// promote runs `primary r0` on n until it succeeds or within passes.
func (s *Suite) promote(n *harness.Node, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		out, err := n.TB(15*time.Second, "primary", "r0")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			st, _ := n.Status()
			return fmt.Errorf("%v: %s (%s)", err, out, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// slowAllowance is the time without service an episode may show while
// the Primary lives: the peer link's configured bound for dropping a
// silent peer (timeout 2 s + ping-timeout 0.5 s) with as much again for
// a loaded machine.
const slowAllowance = 5 * time.Second

// Run sets the pair up and runs episodes until the configured duration
// or count. The error is for a run that could not go on; the findings
// are in the report.
func Run(cfg Config) (*Report, error) {
	if cfg.Duration == 0 && cfg.Episodes == 0 {
		return nil, errors.New("torture: neither a duration nor an episode count")
	}
	if cfg.StuckAfter == 0 {
		cfg.StuckAfter = 90 * time.Second
	}
	if cfg.MaxOutage == 0 {
		cfg.MaxOutage = 6 * time.Second
	}
	s := &Suite{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x70727475)), killed: map[string]bool{}, start: time.Now()}
	s.rep.Seed, s.rep.DiskSize, s.rep.Faulty = cfg.Seed, cfg.DiskSize, cfg.Faulty
	var kinds []Kind
	for _, k := range cfg.Kinds {
		if k.needsFaultyDisk() && !cfg.Faulty {
			s.logf("%s skipped: the disks are not faulty disks", k)
			continue
		}
		kinds = append(kinds, k)
	}
	if len(kinds) == 0 {
		return nil, errors.New("torture: no fault kind to run")
	}
	// A fixed resync rate (c-plan-ahead 0), slow enough for a crash to
	// land inside a resync.
	conf := func(v harness.Vars) string {
		return harness.Config(v, "C", "torture", "ko-count 7;", "c-plan-ahead 0; resync-rate "+cfg.ResyncRate+";", "")
	}
	cl, err := harness.New(harness.Options{Dir: cfg.Dir, Bin: cfg.Bin, DiskSize: cfg.DiskSize, Faulty: cfg.Faulty,
		Proxy: true, Config: conf, Logf: s.logf})
	if err != nil {
		return nil, err
	}
	s.cl = cl
	defer cl.Close()
	if err := s.setup(); err != nil {
		return &s.rep, err
	}
	defer s.w.Close()

	var deck []Kind
	for ep := 1; ; ep++ {
		if cfg.Episodes > 0 && ep > cfg.Episodes {
			break
		}
		if cfg.Duration > 0 && time.Since(s.start) > cfg.Duration {
			break
		}
		if len(deck) == 0 { // every kind once per round, in a seeded order
			deck = append(deck, kinds...)
			s.rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		}
		k := deck[0]
		deck = deck[1:]
		if err := s.episode(ep, k); err != nil {
			s.rep.Elapsed = time.Since(s.start)
			return &s.rep, err
		}
	}
	s.mu.Lock()
	s.ep = 0
	s.mu.Unlock()
	_ = s.w.Pause(30 * time.Second)
	s.rep.Writer = s.w.Stats()
	s.rep.Elapsed = time.Since(s.start)
	return &s.rep, nil
}

// setup starts both daemons, promotes a with --force (the initial full
// sync) and starts the writer once the pair is healthy.
func (s *Suite) setup() error {
	for _, n := range []string{"a", "b"} {
		if err := s.cl.Nodes[n].StartUp(); err != nil {
			return err
		}
	}
	a := s.cl.Nodes["a"]
	if out, err := a.TB(30*time.Second, "primary", "--force", "r0"); err != nil {
		return fmt.Errorf("torture: primary --force on a: %v: %s", err, out)
	}
	s.primary = "a"
	if err := s.waitHealthy(120 * time.Second); err != nil {
		return fmt.Errorf("torture: the initial sync: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	cancel()
	if err != nil {
		return err
	}
	s.size = c.Size()
	_, _, maxPayload := c.BlockSizes()
	_ = c.Close()
	s.logf("pair healthy: export %d MiB (%d blocks), max payload %d MiB, disks %s", s.size>>20, s.size/BlockSize, maxPayload>>20,
		map[bool]string{true: "on nbdfuse + nbdkit's error filter", false: "plain files"}[s.cfg.Faulty])
	s.l = NewLedger(int(s.size/BlockSize), s.cfg.Seed^uint64(time.Now().UnixNano()))
	s.w = NewWriter(s.l, []WriterNode{{"a", a.NBD}, {"b", s.cl.Nodes["b"].NBD}}, s.cfg.Workers, s.cfg.Seed,
		func(where string, vs []Verdict) { s.verdicts(where, vs) })
	return nil
}

// waitHealthy waits until the Primary and its peer both show Connected
// UpToDate/UpToDate with nothing out of sync and the right roles. It
// gives up after within, or once neither status has changed for a
// quarter of within (a resync moves oos every second).
func (s *Suite) waitHealthy(within time.Duration) error {
	p := s.cl.Nodes[s.primary]
	q := s.cl.Peer(p)
	var sp, sq harness.Status
	var last string
	changed := time.Now()
	stalled := false
	err := harness.Until(within, func() bool {
		var e1, e2 error
		sp, e1 = p.Status()
		sq, e2 = q.Status()
		if e1 == nil && e2 == nil && sp.Healthy() && sq.Healthy() &&
			sp.Role == "Primary" && sp.PeerRole == "Secondary" && sq.Role == "Secondary" {
			return true
		}
		if now := sp.String() + sq.String(); now != last {
			last, changed = now, time.Now()
		} else if time.Since(changed) > within/4 {
			stalled = true
			return true
		}
		return false
	})
	if stalled {
		return fmt.Errorf("no progress for %v: %s %s; %s %s", within/4, p.Name, sp, q.Name, sq)
	}
	if err != nil {
		return fmt.Errorf("not healthy after %v: %s %s; %s %s", within, p.Name, sp, q.Name, sq)
	}
	return nil
}

// episode runs one fault, heals, and checks.
func (s *Suite) episode(ep int, k Kind) error {
	s.mu.Lock()
	s.ep, s.kind = ep, k
	s.mu.Unlock()
	s.rep.Episodes++
	s.rep.ByKind[k].Episodes++
	for n := range s.killed {
		s.killed[n] = false
	}
	for _, n := range s.cl.Nodes {
		n.SkipLog()
	}
	s.allow = slowAllowance
	s.logf("begins; Primary %s", s.primary)
	before := s.w.Stats()
	s.w.Resume()
	s.sleep(s.between(300*time.Millisecond, 1500*time.Millisecond))
	s.fault(k)
	s.heal()
	s.scanLogs()
	after := s.w.Stats()
	s.rep.ByKind[k].Failed += after.Failed - before.Failed
	s.rep.ByKind[k].Unknown += after.Unknown - before.Unknown
	gap, where := s.w.TakeGap()
	s.logf("longest time without service: %v (%s)", gap.Round(time.Millisecond), where)
	if gap > s.rep.ByKind[k].Gap {
		s.rep.ByKind[k].Gap = gap
	}
	if gap > s.rep.Gap {
		s.rep.Gap, s.rep.GapWhere = gap, fmt.Sprintf("episode %d, %s, %s", ep, k, where)
	}
	if s.allow > 0 && gap > s.allow {
		w := fmt.Sprintf("episode %d (%s): %v without service (allowed %v), %s", ep, k, gap.Round(time.Millisecond), s.allow, where)
		if s.cfg.StrictService {
			s.finding("no-service", w)
		} else {
			s.rep.Slow = append(s.rep.Slow, w)
			s.logf("WARNING %s", w)
		}
	}
	return s.verify()
}

// heal undoes whatever the fault left: a stopped or dead daemon, a
// broken link, a failing disk, no Primary; then waits for the pair to be
// healthy (the writer keeps writing through the resync).
func (s *Suite) heal() {
	s.cl.Proxy.Heal()
	for _, n := range s.cl.Nodes {
		if n.Stopped() {
			n.Cont()
		}
		if !n.Alive() {
			if !s.killed[n.Name] {
				s.finding("crash", fmt.Sprintf("daemon %s exited without being killed:\n%s", n.Name, n.LogTail(30)))
			}
			s.restart(n)
		}
		if n.Disk != nil && n.Disk.Failing() {
			s.repairDisk(n)
		}
	}
	p := s.cl.Nodes[s.primary]
	if st, err := p.Status(); err == nil && st.Role != "Primary" {
		if err := s.promote(p, 30*time.Second); err != nil {
			s.finding("refused", fmt.Sprintf("%s, the Primary before the episode, cannot be promoted again: %v", p.Name, err))
		}
	}
	t0 := time.Now()
	err := s.waitHealthy(s.cfg.StuckAfter)
	if err != nil && s.attachDiskless() {
		err = s.waitHealthy(s.cfg.StuckAfter)
	}
	if err != nil {
		s.finding("stuck", err.Error()+"\n"+s.tails())
		s.recover()
		return
	}
	s.logf("healthy again in %v", time.Since(t0).Round(time.Millisecond))
}

// attachDiskless does what an operator does about a node that dropped
// a disk which is not failing: attach it again. It reports whether it
// did.
func (s *Suite) attachDiskless() bool {
	did := false
	for _, name := range []string{"a", "b"} {
		n := s.cl.Nodes[name]
		if st, err := n.Status(); err == nil && st.Disk == "Diskless" && n.Disk != nil && !n.Disk.Failing() {
			s.logf("%s is Diskless with a good disk (%s): attach", n.Name, st)
			if out, err := n.TB(30*time.Second, "attach", "r0"); err != nil {
				s.finding("refused", fmt.Sprintf("attach on %s: %v: %s", n.Name, err, out))
			}
			did = true
		}
	}
	return did
}

// scanLogs reports what the daemons' logs say that they should not: a
// panic, or a disk failure the harness did not cause (repairDisk skips
// the lines of the failures it caused).
func (s *Suite) scanLogs() {
	for _, name := range []string{"a", "b"} {
		n := s.cl.Nodes[name]
		if lines := n.LogSince("panic:", "fatal error:", "DATA RACE"); len(lines) > 0 {
			s.finding("panic", fmt.Sprintf("%s's log: %s", n.Name, strings.Join(lines[:min(5, len(lines))], "\n")))
		}
		if lines := n.LogSince("local disk failed"); len(lines) > 0 {
			s.finding("spurious-detach", fmt.Sprintf("%s detached a disk that was not failing: %s", n.Name, strings.Join(lines[:min(3, len(lines))], "\n")))
		}
		n.SkipLog()
	}
}

func (s *Suite) tails() string {
	var b strings.Builder
	for _, n := range []string{"a", "b"} {
		fmt.Fprintf(&b, "--- %s's log (last lines):\n%s\n", n, s.cl.Nodes[n].LogTail(25))
	}
	return b.String()
}

// recover brings a stuck pair back by force: both daemons restarted, the
// Primary promoted, a split brain or an unhealthy Secondary resolved by
// discarding the Secondary's data. The next checks then tell what was
// lost.
func (s *Suite) recover() {
	s.logf("recovering: both daemons dumped (SIGQUIT) and restarted")
	_ = s.w.Pause(10 * time.Second)
	defer s.w.Resume()
	for _, n := range s.cl.Nodes {
		n.Cont()
		if n.Disk != nil {
			_ = n.Disk.Repair()
		}
		if n.Name == s.primary {
			s.allow = 0
		}
		n.Quit() // its goroutines to its log, for the diagnosis
		s.w.Killed(n.Name)
		s.killed[n.Name] = true
	}
	for _, n := range s.cl.Nodes {
		s.restart(n)
	}
	p := s.cl.Nodes[s.primary]
	q := s.cl.Peer(p)
	if err := s.promote(p, 20*time.Second); err != nil {
		s.logf("recovering: %s refuses primary (%v); --force", p.Name, err)
		if out, err := p.TB(30*time.Second, "primary", "--force", "r0"); err != nil {
			s.finding("stuck", fmt.Sprintf("recovery: primary --force on %s: %v: %s", p.Name, err, out))
		}
	}
	if s.waitHealthy(60*time.Second) == nil {
		return
	}
	s.logf("recovering: %s discards its data", q.Name)
	_, _ = q.TB(30*time.Second, "disconnect", "r0")
	_, _ = q.TB(30*time.Second, "connect", "--discard-my-data", "r0")
	_, _ = p.TB(30*time.Second, "connect", "r0")
	if s.waitHealthy(60*time.Second) == nil {
		return
	}
	_, _ = q.TB(30*time.Second, "invalidate", "r0")
	if err := s.waitHealthy(120 * time.Second); err != nil {
		s.finding("stuck", "recovery failed: "+err.Error()+"\n"+s.tails())
	}
}

// verify pauses the writer, waits for a healthy pair, checks the ledger
// through the Primary's export, compares the two data areas and
// restarts the ledger's history from what was read. A difference while
// both statuses said healthy before and after the reads is dishonest; a
// pair that left healthy meanwhile is compared again once healthy.
func (s *Suite) verify() error {
	if err := s.w.Pause(s.cfg.StuckAfter); err != nil {
		s.finding("stuck", "pausing the writer: "+err.Error()+"\n"+s.tails())
		s.recover()
		if err := s.w.Pause(30 * time.Second); err != nil {
			return fmt.Errorf("torture: requests hang even after recovery: %w", err)
		}
	}
	p := s.cl.Nodes[s.primary]
	q := s.cl.Peer(p)
	for try := 1; ; try++ {
		if err := s.waitHealthy(s.cfg.StuckAfter); err != nil {
			s.finding("stuck", "with the writer paused: "+err.Error()+"\n"+s.tails())
			s.recover()
			_ = s.w.Pause(30 * time.Second)
		}
		if try == 1 {
			s.checkLedger("the Primary " + p.Name + " after the heal")
		}
		before := s.statuses()
		da, err := p.ReadData(s.size)
		if err != nil {
			return fmt.Errorf("torture: reading %s's data area: %w", p.Name, err)
		}
		db, err := q.ReadData(s.size)
		if err != nil {
			return fmt.Errorf("torture: reading %s's data area: %w", q.Name, err)
		}
		after := s.statuses()
		healthy := before != "" && before == after
		var differ []string
		n := 0
		for b := int64(0); b < s.size/BlockSize; b++ {
			x, y := da[b*BlockSize:(b+1)*BlockSize], db[b*BlockSize:(b+1)*BlockSize]
			if string(x) != string(y) {
				n++
				if len(differ) < 8 {
					differ = append(differ, fmt.Sprintf("  block %d: %s has %s, %s has %s", b,
						p.Name, DecodeBlock(x, s.l.Nonce(), uint64(b)), q.Name, DecodeBlock(y, s.l.Nonce(), uint64(b))))
				}
			}
		}
		if n > 0 && !healthy && try < 3 {
			s.logf("the pair left healthy during the comparison (%s, then %s); again", before, after)
			continue
		}
		if n > 0 {
			s.mu.Lock()
			s.rep.Divergent += n
			if healthy {
				s.rep.Dishonest++
			}
			s.mu.Unlock()
			s.finding("divergent", fmt.Sprintf("%d blocks differ between %s and %s (status before the reads: %s; after: %s)%s:\n%s", n, p.Name, q.Name, before, after,
				map[bool]string{true: " behind a healthy status (dishonest)", false: ""}[healthy], strings.Join(differ, "\n")))
		}
		s.logf("checked: %d blocks by the ledger, data areas %s; %s", s.size/BlockSize,
			map[bool]string{true: "equal", false: "DIFFERENT"}[n == 0], after)
		return nil
	}
}

// statuses describes both nodes' statuses if both are healthy, else "".
func (s *Suite) statuses() string {
	p := s.cl.Nodes[s.primary]
	q := s.cl.Peer(p)
	sp, e1 := p.Status()
	sq, e2 := q.Status()
	if e1 != nil || e2 != nil || !sp.Healthy() || !sq.Healthy() {
		return ""
	}
	return p.Name + " " + sp.String() + "; " + q.Name + " " + sq.String()
}

// checkLedger reads the whole export through the Primary (the writer
// paused) and checks every block; then every block's history restarts
// from what it holds.
func (s *Suite) checkLedger(where string) {
	p := s.cl.Nodes[s.primary]
	var c *client.Client
	err := harness.Until(15*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var err error
		c, err = client.Dial(ctx, p.NBD, client.Options{Export: "r0"})
		return err == nil
	})
	if err != nil {
		s.finding("stuck", fmt.Sprintf("no NBD connection to the Primary %s to check %s", p.Name, where))
		return
	}
	defer c.Close()
	const chunk = 4 << 20
	buf := make([]byte, chunk)
	var bad []Verdict
	for off := int64(0); off < s.size; off += chunk {
		b := buf[:min(chunk, s.size-off)]
		ri := s.l.Tick()
		if err := c.ReadAt(b, off); err != nil {
			s.finding("read-error", fmt.Sprintf("reading %s at %d: %v", where, off, err))
			return
		}
		re := s.l.Tick()
		first := uint64(off / BlockSize)
		bad = append(bad, s.l.CheckRead(first, b, ri, re)...)
		s.l.Establish(first, b)
	}
	s.mu.Lock()
	s.rep.BlocksChecked += uint64(s.size / BlockSize)
	s.mu.Unlock()
	if len(bad) > 0 {
		s.verdicts(where, bad)
	}
}

// Table formats the report.
func (r *Report) Table() string {
	var b strings.Builder
	disks := "plain files"
	if r.Faulty {
		disks = "nbdfuse + nbdkit error filter"
	}
	fmt.Fprintf(&b, "real-process torture: seed %d, %d episodes in %v, %d MiB disks (%s)\n",
		r.Seed, r.Episodes, r.Elapsed.Round(time.Second), r.DiskSize>>20, disks)
	fmt.Fprintf(&b, "%-22s %8s %9s %11s %9s %26s\n", "fault", "episodes", "findings", "error reply", "no reply", "longest without service")
	var failed, unknown uint64
	for k := range numKinds {
		ks := r.ByKind[k]
		if ks.Episodes == 0 {
			continue
		}
		failed, unknown = failed+ks.Failed, unknown+ks.Unknown
		fmt.Fprintf(&b, "%-22s %8d %9d %11d %9d %26v\n", k, ks.Episodes, ks.Findings, ks.Failed, ks.Unknown, ks.Gap.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "%-22s %8d %9d %11d %9d %26v\n", "total", r.Episodes, len(r.Findings), failed, unknown, r.Gap.Round(time.Millisecond))
	w := r.Writer
	fmt.Fprintf(&b, "requests acknowledged: %d (writes %d of which FUA %d, write-zeroes %d, trims %d, flushes %d, reads %d); %.1f GiB written, zeroed or trimmed\n",
		w.Acked, w.ByKind[OpWrite], w.FUA, w.ByKind[OpZero], w.ByKind[OpTrim], w.ByKind[OpFlush], w.ByKind[OpRead], float64(w.AckedBytes)/(1<<30))
	fmt.Fprintf(&b, "requests failed with an error reply: %d; without a reply (connection lost): %d; NBD connections: %d\n", w.Failed, w.Unknown, w.Connects)
	fmt.Fprintf(&b, "failovers: %d; resync-kill episodes that hit a resync: %d; blocks checked: %d at quiescent points, %d by reads while writing\n",
		r.Failovers, r.ResyncHits, r.BlocksChecked, w.ReadsChecked)
	fmt.Fprintf(&b, "lost: %d  torn: %d  foreign: %d  divergent: %d  dishonest: %d  stuck: %d\n",
		r.Lost, r.Torn, r.Foreign, r.Divergent, r.Dishonest, r.Stuck)
	fmt.Fprintf(&b, "longest time without service: %v (%s)\n", r.Gap.Round(time.Millisecond), r.GapWhere)
	if len(r.Slow) > 0 {
		fmt.Fprintf(&b, "warnings: without service longer than allowed (the Primary alive; %v, or a SIGSTOP's length plus that):\n", slowAllowance)
		for _, w := range r.Slow {
			fmt.Fprintf(&b, "- %s\n", w)
		}
	}
	if len(r.Findings) > 0 {
		fmt.Fprintf(&b, "findings (replay: -torture.seed=%d):\n", r.Seed)
		sort.SliceStable(r.Findings, func(i, j int) bool { return r.Findings[i].Episode < r.Findings[j].Episode })
		for _, f := range r.Findings {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	return b.String()
}
