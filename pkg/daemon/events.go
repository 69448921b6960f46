package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/twinblock/twinblock/pkg/status"
)

// Events2Request is events2's part of a Request: drbdsetup events2's
// flags.
type Events2Request struct {
	Now        bool `json:"now,omitempty"`        // the current state, then the end
	Timestamps bool `json:"timestamps,omitempty"` // each line prefixed with the time
	Statistics bool `json:"statistics,omitempty"` // counters on the lines
	Full       bool `json:"full,omitempty"`       // every key on a change line (implies Statistics)
	// Poll: the client sends "n" for a fresh look at the state (the
	// changes since the last, or with Now the whole state again); its
	// end of the stream ends the events.
	Poll bool `json:"poll,omitempty"`
}

// The events2 stream on the control socket: the client sends a Request
// with Verb "events2"; the daemon answers one JSON Response line (an
// Error, or nothing), then the events2 lines until the client closes, the
// daemon stops or, with Now and not Poll, the initial state is out.

// subscribe returns a channel that gets a value (never blocking, at most
// one pending) whenever a resource changed, and its cancel.
func (d *Daemon) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	d.subMu.Lock()
	d.subs[ch] = struct{}{}
	d.subMu.Unlock()
	return ch, func() {
		d.subMu.Lock()
		delete(d.subs, ch)
		d.subMu.Unlock()
	}
}

// events2 streams the events of the resources req names to nc.
//
// Invariant: every line is true of the state the daemon held when it
// was written, and a reader that applies the lines in order holds the
// objects the daemon holds after the last one. Changes that follow each
// other faster than the reader reads may be folded into one change line
// (drbdsetup's kernel events are not folded); none is lost.
func (d *Daemon) events2(ctx context.Context, nc net.Conn, req Request) {
	opt := Events2Request{}
	if req.Events2 != nil {
		opt = *req.Events2
	}
	if opt.Full {
		opt.Statistics = true
	}
	enc := json.NewEncoder(nc)
	if req.Resource != "" && req.Resource != "all" && !d.configured(req.Resource) {
		_ = enc.Encode(Response{Error: fmt.Sprintf("%s: No such resource on node %s", req.Resource, d.opts.Node), NoSuchResource: true})
		return
	}
	if err := enc.Encode(Response{Version: Version}); err != nil {
		return
	}
	_ = nc.SetDeadline(time.Time{})
	changed, cancel := d.subscribe()
	defer cancel()

	// The client's side: "n" asks for a poll (with Poll); its end, or
	// any byte without Poll, ends the stream.
	polls := make(chan struct{}, 1)
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		br := bufio.NewReader(nc)
		for {
			c, err := br.ReadByte()
			if err != nil || !opt.Poll {
				return
			}
			switch c {
			case 'n':
				select {
				case polls <- struct{}{}:
				default:
				}
			case '\n':
			default:
				return
			}
		}
	}()

	w := bufio.NewWriter(nc)
	sopt := status.Events2Options{Statistics: opt.Statistics, Full: opt.Full}
	prev := map[string]status.Resource{}
	emit := func(initial bool) error {
		now := time.Now()
		cur := d.statusOf(req.Resource)
		names := make([]string, 0, len(cur)+len(prev))
		for n := range cur {
			names = append(names, n)
		}
		for n := range prev {
			if _, ok := cur[n]; !ok {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		prefix := ""
		if opt.Timestamps {
			prefix = status.Events2Timestamp(now) + " "
		}
		for _, n := range names {
			var p, c *status.Resource
			if r, ok := prev[n]; ok && !initial {
				p = &r
			}
			if r, ok := cur[n]; ok {
				c = &r
			}
			for _, l := range status.Events2Diff(p, c, initial, sopt) {
				if _, err := w.WriteString(prefix + l.Text + "\n"); err != nil {
					return err
				}
			}
		}
		if initial {
			if _, err := w.WriteString(prefix + "exists -\n"); err != nil {
				return err
			}
		}
		prev = cur
		return w.Flush()
	}

	if err := emit(true); err != nil {
		return
	}
	if opt.Now && !opt.Poll {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-gone:
			return
		case <-changed:
			if opt.Now {
				continue // --now --poll: only a poll looks again
			}
			if err := emit(false); err != nil {
				return
			}
		case <-polls:
			if err := emit(opt.Now); err != nil {
				return
			}
		}
	}
}

// statusOf returns the status of the resources name names ("" or
// "all": every one), by name.
func (d *Daemon) statusOf(name string) map[string]status.Resource {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := map[string]status.Resource{}
	for _, r := range d.resources {
		if name == "" || name == "all" || r.Name() == name {
			out[r.Name()] = r.Status()
		}
	}
	return out
}

// configured reports whether this node hosts a resource called name.
func (d *Daemon) configured(name string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ok := d.byName[name]
	return ok
}

// Events2 connects to the daemon's control socket at path and copies the
// events2 stream of resource (or "all") to out until the daemon ends it.
// With opt.Poll, in is copied to the daemon (its "n" lines ask for a
// poll) and its end ends the stream.
func Events2(path, resource string, opt Events2Request, in io.Reader, out io.Writer) error {
	nc, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return fmt.Errorf("cannot reach the twinblock daemon at %s (is `twinblock daemon` running?): %w", path, err)
	}
	defer nc.Close()
	if err := json.NewEncoder(nc).Encode(Request{Verb: "events2", Resource: resource, Events2: &opt}); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	br := bufio.NewReader(nc)
	head, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("control socket %s: reading the answer: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(head, &resp); err != nil {
		return fmt.Errorf("control socket %s: reading the answer: %w", path, err)
	}
	if resp.Error != "" {
		return &ResponseError{Msg: resp.Error}
	}
	if opt.Poll && in != nil {
		go func() {
			_, _ = io.Copy(nc, in)
			if uc, ok := nc.(*net.UnixConn); ok {
				_ = uc.CloseWrite() // the end of in ends the stream
			}
		}()
	}
	if _, err := io.Copy(out, br); err != nil {
		return fmt.Errorf("events2: %w", err)
	}
	return nil
}

// ResponseError is a daemon's refusal, as its Response carried it.
type ResponseError struct{ Msg string }

func (e *ResponseError) Error() string { return e.Msg }
