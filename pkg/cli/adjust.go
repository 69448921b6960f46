package cli

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/pkg/daemon"
)

// newAdjustCmd is `twinblock adjust RESOURCE|all`: the daemon applies
// the configuration file to the running resources (drbdadm adjust).
func newAdjustCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "adjust RESOURCE|all",
		Short: "Apply the configuration file to the running daemon: new resources up, removed ones down, changed settings applied",
		Long: `Makes the running resources match the configuration file, as drbdadm adjust:
a resource new in the file is created and brought up, one gone from it is taken
down and removed, changed net settings are applied over a reconnect (a Primary
keeps serving; its writes meanwhile are resynced), changed disk placement over a
detach and attach (refused on a Primary), and every resource named is brought
up. With -d/--dry-run it prints what it would do. SIGHUP to the daemon does
"adjust all" with the daemon's own file.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			warn := func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), s) }
			if _, err := g.loadConfig(warn); err != nil {
				return err // a file that does not load is not sent
			}
			path, err := filepath.Abs(g.config)
			if err != nil {
				return fmt.Errorf("adjust: %w", err)
			}
			resp, err := daemon.Call(g.control, daemon.Request{Verb: "adjust", Resource: args[0], ConfigPath: path, DryRun: g.dryRun}, 10*time.Minute)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.dryRun {
				fmt.Fprintln(out, "dry run, nothing done; adjust would:")
			}
			if resp.Text != "" {
				fmt.Fprintln(out, resp.Text)
			}
			if resp.Error != "" {
				return fmt.Errorf("%s", resp.Error)
			}
			return nil
		},
	}
}
