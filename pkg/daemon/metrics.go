package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"time"

	"github.com/twinblock/twinblock/pkg/metrics"
)

// serveMetrics serves the Prometheus endpoint (GET /metrics, text format
// 0.0.4) on ln until ctx ends.
func (d *Daemon) serveMetrics(ctx context.Context, ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		var b bytes.Buffer
		if _, err := d.exposition().WriteTo(&b); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(b.Bytes())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "twinblock daemon: metrics at /metrics")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Error("metrics endpoint stopped", "addr", ln.Addr(), "err", err)
	}
}

// exposition gathers the metrics of every resource this node hosts.
func (d *Daemon) exposition() *metrics.Exposition {
	e := metrics.NewExposition()
	d.mu.RLock()
	rs := slices.Clone(d.resources)
	d.mu.RUnlock()
	metrics.Header(e, Version, len(rs))
	for _, r := range rs {
		requests, repl := r.Latency()
		metrics.AddResource(e, r.Status(), metrics.Latency{Requests: requests, Replication: repl})
	}
	return e
}

// servePprof serves net/http/pprof's handlers on ln until ctx ends.
func (d *Daemon) servePprof(ctx context.Context, ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Error("profiling endpoint stopped", "addr", ln.Addr(), "err", err)
	}
}
