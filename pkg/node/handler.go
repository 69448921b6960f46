package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/twinblock/twinblock/pkg/fsm"
)

// handlerTimeout bounds a handler's run; DRBD waits without a bound, but
// a stuck script must not hold a goroutine forever.
const handlerTimeout = 5 * time.Minute

// shutdownHandlerTimeout bounds the before-demote handler of a clean
// shutdown: the daemon goes down whatever the script does.
const shutdownHandlerTimeout = 30 * time.Second

// runHandler runs the command configured as handler name in the
// resource's handlers section, as drbdadm does: "/bin/sh -c CMD" with
// DRBD's environment (DRBD_RESOURCE, DRBD_MINOR, DRBD_PEER_ADDRESS,
// DRBD_PEERS, DRBD_BACKING_DEV, DRBD_CONF) and the same under
// TWINBLOCK_ names, plus TWINBLOCK_HANDLER. It runs in the background;
// its exit status and output go to the log. Nothing configured: nothing
// runs.
func (r *Resource) runHandler(name string) {
	c := r.handlerCommand(name)
	if c == nil {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), handlerTimeout)
		defer cancel()
		_ = c.run(ctx)
	}()
}

// runHandlerSync runs handler name and waits for it (ctx bounds it):
// the before-promote and before-demote handlers, whose failure refuses
// the role change. Nothing configured: nil.
func (r *Resource) runHandlerSync(ctx context.Context, name string) error {
	c := r.handlerCommand(name)
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, handlerTimeout)
	defer cancel()
	return c.run(ctx)
}

// handlerRun is one run of a configured handler.
type handlerRun struct {
	r             *Resource
	name, cmdline string
	env           []string
}

// handlerCommand prepares handler name's run; nil if none is configured.
func (r *Resource) handlerCommand(name string) *handlerRun {
	cmdline := strings.TrimSpace(r.cfg.Handlers.String(name))
	if cmdline == "" {
		return nil
	}
	peerHost, _, _ := net.SplitHostPort(r.peer.Address)
	vars := map[string]string{
		"RESOURCE":     r.name,
		"MINOR":        fmt.Sprint(r.self.Minor),
		"PEER_ADDRESS": peerHost,
		"PEERS":        r.peer.Name,
		"BACKING_DEV":  r.self.Disk,
		"CONF":         r.cfg.Pos.File,
	}
	env := os.Environ()
	for k, v := range vars {
		env = append(env, "DRBD_"+k+"="+v, "TWINBLOCK_"+k+"="+v)
	}
	env = append(env, "TWINBLOCK_HANDLER="+name)
	return &handlerRun{r: r, name: name, cmdline: cmdline, env: env}
}

func (h *handlerRun) run(ctx context.Context) error {
	h.r.log.Info("running handler", "handler", h.name, "command", h.cmdline)
	c := exec.CommandContext(ctx, "/bin/sh", "-c", h.cmdline)
	c.Env = h.env
	out, err := c.CombinedOutput()
	if err != nil {
		h.r.log.Warn("handler failed", "handler", h.name, "err", err, "output", strings.TrimSpace(string(out)))
		return fmt.Errorf("handler %s: %w: %s", h.name, err, strings.TrimSpace(string(out)))
	}
	h.r.log.Info("handler done", "handler", h.name, "output", strings.TrimSpace(string(out)))
	return nil
}

// diskFailed steps a local disk error into the state machine. With
// on-io-error call-local-io-error the state machine detaches, as with
// detach, and the error that detached the disk runs the local-io-error
// handler, once per failure (DRBD 8.4: the disk goes Failed, then the
// helper is called). Later errors of the same failure, which find the
// disk gone, run nothing.
func (r *Resource) diskFailed(e fsm.DiskFailed) {
	before := r.fsm.State().Disk
	r.stepped(r.fsm.Step(e))
	after := r.fsm.State().Disk
	if after != before && (after == fsm.Failed || after == fsm.Diskless) &&
		r.cfg.Disk.String("on-io-error") == "call-local-io-error" {
		r.log.Warn("local disk error: running the local-io-error handler (on-io-error call-local-io-error)", "err", e.Err)
		r.runHandler("local-io-error")
	}
}
