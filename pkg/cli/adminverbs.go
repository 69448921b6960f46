package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/pkg/daemon"
	"github.com/twinblock/twinblock/pkg/status"
)

// newDaemonCmd is `twinblock daemon`: the node in the foreground.
func newDaemonCmd(g *globals) *cobra.Command {
	var statusFile, metrics, pprofAddr, stateDir string
	var procs int
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run this node: host its resources, serve the control socket, write the status file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			warn := func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), s) }
			cfg, err := g.loadConfig(warn)
			if err != nil {
				return err
			}
			nodeName, err := g.nodeName()
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)).With("node", nodeName)
			d, err := daemon.New(daemon.Options{Config: cfg, Node: nodeName, Control: g.control, StatusFile: statusFile, StateDir: stateDir, Metrics: metrics, Pprof: pprofAddr, Procs: procs, Logger: log})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			// SIGHUP reloads the configuration file (adjust all), as
			// `systemctl reload` sends it; it no longer ends the daemon.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						_ = d.Reload(ctx) // logged by Reload
					}
				}
			}()
			return d.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&statusFile, "status-file", "/run/twinblock/status", "where to keep the /proc/drbd-format status")
	cmd.Flags().StringVar(&stateDir, "state-dir", "/var/lib/twinblock", "where quorum resources keep their group's raft state (STATE-DIR/quorum/RES)")
	cmd.Flags().IntVar(&procs, "procs", 0, "CPUs to run Go code on (GOMAXPROCS); 0: adapt to the open NBD sessions and running resyncs, at most all")
	cmd.Flags().StringVar(&pprofAddr, "pprof", "", "serve Go's profiler (net/http/pprof) at http://ADDR/debug/pprof/ (host:port, loopback only: for profiling under load)")
	cmd.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics (host:port; drbd-reactor's metric names)")
	return cmd
}

// call sends one request to the daemon and turns its error into ours.
func call(g *globals, req daemon.Request) (*daemon.Response, error) {
	resp, err := daemon.Call(g.control, req, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	if resp.NoSuchResource {
		return nil, &exitError{code: exitNotUp, err: errors.New(resp.Error)}
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("%s", resp.Error)
	}
	return resp, nil
}

// newStateVerb is one of the verbs that change state (up, down, attach,
// detach, connect, disconnect, primary, secondary).
func newStateVerb(g *globals, verb, short string) *cobra.Command {
	var force, discard bool
	cmd := &cobra.Command{
		Use:   verb + " RESOURCE|all",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.dryRun {
				return dryRun(cmd, args, "force", "overwrite-data-of-peer", "discard-my-data")
			}
			_, err := call(g, daemon.Request{Verb: verb, Resource: args[0], Force: force, DiscardMyData: discard})
			return err
		},
	}
	switch verb {
	case "primary":
		cmd.Flags().BoolVar(&force, "force", false, "promote even without UpToDate data: this node's data becomes the good copy")
		cmd.Flags().BoolVar(&force, "overwrite-data-of-peer", false, "alias of --force (DRBD 8.3)")
	case "secondary":
		cmd.Flags().BoolVar(&force, "force", false, "demote even with NBD clients connected: their requests, held ones included, fail")
	case "connect", "up":
		cmd.Flags().BoolVar(&discard, "discard-my-data", false, "this node is the split brain's victim: its changes since the split are replaced by the peer's (bitmap-based resync)")
	}
	return cmd
}

// newQueryVerb is role, cstate or dstate: one line per resource, as
// drbdadm prints them.
func newQueryVerb(g *globals, verb, short string, line func(status.Resource) string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " RESOURCE|all",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(g, daemon.Request{Verb: verb, Resource: args[0]})
			if err != nil {
				return err
			}
			up, down := splitUp(resp.Resources)
			for _, r := range up {
				fmt.Fprintln(cmd.OutOrStdout(), line(r))
			}
			if len(down) > 0 {
				return notUp(down)
			}
			return nil
		},
	}
}

// splitUp separates the resources that are up from the names of those
// that are not.
func splitUp(rs []status.Resource) (up []status.Resource, down []string) {
	for _, r := range rs {
		if r.Configured {
			up = append(up, r)
		} else {
			down = append(down, r.Name)
		}
	}
	return up, down
}

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON, watch, verbose bool
	cmd := &cobra.Command{
		Use:   "status [RESOURCE|all]",
		Short: "Show the resources' state (drbdadm status layout; --json for scripts)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "all"
			if len(args) == 1 {
				name = args[0]
			}
			show := func() error {
				resp, err := call(g, daemon.Request{Verb: "status", Resource: name})
				if err != nil {
					return err
				}
				// A resource that is not up: its message on stderr and
				// exit code 10, as drbdadm; the others print.
				up, down := splitUp(resp.Resources)
				if len(down) > 0 && watch {
					up = resp.Resources // --watch shows them as they come up
					down = nil
				}
				if asJSON {
					err = status.WriteJSON(cmd.OutOrStdout(), up)
				} else if len(up) > 0 || len(down) == 0 {
					err = status.WriteStatus(cmd.OutOrStdout(), up, verbose)
				}
				if err != nil {
					return err
				}
				if watch {
					for _, r := range resp.Resources {
						if bar := status.ProgressBar(r, 40); bar != "" {
							fmt.Fprintln(cmd.OutOrStdout(), bar)
						}
					}
				}
				if len(down) > 0 {
					return notUp(down)
				}
				return nil
			}
			if !watch {
				return show()
			}
			ctx := cmd.Context()
			for {
				fmt.Fprint(cmd.OutOrStdout(), "\033[H\033[2J")
				if err := show(); err != nil {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	cmd.Flags().BoolVar(&watch, "watch", false, "redraw every second until interrupted, with a progress bar while a resync runs")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "add the statistics")
	return cmd
}

func adminVerbs(g *globals) []*cobra.Command {
	return []*cobra.Command{
		newDaemonCmd(g),
		newStateVerb(g, "up", "Attach the disk and connect to the peer"),
		newStateVerb(g, "down", "Demote, disconnect and detach"),
		newStateVerb(g, "attach", "Attach the backing disk and its metadata"),
		newStateVerb(g, "detach", "Detach the backing disk"),
		newStateVerb(g, "connect", "Connect to the peer"),
		newStateVerb(g, "disconnect", "Drop the connection to the peer"),
		newStateVerb(g, "primary", "Become Primary: serve the NBD export"),
		newStateVerb(g, "secondary", "Become Secondary"),
		newStateVerb(g, "outdate", "Mark this node's data Outdated (not while connected or Primary)"),
		newWaitCmd(g, "wait-connect"),
		newWaitCmd(g, "wait-sync"),
		newStateVerb(g, "suspend-io", "Hold every request to the device until resume-io"),
		newStateVerb(g, "resume-io", "Let the requests held by suspend-io run"),
		newStateVerb(g, "verify", "Start online verify against the peer (needs verify-alg)"),
		newStateVerb(g, "invalidate", "Discard this node's data: full resync from the peer"),
		newStateVerb(g, "invalidate-remote", "Discard the peer's data: full resync from this node"),
		newStateVerb(g, "pause-sync", "Pause the resync (user pause flag)"),
		newStateVerb(g, "resume-sync", "Resume a resync paused with pause-sync"),
		newQueryVerb(g, "role", "Print Role/PeerRole", func(r status.Resource) string { return r.Role + "/" + r.PeerRole }),
		newQueryVerb(g, "cstate", "Print the connection state", func(r status.Resource) string { return r.Conn }),
		newQueryVerb(g, "dstate", "Print Disk/PeerDisk", func(r status.Resource) string { return r.Disk + "/" + r.PeerDisk }),
		newStatusCmd(g),
		newEvents2Cmd(g),
		newAdjustCmd(g),
		newResizeCmd(g),
		newExplainCmd(g),
		newRestoreDiscardedCmd(g),
	}
}

// newExplainCmd is twinblock explain: the last sync handshake in words,
// and for a split brain the commands that resolve it.
func newExplainCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "explain RESOURCE|all",
		Short: "Explain the last connection handshake: both generation tuples, the rule, what happens, how to resolve a split brain",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(g, daemon.Request{Verb: "explain", Resource: args[0]})
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), resp.Text)
			return err
		},
	}
}
