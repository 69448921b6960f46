package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twinblock/twinblock/nbd"
)

// exporter serves a Primary's NBD export. The Ready loop opens it when
// the IOMode says Serve and closes it otherwise (applyPath); it reads
// Sessions for the state machine's open count and the status.
type exporter interface {
	// Open starts serving, if not already; an error means nobody can
	// reach the export (the promotion that asked fails).
	Open() error
	// Close stops serving: no new session, and the open ones end once
	// their requests in flight are answered. It may wait for the data
	// path (run calls it inside await).
	Close()
	// Sessions is the number of NBD sessions open: the device's openers.
	Sessions() int
}

// nbdExporter is the real exporter: an nbd.Server on nbd-listen.
type nbdExporter struct {
	name   string
	listen string // nbd-listen, host:port or unix:PATH
	net    Network
	dev    *device
	log    *slog.Logger
	wg     *sync.WaitGroup // the resource's: Serve's goroutine
	// promote is asked when a client opens the export on a node that
	// does not serve (auto-promote); an error refuses the client.
	promote func() error

	srv *nbd.Server // nil: not serving
	ln  net.Listener
}

// Open implements exporter.
func (e *nbdExporter) Open() error {
	if e.srv != nil {
		return nil
	}
	network, addr := "tcp", e.listen
	if strings.HasPrefix(addr, "unix:") {
		network, addr = "unix", strings.TrimPrefix(addr, "unix:")
	}
	ln, err := e.net.Listen(network, addr)
	if err != nil {
		return fmt.Errorf("%s: cannot serve the NBD export on %s: %w", e.name, e.listen, err)
	}
	srv, err := nbd.NewServer(nbd.Options{Catalog: &catalog{name: e.name, dev: e.dev, promote: e.promote}, Logger: e.log})
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("%s: nbd server: %w", e.name, err)
	}
	e.srv, e.ln = srv, ln
	e.log.Info("serving the NBD export", "listen", e.listen, "export", e.name)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		_ = srv.Serve(ln)
	}()
	return nil
}

// Close implements exporter (after demotion no client is left: the
// state machine refuses to demote while one is connected).
func (e *nbdExporter) Close() {
	if e.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx)
	// Shutdown closes the listeners Serve has taken; one whose Serve
	// goroutine had not started yet is closed here, or the address
	// would stay taken and the next promotion fail (torture seed
	// 3459862671850880973).
	_ = e.ln.Close()
	e.srv, e.ln = nil, nil
}

// Sessions implements exporter.
func (e *nbdExporter) Sessions() int {
	if e.srv == nil {
		return 0
	}
	return e.srv.Sessions(e.name)
}

// catalog serves the resource's one export and counts its sessions.
type catalog struct {
	name    string
	dev     *device
	promote func() error // nil: a node that does not serve refuses
}

func (c *catalog) export() *nbd.Export {
	return &nbd.Export{Name: c.name, Description: "twinblock resource " + c.name, Device: c.dev}
}

func (c *catalog) Lookup(name string) (*nbd.Export, error) {
	if name != "" && name != c.name {
		return nil, nbd.ErrUnknownExport
	}
	if c.promote != nil {
		// auto-promote: promoted now, if it is not Primary (and told of
		// the client in any case, for the demotion after the last).
		if err := c.promote(); err != nil {
			return nil, fmt.Errorf("%s: this node is not Primary, and auto-promote failed: %w", c.name, err)
		}
	}
	if !c.dev.serving.Load() {
		return nil, fmt.Errorf("%s: this node is not Primary; twinblock serves the export only on the Primary", c.name)
	}
	return c.export(), nil
}

func (c *catalog) List() []*nbd.Export { return []*nbd.Export{c.export()} }
