package torture

import (
	"fmt"
	"strings"
	"time"

	"github.com/twinblock/twinblock/internal/harness"
)

// Kind is the fault an episode injects.
type Kind int

const (
	KillPrimary       Kind = iota // SIGKILL the Primary; promote the survivor; restart the victim
	KillSecondary                 // SIGKILL the Secondary; the Primary goes on; restart
	StopPrimary                   // SIGSTOP the Primary for up to MaxOutage (6 s), then SIGCONT
	StopSecondary                 // SIGSTOP the Secondary for up to MaxOutage, then SIGCONT
	LinkCut                       // the proxy closes the peer link and refuses it for a while
	LinkReset                     // the proxy aborts the peer link with an RST, one to three times
	LinkBlackhole                 // the proxy stops forwarding (connections stay open) for up to MaxOutage
	LinkDelay                     // the proxy delays every chunk by 2 ms to 800 ms for a while
	DiskFailPrimary               // the Primary's disk fails with EIO; later repaired and re-attached
	DiskFailSecondary             // the Secondary's disk fails with EIO; later repaired and re-attached
	ResyncKillTarget              // SIGKILL the sync target during a resync
	ResyncKillSource              // SIGKILL the sync source during a resync
	numKinds
)

var kindNames = [numKinds]string{
	"kill-primary", "kill-secondary", "stop-primary", "stop-secondary",
	"link-cut", "link-reset", "link-blackhole", "link-delay",
	"disk-fail-primary", "disk-fail-secondary",
	"resync-kill-target", "resync-kill-source",
}

func (k Kind) String() string {
	if k >= 0 && k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ParseKinds parses a comma-separated list of kind names ("" or "all":
// every kind).
func ParseKinds(s string) ([]Kind, error) {
	if s == "" || s == "all" {
		var all []Kind
		for k := range numKinds {
			all = append(all, k)
		}
		return all, nil
	}
	var out []Kind
	for _, name := range strings.Split(s, ",") {
		found := false
		for k := range numKinds {
			if kindNames[k] == strings.TrimSpace(name) {
				out, found = append(out, k), true
			}
		}
		if !found {
			return nil, fmt.Errorf("torture: unknown fault kind %q (known: %s)", name, strings.Join(kindNames[:], ", "))
		}
	}
	return out, nil
}

// needsFaultyDisk: kinds that only run on FaultyDisks.
func (k Kind) needsFaultyDisk() bool { return k == DiskFailPrimary || k == DiskFailSecondary }

// fault injects k and does what an operator (or a cluster manager) does
// about it: promote the survivor, restart what died, re-attach a
// repaired disk. The pair may still be resyncing when it returns; heal
// waits for the rest.
func (s *Suite) fault(k Kind) {
	p := s.cl.Nodes[s.primary]
	q := s.cl.Peer(p)
	switch k {
	case KillPrimary:
		s.failover(p, q, "")
		s.sleep(s.between(300*time.Millisecond, 1200*time.Millisecond))
		s.restart(p)
	case KillSecondary:
		s.kill(q)
		s.sleep(s.between(500*time.Millisecond, 2*time.Second))
		s.restart(q)
	case StopPrimary, StopSecondary:
		n := p
		if k == StopSecondary {
			n = q
		}
		d := s.between(200*time.Millisecond, s.cfg.MaxOutage)
		if n == p {
			s.allow = d + slowAllowance
		}
		s.logf("SIGSTOP %s for %v", n.Name, d)
		n.Stop()
		s.sleep(d)
		n.Cont()
		s.logf("SIGCONT %s", n.Name)
	case LinkCut:
		d := s.between(200*time.Millisecond, s.cfg.MaxOutage*2/3)
		s.logf("link cut for %v", d)
		s.cl.Proxy.Cut()
		s.sleep(d)
		s.cl.Proxy.Heal()
	case LinkReset:
		for i := range 1 + s.rng.IntN(3) {
			s.logf("link reset %d (%d connections)", i+1, s.cl.Proxy.Links())
			s.cl.Proxy.Reset()
			s.sleep(s.between(100*time.Millisecond, time.Second))
		}
	case LinkBlackhole:
		d := s.between(200*time.Millisecond, s.cfg.MaxOutage)
		s.logf("link black hole for %v", d)
		s.cl.Proxy.Blackhole()
		s.sleep(d)
		s.cl.Proxy.Heal()
	case LinkDelay:
		delay := []time.Duration{2 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond,
			200 * time.Millisecond, 800 * time.Millisecond}[s.rng.IntN(5)]
		d := s.between(time.Second, 4*time.Second)
		s.logf("link delay %v for %v", delay, d)
		s.cl.Proxy.SetDelay(delay)
		s.sleep(d)
		s.cl.Proxy.Heal()
	case DiskFailPrimary, DiskFailSecondary:
		n := p
		if k == DiskFailSecondary {
			n = q
		}
		s.failDisk(n)
	case ResyncKillTarget, ResyncKillSource:
		s.resyncCrash(k)
	}
}

// failover kills p, waits for q to notice, promotes it, and checks the
// ledger on it before any new write. why names the occasion in the log.
func (s *Suite) failover(p, q *harness.Node, why string) {
	s.kill(p)
	if err := harness.Until(15*time.Second, func() bool {
		st, err := q.Status()
		return err == nil && st.CS != "Connected" && !st.Syncing()
	}); err != nil {
		st, _ := q.Status()
		s.finding("stuck", fmt.Sprintf("%s still %s 15 s after the Primary %s was killed%s", q.Name, st, p.Name, why))
	}
	if err := s.w.Pause(10 * time.Second); err != nil {
		s.finding("stuck", "the writer's requests to the killed Primary: "+err.Error())
	}
	t0 := time.Now()
	if err := s.promote(q, 15*time.Second); err != nil {
		s.finding("refused", fmt.Sprintf("the survivor %s, UpToDate before the kill, was not promoted: %v", q.Name, err))
		s.w.Resume()
		return
	}
	s.primary = q.Name
	s.rep.Failovers++
	s.logf("%s promoted in %v", q.Name, time.Since(t0).Round(time.Millisecond))
	s.checkLedger("the survivor " + q.Name + " after the failover")
	s.w.Resume()
}

// kill sends SIGKILL and tells the writer.
func (s *Suite) kill(n *harness.Node) {
	if n.Name == s.primary {
		s.allow = 0 // service waits for a promotion or a restart
	}
	st, _ := n.Status()
	s.logf("SIGKILL %s (%s)", n.Name, st)
	n.Kill()
	s.w.Killed(n.Name)
	s.killed[n.Name] = true
}

// restart starts a dead daemon and brings its resource up.
func (s *Suite) restart(n *harness.Node) {
	if err := n.StartUp(); err != nil {
		s.finding("stuck", fmt.Sprintf("restarting %s: %v\n%s", n.Name, err, n.LogTail(20)))
		return
	}
	s.killed[n.Name] = false
	s.logf("%s restarted", n.Name)
}

// failDisk makes n's disk fail, waits for the detach, and repairs and
// re-attaches it.
func (s *Suite) failDisk(n *harness.Node) {
	s.logf("disk of %s starts failing", n.Name)
	if err := n.Disk.Fail(); err != nil {
		s.finding("harness", err.Error())
		return
	}
	if err := harness.Until(15*time.Second, func() bool {
		st, err := n.Status()
		return err == nil && st.Disk == "Diskless"
	}); err != nil {
		st, _ := n.Status()
		s.finding("stuck", fmt.Sprintf("%s's disk fails but it is %s after 15 s (on-io-error detach)", n.Name, st))
	} else {
		st, _ := n.Status()
		s.logf("%s detached its disk: %s", n.Name, st)
	}
	s.sleep(s.between(300*time.Millisecond, 1500*time.Millisecond))
	s.repairDisk(n)
}

// repairDisk ends n's disk failure and re-attaches it. A disk that
// failed is resynced in full when it comes back (77782a4; before it, the
// admin guide's workaround was invalidate).
func (s *Suite) repairDisk(n *harness.Node) {
	if err := n.Disk.Repair(); err != nil {
		s.finding("harness", err.Error())
	}
	n.SkipLog() // the detach it caused is not a finding
	st, _ := n.Status()
	if st.Disk != "Diskless" {
		return
	}
	if out, err := n.TB(30*time.Second, "attach", "r0"); err != nil {
		s.finding("refused", fmt.Sprintf("attach on %s after its disk was repaired: %v: %s", n.Name, err, out))
		return
	}
	st, _ = n.Status()
	s.logf("%s re-attached: %s", n.Name, st)
}

// resyncCrash starts a resync (the Secondary killed and restarted after
// a backlog of writes, or the Primary invalidated), then kills the sync
// target or the sync source while it runs.
func (s *Suite) resyncCrash(k Kind) {
	p := s.cl.Nodes[s.primary]
	q := s.cl.Peer(p)
	if s.rng.IntN(2) == 0 {
		s.logf("resync setup: %s killed, writes go on, restarted", q.Name)
		s.kill(q)
		s.sleep(s.between(700*time.Millisecond, 2*time.Second))
		s.restart(q)
	} else {
		s.logf("resync setup: the Primary %s invalidated", p.Name)
		if out, err := p.TB(30*time.Second, "invalidate", "r0"); err != nil {
			s.finding("refused", fmt.Sprintf("invalidate on the Primary %s: %v: %s", p.Name, err, out))
			return
		}
	}
	var src, tgt *harness.Node
	if err := harness.Until(15*time.Second, func() bool {
		for _, n := range []*harness.Node{p, q} {
			st, err := n.Status()
			if err == nil && (st.CS == "SyncSource" || st.CS == "PausedSyncS") {
				src, tgt = n, s.cl.Peer(n)
				return true
			}
		}
		return false
	}); err != nil {
		stp, _ := p.Status()
		stq, _ := q.Status()
		s.logf("no resync seen (%s: %s; %s: %s); killing anyway", p.Name, stp, q.Name, stq)
		src, tgt = p, q
	}
	s.sleep(s.between(0, 700*time.Millisecond))
	victim := tgt
	if k == ResyncKillSource {
		victim = src
	}
	if st, err := victim.Status(); err == nil && st.Syncing() {
		s.rep.ResyncHits++
		s.logf("%s during the resync (%s: %s)", map[Kind]string{ResyncKillTarget: "killing the target", ResyncKillSource: "killing the source"}[k], victim.Name, st)
	} else {
		s.logf("the resync ended before the kill (%s: %s)", victim.Name, st)
	}
	survivor := s.cl.Peer(victim)
	if victim.Name == s.primary {
		if st, err := survivor.Status(); err == nil && st.Disk == "UpToDate" {
			s.failover(victim, survivor, " during a resync")
			s.sleep(s.between(200*time.Millisecond, time.Second))
			s.restart(victim)
			return
		}
		// The survivor is Inconsistent: no failover; the Primary
		// comes back and is promoted again.
		s.kill(victim)
		s.sleep(s.between(200*time.Millisecond, time.Second))
		s.restart(victim)
		t0 := time.Now()
		if err := s.promote(victim, 30*time.Second); err != nil {
			s.finding("refused", fmt.Sprintf("the restarted Primary %s (its peer Inconsistent) was not promoted again: %v", victim.Name, err))
			return
		}
		s.logf("%s promoted again in %v", victim.Name, time.Since(t0).Round(time.Millisecond))
		return
	}
	s.kill(victim)
	s.sleep(s.between(200*time.Millisecond, time.Second))
	s.restart(victim)
}
