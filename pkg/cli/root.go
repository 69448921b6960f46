package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/pkg/daemon"
)

// globals are the flags every verb accepts (DESIGN.md).
type globals struct {
	config  string
	node    string
	control string
	dryRun  bool // -d/--dry-run: the verbs that change state say what they would do
}

// dryRun is drbdadm's -d for a verb that changes state: it prints the
// verb with its arguments and the flags given (of names), and does
// nothing.
func dryRun(cmd *cobra.Command, args []string, names ...string) error {
	words := append([]string{"twinblock", cmd.Name()}, args...)
	for _, n := range names {
		if f := cmd.Flags().Lookup(n); f != nil && f.Changed {
			words = append(words, "--"+n+"="+f.Value.String())
		}
	}
	_, err := fmt.Fprintf(cmd.OutOrStdout(), "dry run, nothing done: %s\n", strings.Join(words, " "))
	return err
}

// Execute runs the command line args and returns the exit status.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return execute(ctx, args, nil, stdout, stderr)
}

// execute is Execute with stdin (nil: the process's).
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	if stdin != nil {
		root.SetIn(stdin)
	}
	root.SetArgs(drbdOldOrder(args))
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "twinblock: %s\n", strings.TrimPrefix(err.Error(), "twinblock: "))
		var ec *exitError
		if errors.As(err, &ec) {
			return ec.code
		}
		return 1
	}
	return 0
}

// exitNotUp is drbdadm's exit code for a resource that is not up
// ("No such resource").
const exitNotUp = 10

// exitError is an error with drbdadm's exit code for it.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// notUp is the error for resources that are not up: "NAME: No such
// resource", as drbdsetup says, and exit code 10.
func notUp(names []string) error {
	msgs := make([]string, len(names))
	for i, n := range names {
		msgs[i] = n + ": No such resource (not up: twinblock up " + n + ")"
	}
	return &exitError{code: exitNotUp, err: errors.New(strings.Join(msgs, "; "))}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var g globals
	root := &cobra.Command{
		Use:           "twinblock",
		Short:         "A replicated block device in userspace, served over NBD",
		Version:       daemon.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVarP(&g.config, "config", "c", "/etc/twinblock/twinblock.conf", "configuration file")
	pf.StringVar(&g.node, "node", "", "which `on NAME` section is this host (default: the hostname)")
	pf.StringVar(&g.control, "control", "/run/twinblock/control.sock", "the daemon's control socket")
	pf.BoolVarP(&g.dryRun, "dry-run", "d", false, "print what a verb that changes state would do, and do nothing")

	root.AddCommand(newServeCmd(), newDemoCmd(), newDumpConfigCmd(&g),
		newCreateMDCmd(&g), newDumpMDCmd(&g), newShowGICmd(&g), newGetGICmd(&g), newNewCurrentUUIDCmd(&g),
		newApplyALCmd(&g), newWipeMDCmd(&g))
	root.AddCommand(adminVerbs(&g)...)
	addResourceCompletion(root, &g) // last: it walks every verb added above
	return root
}
