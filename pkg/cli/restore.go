package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/nbd/client"
	"github.com/twinblock/twinblock/pkg/backup"
)

// newRestoreDiscardedCmd is twinblock restore-discarded: the blocks a
// split brain's victim saved (net { backup-discarded yes; }) written
// back through this node's NBD export.
func newRestoreDiscardedCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "restore-discarded RESOURCE FILE.img [--force]",
		Short: "Write back the blocks a split brain's victim saved (backup-discarded) through this node's export",
		Long: `restore-discarded undoes the discard of a split brain's victim: it reads
FILE.img.blocks, the index of the blocks the victim saved while its resync
overwrote them (net { backup-discarded yes; }), and writes each of them from
FILE.img through the resource's NBD export on this node, then flushes.

This node must be Primary: the restored blocks go through the replicated
device, so the peer gets them like any write. To make the victim's data win
after all, promote the node that should serve it and run restore-discarded
there with the victim's file (copied over first if the victim is the other
node).

An index without its "complete" line (the resync did not finish) is refused
unless --force is given.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == "all" {
				return errors.New("restore-discarded takes one resource, not all")
			}
			ts, err := g.targets(args[0], func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), s) })
			if err != nil {
				return err
			}
			t := ts[0]
			return restoreDiscarded(cmd.Context(), cmd.OutOrStdout(), t.res.Name, t.self.NBDListen, args[1], force)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "restore from an incomplete index (the resync that discarded the blocks did not finish)")
	return cmd
}

// restoreDiscarded writes the saved blocks of img through the export
// res served at addr (pkg/backup does the copy).
func restoreDiscarded(ctx context.Context, w io.Writer, res, addr, img string, force bool) error {
	im, err := backup.OpenImage(img, force)
	if err != nil {
		return fmt.Errorf("%s: %w", res, err)
	}
	defer im.Close()
	c, err := client.Dial(ctx, dialAddr(addr), client.Options{Export: res})
	if err != nil {
		return fmt.Errorf("%s: cannot open the NBD export at %s (restore-discarded writes through this node, which must be Primary): %w", res, addr, err)
	}
	defer c.Close()
	if c.Size() != im.Size() {
		return fmt.Errorf("%s: %s holds %d bytes, the export %d: not an image of this resource's data", res, img, im.Size(), c.Size())
	}
	_, _, maxPayload := c.BlockSizes()
	blocks, bytes, err := im.Restore(c, int64(min(max(maxPayload, 4096), 1<<20)))
	if err != nil {
		return fmt.Errorf("%s: through the export: %w", res, err)
	}
	_, err = fmt.Fprintf(w, "restored %d blocks (%d bytes) from %s\n", blocks, bytes, img)
	return err
}

// dialAddr is where to reach a listen address from this host: an
// unspecified host (0.0.0.0, [::], none) means the loopback.
func dialAddr(listen string) string {
	if strings.HasPrefix(listen, "unix:") {
		return listen
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if ip != nil && ip.To4() == nil {
			return net.JoinHostPort("::1", port)
		}
		return net.JoinHostPort("127.0.0.1", port)
	}
	return listen
}
