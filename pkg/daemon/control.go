package daemon

import (
	"encoding/json"
	"fmt"
	"net"
	"time"

	"github.com/twinblock/twinblock/pkg/status"
)

// Request is one admin command sent over the control socket.
type Request struct {
	Verb          string `json:"verb"`     // up, down, attach, detach, connect, disconnect, primary, secondary, status, explain, …
	Resource      string `json:"resource"` // a resource name; "" or "all" for all of them
	Force         bool   `json:"force,omitempty"`
	DiscardMyData bool   `json:"discard_my_data,omitempty"`
	// ConfigPath is the file adjust reads ("": the daemon's own).
	ConfigPath string `json:"config_path,omitempty"`
	// DryRun: adjust says what it would do and does nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Events2 holds events2's flags (Verb "events2").
	Events2 *Events2Request `json:"events2,omitempty"`
}

// Response is the daemon's answer.
type Response struct {
	// Error is the failure, one line ("r0: State change failed: (-2)
	// Need access to UpToDate data"); empty on success.
	Error string `json:"error,omitempty"`
	// NoSuchResource: the request named a resource this daemon does not
	// host (drbdadm's exit code 10).
	NoSuchResource bool `json:"no_such_resource,omitempty"`
	// Resources is the status of the resources the request named.
	Resources []status.Resource `json:"resources,omitempty"`
	// Text is a verb's report for people (explain).
	Text string `json:"text,omitempty"`
	// Version is the daemon's version.
	Version string `json:"version,omitempty"`
}

// Call sends req to the daemon at the control socket path and returns
// its response.
func Call(path string, req Request, timeout time.Duration) (*Response, error) {
	nc, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the twinblock daemon at %s (is `twinblock daemon` running?): %w", path, err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(nc).Encode(req); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(nc).Decode(&resp); err != nil {
		return nil, fmt.Errorf("control socket %s: reading the answer: %w", path, err)
	}
	return &resp, nil
}
