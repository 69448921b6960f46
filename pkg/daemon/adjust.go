package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/node"
)

// adjust applies a changed configuration file to the running daemon, as
// drbdadm adjust makes the kernel match drbd.conf: a resource new in the
// file (with a section for this node) is created and brought up; one gone
// from it is taken down and removed; one whose settings changed gets them
// (node.Resource.Adjust: live, over a reconnect, or over a detach and
// attach, never taking a Primary's disk or export); every resource named
// is brought up. name is a resource or "all"; path is the file ("": the
// daemon's own). With dryRun nothing changes: the lines say what would.
//
// Quorum resources are not added or removed here: their group's members
// start with the daemon.
func (d *Daemon) adjust(ctx context.Context, path, name string, dryRun bool) ([]string, error) {
	d.adjustMu.Lock()
	defer d.adjustMu.Unlock()
	if d.stopping {
		return nil, errors.New("adjust: the daemon is shutting down")
	}
	if path == "" {
		path = d.opts.Config.Files[0]
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, fmt.Errorf("adjust: %w", err)
	}
	for _, w := range cfg.Warnings {
		d.log.Warn("adjust: "+w.String(), "file", path)
	}
	next := map[string]*config.Resource{}
	for _, rc := range cfg.Resources {
		if rc.IsWitness(d.opts.Node) {
			continue
		}
		if _, _, err := rc.Host(d.opts.Node); err == nil {
			next[rc.Name] = rc
		}
	}
	d.mu.RLock()
	var names []string
	for _, r := range d.resources {
		names = append(names, r.Name())
	}
	d.mu.RUnlock()
	for n := range next {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	if name != "" && name != "all" {
		if !slices.Contains(names, name) {
			return nil, fmt.Errorf("%s: no such resource in %s for node %s", name, path, d.opts.Node)
		}
		names = []string{name}
	}

	var out []string
	var errs []error
	for _, n := range names {
		d.mu.RLock()
		r := d.byName[n]
		d.mu.RUnlock()
		rc := next[n]
		var steps []string
		var err error
		switch {
		case r == nil:
			steps, err = d.adjustAdd(ctx, rc, dryRun)
		case rc == nil:
			steps, err = d.adjustRemove(ctx, r, dryRun)
		case !r.Status().Configured && !r.Quorum():
			// Down: built afresh from the file, whatever changed.
			steps, err = d.adjustReplace(ctx, r, rc, dryRun)
		default:
			steps, err = r.Adjust(ctx, rc, dryRun)
		}
		for _, s := range steps {
			out = append(out, n+": "+s)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
		}
	}
	if len(errs) == 0 && !dryRun && (name == "" || name == "all") {
		d.opts.Config = cfg
	}
	return out, errors.Join(errs...)
}

// adjustAdd creates resource rc, new in the file, and brings it up.
func (d *Daemon) adjustAdd(ctx context.Context, rc *config.Resource, dryRun bool) ([]string, error) {
	steps := []string{"new resource", "attach", "connect"}
	if rc.Quorum() {
		return steps[:1], errors.New("adjust: a new quorum resource needs a restart of the daemon (its group's member starts with it)")
	}
	if dryRun {
		return steps, nil
	}
	r, err := node.NewResourceEnv(rc, d.opts.Node, d.opts.Logger, d.notify, node.Env{})
	if err != nil {
		return steps[:1], err
	}
	r.Start(context.WithoutCancel(ctx))
	d.mu.Lock()
	d.resources = append(d.resources, r)
	d.byName[rc.Name] = r
	d.mu.Unlock()
	d.log.Info("adjust: new resource", "resource", rc.Name)
	_, err = r.Adjust(ctx, rc, false) // brings it up
	d.notify()
	return steps, err
}

// adjustReplace replaces r, a resource that is down, with one built
// from rc, and brings it up.
func (d *Daemon) adjustReplace(ctx context.Context, r *node.Resource, rc *config.Resource, dryRun bool) ([]string, error) {
	plan, err := node.PlanAdjust(r.Config(), rc, d.opts.Node)
	if err != nil {
		return nil, err
	}
	steps := slices.Concat(plan.Changes, []string{"attach", "connect"})
	if dryRun {
		return steps, nil
	}
	nr, err := node.NewResourceEnv(rc, d.opts.Node, d.opts.Logger, d.notify, node.Env{})
	if err != nil {
		return nil, err
	}
	if err := r.Close(); err != nil {
		d.log.Warn("adjust: closing the old resource", "resource", r.Name(), "err", err)
	}
	nr.Start(context.WithoutCancel(ctx))
	d.mu.Lock()
	d.resources[slices.Index(d.resources, r)] = nr
	d.byName[rc.Name] = nr
	d.mu.Unlock()
	_, err = nr.Adjust(ctx, rc, false) // brings it up
	d.notify()
	return steps, err
}

// adjustRemove takes down resource r, gone from the file, and removes it.
func (d *Daemon) adjustRemove(ctx context.Context, r *node.Resource, dryRun bool) ([]string, error) {
	steps := []string{"gone from the configuration: secondary, disconnect, detach, remove"}
	if r.Quorum() {
		return steps, errors.New("adjust: removing a quorum resource needs a restart of the daemon")
	}
	if dryRun {
		return steps, nil
	}
	for _, ev := range []fsm.Event{fsm.Demote{}, fsm.Disconnect{}, fsm.Detach{}} {
		if err := r.Do(ctx, ev); err != nil {
			return steps, fmt.Errorf("adjust: %s is gone from the configuration but cannot be taken down: %w", r.Name(), err)
		}
	}
	d.mu.Lock()
	d.resources = slices.DeleteFunc(d.resources, func(x *node.Resource) bool { return x == r })
	delete(d.byName, r.Name())
	d.mu.Unlock()
	err := r.Close()
	d.log.Info("adjust: resource removed", "resource", r.Name())
	d.notify()
	return steps, err
}

// Reload is SIGHUP: adjust all from the daemon's configuration file. The
// outcome goes to the log (a signal has no one to answer).
func (d *Daemon) Reload(ctx context.Context) error {
	steps, err := d.adjust(ctx, "", "all", false)
	if len(steps) > 0 {
		d.log.Info("reload (SIGHUP): " + strings.Join(steps, "; "))
	} else if err == nil {
		d.log.Info("reload (SIGHUP): the configuration did not change")
	}
	if err != nil {
		d.log.Error("reload (SIGHUP) failed", "err", err)
	}
	return err
}
