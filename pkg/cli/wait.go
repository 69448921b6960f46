package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/daemon"
	"github.com/twinblock/twinblock/pkg/status"
)

// waitPoll paces wait-connect's and wait-sync's look at the status.
const waitPoll = 200 * time.Millisecond

// newWaitCmd is drbdadm's wait-connect or wait-sync: for each resource
// named, it waits until the peer is connected (wait-connect: any
// connected state, a resync included) or until the pair is in sync
// (wait-sync: Connected, UpToDate/UpToDate). It waits at most the
// startup section's wfc-timeout; degr-wfc-timeout instead when this
// node went on without its peer (its bitmap marks blocks), and
// outdated-wfc-timeout when its disk is Outdated; 0 waits forever.
// --wfc-timeout overrides them. A resource that is not up exits 10.
func newWaitCmd(g *globals, verb string) *cobra.Command {
	var override int64
	short := "Wait until the peer is connected (startup section's wfc-timeout)"
	if verb == "wait-sync" {
		short = "Wait until the pair is connected and in sync (startup section's wfc-timeout)"
	}
	cmd := &cobra.Command{
		Use:   verb + " RESOURCE|all",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := g.targets(args[0], func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), s) })
			if err != nil {
				return err
			}
			for _, t := range ts {
				if err := waitFor(cmd.Context(), g, t.res, verb == "wait-sync", override); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().Int64VarP(&override, "wfc-timeout", "t", -1, "seconds to wait, 0 for ever (default: the startup section's)")
	return cmd
}

// waitTimeout is the startup timeout that applies to a node in state s.
func waitTimeout(res *config.Resource, s status.Resource) (time.Duration, string) {
	return res.WaitTimeout(s.Disk == "Outdated", s.OutOfSync > 0)
}

func waitFor(ctx context.Context, g *globals, res *config.Resource, synced bool, override int64) error {
	var deadline time.Time
	var d time.Duration
	var key string
	for first := true; ; first = false {
		resp, err := call(g, daemon.Request{Verb: "status", Resource: res.Name})
		if err != nil {
			return err
		}
		if len(resp.Resources) != 1 {
			return fmt.Errorf("%s: the daemon answered with %d resources", res.Name, len(resp.Resources))
		}
		s := resp.Resources[0]
		if !s.Configured {
			return notUp([]string{s.Name})
		}
		conn, _ := status.DRBD9Conn(s.Conn)
		connected := conn == "Connected"
		if connected && (!synced || s.Conn == "Connected" && s.Disk == "UpToDate" && s.PeerDisk == "UpToDate") {
			return nil
		}
		if first {
			d, key = waitTimeout(res, s)
			if override >= 0 {
				d, key = time.Duration(override)*time.Second, "--wfc-timeout"
			}
			if d > 0 {
				deadline = time.Now().Add(d)
			}
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return fmt.Errorf("%s: %s of %v passed: %s %s/%s %s/%s", res.Name, key, d, s.Conn, s.Role, s.PeerRole, s.Disk, s.PeerDisk)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(waitPoll):
		}
	}
}
