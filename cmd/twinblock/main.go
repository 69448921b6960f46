// Command twinblock is a replicated block device in userspace: DRBD's model
// served over the Network Block Device protocol. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/twinblock/twinblock/pkg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
