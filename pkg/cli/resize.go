package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/pkg/daemon"
)

// newResizeCmd is `twinblock resize RESOURCE|all`: drbdadm resize, an
// online grow after the backing disks grew.
func newResizeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resize RESOURCE|all",
		Short: "Grow onto a backing disk that grew (online): the metadata moves to the new end; Secondary first, then the Primary",
		Long: `After the backing disks grew (lvextend, truncate) on both nodes, run resize on
the Secondary, then on the Primary. The Secondary disconnects, moves its
metadata to the new end and reconnects; the Primary serves from its peer
while it does the same, then resyncs its disk from the peer. New NBD
clients see the larger size once both nodes grew; connected ones keep the
size they saw. Only meta-disk internal is resized; shrinking is refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.dryRun {
				return dryRun(cmd, args)
			}
			resp, err := call(g, daemon.Request{Verb: "resize", Resource: args[0]})
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), resp.Text)
			return err
		},
	}
}
