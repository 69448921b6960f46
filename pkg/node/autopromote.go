package node

import (
	"context"
	"fmt"
	"time"

	"github.com/twinblock/twinblock/pkg/fsm"
)

// autoPromoteTimeout bounds a promotion asked by a client's connection
// (the grant of a quorum group included); the client is refused after.
const autoPromoteTimeout = 10 * time.Second

// autoDemoteAfter is how long an auto-promoted Primary waits, with no
// client, before it demotes: a client that reconnects at once (or one
// let in whose session has not registered yet) keeps it Primary.
const autoDemoteAfter = time.Second

// promoteOnOpen is DRBD 9's auto-promote for an NBD client that opens
// the export (the catalog's Lookup, on the connection's goroutine): a
// Secondary is promoted, as by the primary verb (the before-promote
// handler and, on a quorum resource, the group's grant), and marked
// auto-promoted; a Primary lets the client in. An error refuses the
// client, as DRBD fails the open with EROFS.
func (r *Resource) promoteOnOpen() error {
	r.lastOpen.Store(r.env.Clock.Now().UnixNano())
	if r.dev.serving.Load() {
		return nil
	}
	if !r.autoPromote.Load() {
		return nil // the catalog refuses: not Primary
	}
	ctx, cancel := context.WithTimeout(r.ctx, autoPromoteTimeout)
	defer cancel()
	var role fsm.Role
	if err := r.inspect(ctx, func() { role = r.fsm.State().Role }); err != nil {
		return err
	}
	if err := r.Do(ctx, fsm.Promote{}); err != nil {
		return err
	}
	if role != fsm.Primary {
		r.autoPromoted.Store(true)
		r.log.Info("auto-promote: promoted for an NBD client")
	}
	r.lastOpen.Store(r.env.Clock.Now().UnixNano())
	return nil
}

// autoDemote (run only, every tick) demotes an auto-promoted Primary
// once no client has been seen for autoDemoteAfter, as DRBD 9 demotes
// on the last close; off run's goroutine (the demotion runs the
// before-demote handler). A refusal (a client came back) leaves it
// Primary, and the next tick looks again.
func (r *Resource) autoDemote() {
	if !r.autoPromoted.Load() {
		return
	}
	if r.fsm.State().Role != fsm.Primary {
		r.autoPromoted.Store(false)
		return
	}
	now := r.env.Clock.Now().UnixNano()
	if r.exp.Sessions() > 0 {
		r.lastOpen.Store(now)
		return
	}
	if time.Duration(now-r.lastOpen.Load()) < autoDemoteAfter || !r.autoDemoting.CompareAndSwap(false, true) {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.autoDemoting.Store(false)
		ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
		defer cancel()
		if err := r.Do(ctx, fsm.Demote{}); err != nil {
			r.log.Info("auto-promote: no demotion after the last client", "err", fmt.Sprint(err))
			return
		}
		r.autoPromoted.Store(false)
		r.log.Info("auto-promote: demoted, the last NBD client gone")
	}()
}
