package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/pkg/daemon"
)

// newEvents2Cmd is `twinblock events2`: the state changes of the
// resources as a stream of lines in drbdsetup events2's format.
func newEvents2Cmd(g *globals) *cobra.Command {
	var opt daemon.Events2Request
	cmd := &cobra.Command{
		Use:   "events2 [RESOURCE|all]",
		Short: "Stream the state changes in DRBD 9's events2 line format (exists/create/change/destroy …)",
		Long: `Prints the state of the resources as "exists" lines, then "exists -", then
one line per object that is created, changes or is destroyed, in the format of
drbdsetup events2 (DRBD 9): resource, connection, device, peer-device and path
objects with KEY:VALUE fields. It runs until interrupted or the daemon stops.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res := "all"
			if len(args) == 1 {
				res = args[0]
			}
			err := daemon.Events2(g.control, res, opt, cmd.InOrStdin(), cmd.OutOrStdout())
			var re *daemon.ResponseError
			if errors.As(err, &re) {
				return &exitError{code: exitNotUp, err: fmt.Errorf("%s", re.Msg)}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opt.Now, "now", false, "print the current state (exists lines and \"exists -\") and exit")
	f.BoolVar(&opt.Timestamps, "timestamps", false, "prefix every line with the time (ISO 8601, microseconds)")
	f.BoolVar(&opt.Statistics, "statistics", false, "add the counters (read, written, sent, received, out-of-sync, in flight …)")
	f.BoolVar(&opt.Full, "full", false, "print every field of an object on each change line (implies --statistics)")
	f.BoolVar(&opt.Poll, "poll", false, "read stdin: \"n\" prints what changed since the last look (with --now, the whole state); EOF ends")
	return cmd
}
