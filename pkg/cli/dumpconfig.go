package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/pkg/config"
)

// newDumpConfigCmd is `twinblock dump-config`: load the configuration
// (g.config), print its warnings to stderr and the normalized text to
// stdout. A configuration error is returned as is, so the one line on
// stderr is "twinblock: FILE:LINE: message".
func newDumpConfigCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "dump-config [RESOURCE|all]",
		Aliases: []string{"dump"},
		Short:   "Parse the configuration and print it normalized (drbdadm dump)",
		Long: `dump-config reads the configuration (--config) and every file it includes,
checks all of it, and prints it as normalized drbd.conf text: each resource
with common merged in, DRBD 8.3 syncer keywords where 8.4 keeps them, and
each host's address, device, disk, meta-disk and nbd-listen written out.
Keywords twinblock accepts but does not implement are reported on stderr,
one "warning: FILE:LINE: ..." line each. An error names the file and line.
With a resource name, only that resource is printed (after the global
section), as drbdadm dump RESOURCE.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(g.config)
			if err != nil {
				return err
			}
			if len(args) == 1 && args[0] != "all" {
				r, err := cfg.Resource(args[0])
				if err != nil {
					return err
				}
				cfg.Resources = []*config.Resource{r}
			}
			for _, w := range cfg.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			if err := cfg.Dump(cmd.OutOrStdout()); err != nil {
				return fmt.Errorf("dump-config: %w", err)
			}
			return nil
		},
	}
}
