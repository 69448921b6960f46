package raftnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/twinblock/twinblock/pkg/quorum"
)

// answer is a forwarded command's reply.
type answer struct {
	After quorum.Resource `json:"after"`
	Code  string          `json:"code,omitempty"`  // the refusal's sentinel (errCodes), "" if granted
	Error string          `json:"error,omitempty"` // its text
	// Failed: Submit itself failed (not a refusal); Error says why.
	Failed bool `json:"failed,omitempty"`
}

// errCodes names the errors that cross the wire, so that errors.Is works
// on the forwarding side.
var errCodes = map[string]error{
	"unknown-resource":  quorum.ErrUnknownResource,
	"stale-epoch":       quorum.ErrStaleEpoch,
	"not-data-node":     quorum.ErrNotDataNode,
	"outdated":          quorum.ErrOutdated,
	"not-up-to-date":    quorum.ErrNotUpToDate,
	"primary-elsewhere": quorum.ErrPrimaryElsewhere,
	"not-primary":       quorum.ErrNotPrimary,
	"is-primary":        quorum.ErrIsPrimary,
	"not-leader":        ErrNotLeader,
}

func codeOf(err error) string {
	for code, e := range errCodes {
		if errors.Is(err, e) {
			return code
		}
	}
	return ""
}

// remoteError is an error the leader returned: its text, and the
// sentinel it wraps.
type remoteError struct {
	msg  string
	code error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.code }

func decodeError(code, msg string) error {
	return &remoteError{msg: msg, code: errCodes[code]}
}

// serveCommand answers one forwarded command on c (the leader's side).
func (n *Node) serveCommand(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(muxTimeout + n.timeout(context.Background())))
	b, err := readFrame(c)
	if err != nil {
		return
	}
	var a answer
	cmd, err := quorum.UnmarshalCommand(b)
	if err != nil {
		a = answer{Failed: true, Error: err.Error()}
	} else {
		res, err := n.submitLocal(context.Background(), cmd)
		switch {
		case err != nil:
			a = answer{Failed: true, Code: codeOf(err), Error: err.Error()}
		default:
			a = answer{After: res.After}
			if res.Err != nil {
				a.Code, a.Error = codeOf(res.Err), res.Err.Error()
			}
		}
	}
	out, err := json.Marshal(a)
	if err != nil {
		return
	}
	_ = writeFrame(c, out)
}

// forward sends c to the leader and returns its answer.
func (n *Node) forward(ctx context.Context, c quorum.Command) (quorum.Result, error) {
	leaderAddr, leader := n.raft.LeaderWithID()
	if leader == "" {
		return quorum.Result{}, fmt.Errorf("%w (no leader known: is a majority of the group up?)", ErrNotLeader)
	}
	timeout := n.timeout(ctx)
	conn, err := dialMember(n.net, n.local, leaderAddr, quorum.NodeID(leader), n.cfg.ID, n.cfg.Auth, kindCommand, timeout)
	if err != nil {
		return quorum.Result{}, fmt.Errorf("quorum: forwarding %s to the leader: %w", c, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout + muxTimeout))
	b, err := c.Marshal()
	if err != nil {
		return quorum.Result{}, err
	}
	if err := writeFrame(conn, b); err != nil {
		return quorum.Result{}, fmt.Errorf("quorum: forwarding %s to %s: %w", c, leader, err)
	}
	reply, err := readFrame(conn)
	if err != nil {
		// Sent, and no answer: it may have committed. The caller
		// retries, as after ErrLeadershipLost.
		return quorum.Result{}, fmt.Errorf("quorum: forwarding %s to %s: no answer: %w", c, leader, err)
	}
	var a answer
	if err := json.Unmarshal(reply, &a); err != nil {
		return quorum.Result{}, fmt.Errorf("quorum: %s's answer: %w", leader, err)
	}
	if a.Failed {
		return quorum.Result{}, decodeError(a.Code, a.Error)
	}
	res := quorum.Result{After: a.After}
	if a.Error != "" {
		res.Err = decodeError(a.Code, a.Error)
	}
	return res, nil
}
