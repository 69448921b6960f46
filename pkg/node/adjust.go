package node

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/fsm"
)

// AdjustPlan is what `adjust` does to a running resource to make it run
// on a changed configuration, as drbdadm adjust makes the kernel match
// drbd.conf: which settings changed, and the steps they need.
type AdjustPlan struct {
	// Changes lists the settings that differ, for people
	// ("net { ping-int 10 -> 5 }").
	Changes []string
	// Reconnect: the connection's settings changed (net options, the
	// protocol, an address): the link is dropped and made again. A
	// Primary keeps serving meanwhile; its writes are marked in the
	// bitmap and resynced when the peer is back (nothing is lost).
	Reconnect bool
	// Reattach: the disk's placement or an option read when it is
	// attached changed (disk, meta-disk, al-extents, …): detach, then
	// attach. Refused on a Primary (its data would go away under it).
	Reattach bool
	// Reexport: nbd-listen or the kernel device changed: applied the
	// next time the export opens; refused while it is served.
	Reexport bool
	// Refused is why the change cannot be applied to the running
	// resource ("" if it can).
	Refused string
}

// Empty reports whether the configuration did not change.
func (p AdjustPlan) Empty() bool { return len(p.Changes) == 0 }

// liveDisk are the disk keywords the running resource reads when it
// uses them (the resync controller at each resync's start, on-io-error
// at each error): changing them needs no detach.
var liveDisk = []string{"resync-rate", "c-plan-ahead", "c-fill-target", "c-delay-target", "c-max-rate", "c-min-rate", "on-io-error", "resync-after", "disk-timeout"}

// liveOptions are the options keywords applied at once.
var liveOptions = []string{"on-no-quorum", "auto-promote", "auto-failover", "cpu-mask", "on-no-data-accessible"}

// PlanAdjust compares a resource's running configuration with the new
// one for host self. It is pure: the caller applies the plan.
//
// Invariant: a plan that is not Refused changes nothing that the running
// resource cannot take without losing an acknowledged write: a Primary
// keeps its disk (no Reattach) and its export (no Reexport).
func PlanAdjust(old, next *config.Resource, self string) (AdjustPlan, error) {
	var p AdjustPlan
	if old.Name != next.Name {
		return p, fmt.Errorf("adjust: resource %s is not %s", old.Name, next.Name)
	}
	oldSelf, oldPeer, err := old.Host(self)
	if err != nil {
		return p, err
	}
	newSelf, newPeer, err := next.Host(self)
	if err != nil {
		return p, fmt.Errorf("adjust: %s: %w", next.Name, err)
	}
	if oldPeer.Name != newPeer.Name {
		p.Changes = append(p.Changes, fmt.Sprintf("peer %s -> %s", oldPeer.Name, newPeer.Name))
		p.Refused = "the peer host changed: down the resource, then adjust (or up) it"
	}
	if old.Quorum() != next.Quorum() || old.Quorum() && (old.Witness.Name != next.Witness.Name ||
		old.Witness.QuorumAddress != next.Witness.QuorumAddress || oldSelf.QuorumAddress != newSelf.QuorumAddress ||
		oldPeer.QuorumAddress != newPeer.QuorumAddress) {
		p.Changes = append(p.Changes, "the quorum group (quorum, the witness, a quorum-address)")
		p.Refused = "the quorum group's membership changes only with a restart of the daemons"
	}
	change := func(what string, a, b string) bool {
		if a == b {
			return false
		}
		p.Changes = append(p.Changes, fmt.Sprintf("%s %s -> %s", what, a, b))
		return true
	}
	if change("protocol", old.Protocol, next.Protocol) {
		p.Reconnect = true
	}
	if change("address", oldSelf.Address, newSelf.Address) || change("peer address", oldPeer.Address, newPeer.Address) {
		p.Reconnect = true
	}
	if change("disk", oldSelf.Disk, newSelf.Disk) || change("meta-disk", fmt.Sprint(oldSelf.MetaDisk), fmt.Sprint(newSelf.MetaDisk)) {
		p.Reattach = true
	}
	if change("nbd-listen", oldSelf.NBDListen, newSelf.NBDListen) || change("device", oldSelf.NBDDevice, newSelf.NBDDevice) {
		p.Reexport = true
	}
	change("minor", fmt.Sprint(oldSelf.Minor), fmt.Sprint(newSelf.Minor))
	for _, c := range old.Net.Diff(next.Net) {
		p.Changes = append(p.Changes, c.String())
		p.Reconnect = true
		if c.Keyword == "backup-discarded" {
			p.Refused = "net { backup-discarded } changes only on a resource that is down: down it, then adjust"
		}
	}
	for _, c := range old.Disk.Diff(next.Disk) {
		p.Changes = append(p.Changes, c.String())
		if !slices.Contains(liveDisk, c.Keyword) {
			p.Reattach = true
		}
	}
	for _, c := range old.Options.Diff(next.Options) {
		p.Changes = append(p.Changes, c.String())
		if !slices.Contains(liveOptions, c.Keyword) && c.Keyword != "quorum" {
			p.Refused = fmt.Sprintf("options { %s } changes only on a resource that is down: down it, then adjust", c.Keyword)
		}
	}
	for _, c := range slices.Concat(old.Startup.Diff(next.Startup), old.Handlers.Diff(next.Handlers)) {
		p.Changes = append(p.Changes, c.String()) // read when used
	}
	return p, nil
}

// ErrAdjustPrimary: the plan needs what a Primary cannot do.
var ErrAdjustPrimary = errors.New("the change needs the disk detached or the export closed, which a Primary cannot do: make this node Secondary, adjust, and promote it again (or adjust the peer and fail over)")

// Adjust applies next, a changed configuration of this resource, to the
// running resource, following PlanAdjust, and brings the resource up as
// drbdadm adjust does (the disk attached if it has one, the peer link
// connecting). With dryRun it only returns the plan. The returned lines
// say what was (or would be) done.
func (r *Resource) Adjust(ctx context.Context, next *config.Resource, dryRun bool) ([]string, error) {
	if err := checkDigests(next); err != nil {
		return nil, err
	}
	var plan AdjustPlan
	var st fsm.State
	var serving bool
	var planErr error
	if err := r.inspect(ctx, func() {
		plan, planErr = PlanAdjust(r.cfg, next, r.self.Name)
		st = r.fsm.State()
		serving = r.dev.serving.Load()
	}); err != nil {
		return nil, err
	}
	if planErr != nil {
		return nil, planErr
	}
	steps := slices.Clone(plan.Changes)
	if plan.Refused != "" {
		return steps, fmt.Errorf("adjust: %s", plan.Refused)
	}
	if (plan.Reattach || plan.Reexport) && (st.Role == fsm.Primary || serving) {
		return steps, fmt.Errorf("adjust: %w", ErrAdjustPrimary)
	}
	connected := st.Conn != fsm.StandAlone
	attached := st.Disk != fsm.Diskless
	if plan.Reconnect && connected {
		steps = append(steps, "disconnect")
	}
	if plan.Reattach && attached {
		steps = append(steps, "detach")
	}
	if !plan.Empty() {
		steps = append(steps, "apply the new settings")
	}
	willAttach := (plan.Reattach || !attached) && next != nil && r.HasDiskIn(next)
	if willAttach {
		steps = append(steps, "attach")
	}
	if plan.Reconnect || !connected {
		steps = append(steps, "connect")
	}
	if dryRun {
		return steps, nil
	}
	if plan.Reconnect && connected {
		if err := r.Do(ctx, fsm.Disconnect{}); err != nil {
			return steps, fmt.Errorf("adjust: disconnect: %w", err)
		}
	}
	if plan.Reattach && attached {
		if err := r.Do(ctx, fsm.Detach{}); err != nil {
			return steps, fmt.Errorf("adjust: detach: %w", err)
		}
	}
	if !plan.Empty() {
		var err error
		if ierr := r.inspect(ctx, func() { err = r.applyConfig(next) }); ierr != nil {
			return steps, ierr
		}
		if err != nil {
			return steps, fmt.Errorf("adjust: %w", err)
		}
		r.log.Info("adjust: new settings applied", "changes", plan.Changes)
	}
	if willAttach {
		if err := r.Do(ctx, fsm.AttachBegin{}); err != nil && !errors.Is(err, fsm.ErrDiskConfigured) {
			return steps, fmt.Errorf("adjust: attach: %w", err)
		}
	}
	if err := r.Do(ctx, fsm.Connect{}); err != nil && !errors.Is(err, fsm.ErrNetConfigured) {
		return steps, fmt.Errorf("adjust: connect: %w", err)
	}
	return steps, nil
}

// Quorum reports whether the resource runs with a quorum group.
func (r *Resource) Quorum() bool { return r.env.Quorum != nil }

// Config returns the configuration the resource runs on.
func (r *Resource) Config() *config.Resource { return r.liveCfg.Load() }

// HasDiskIn reports whether this host's section in cfg names a disk.
func (r *Resource) HasDiskIn(cfg *config.Resource) bool {
	me, _, err := cfg.Host(r.self.Name)
	return err == nil && me.Disk != ""
}

// applyConfig makes next the resource's configuration (run's goroutine;
// the link down if the connection's settings changed, the disk detached
// if its placement did: Adjust sees to it).
func (r *Resource) applyConfig(next *config.Resource) error {
	me, peer, err := next.Host(r.self.Name)
	if err != nil {
		return err
	}
	fc, err := fsmConfig(next, me, peer)
	if err != nil {
		return err
	}
	if err := r.fsm.Reconfigure(fc); err != nil {
		return err
	}
	r.cfg, r.self, r.peer = next, me, peer
	r.liveCfg.Store(next)
	if fs, ok := r.store.(*fileStorage); ok {
		fs.host, fs.disk = me, &next.Disk
	}
	if y, ok := r.syncer.(*engineSyncer); ok {
		y.cfg = next
	}
	if e, ok := r.exp.(*nbdExporter); ok {
		e.listen = me.NBDListen
	}
	r.kernel.mu.Lock()
	r.kernel.path, r.kernel.listen = me.NBDDevice, me.NBDListen
	r.kernel.mu.Unlock()
	if r.env.Quorum != nil {
		r.dev.suspendNoQuorum.Store(next.Options.String("on-no-quorum") == "suspend-io")
		r.autoFailover.Store(next.Options.Bool("auto-failover"))
	}
	r.autoPromote.Store(next.Options.Bool("auto-promote"))
	r.publish()
	return nil
}
