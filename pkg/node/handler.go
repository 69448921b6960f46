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

// runHandler runs the command configured as handler name in the
// resource's handlers section, as drbdadm does: "/bin/sh -c CMD" with
// DRBD's environment (DRBD_RESOURCE, DRBD_MINOR, DRBD_PEER_ADDRESS,
// DRBD_PEERS, DRBD_BACKING_DEV, DRBD_CONF) and the same under
// TWINBLOCK_ names, plus TWINBLOCK_HANDLER. It runs in the background;
// its exit status and output go to the log. Nothing configured: nothing
// runs.
func (r *Resource) runHandler(name string) {
	cmdline := strings.TrimSpace(r.cfg.Handlers.String(name))
	if cmdline == "" {
		return
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
	r.log.Info("running handler", "handler", name, "command", cmdline)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), handlerTimeout)
		defer cancel()
		c := exec.CommandContext(ctx, "/bin/sh", "-c", cmdline)
		c.Env = env
		out, err := c.CombinedOutput()
		if err != nil {
			r.log.Warn("handler failed", "handler", name, "err", err, "output", strings.TrimSpace(string(out)))
			return
		}
		r.log.Info("handler done", "handler", name, "output", strings.TrimSpace(string(out)))
	}()
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
