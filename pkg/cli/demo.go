package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/twinblock/twinblock/nbd"
	"github.com/twinblock/twinblock/nbd/client"
)

func newDemoCmd() *cobra.Command {
	var dir string
	var keep, single bool
	cmd := &cobra.Command{
		Use:    "demo",
		Short:  "Run the end-to-end demonstration (make demo)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				d, err := os.MkdirTemp("", "twinblock-demo-")
				if err != nil {
					return err
				}
				dir = d
				if !keep {
					defer os.RemoveAll(d)
				}
			}
			if single {
				return runDemo(cmd.Context(), cmd.OutOrStdout(), dir)
			}
			return runReplicatedDemo(cmd.Context(), cmd.OutOrStdout(), dir)
		},
	}
	cmd.Flags().BoolVar(&single, "single", false, "the single-node NBD demonstration (twinblock serve)")
	cmd.Flags().StringVar(&dir, "dir", "", "working directory (default: a new temporary one)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary directory")
	return cmd
}

const demoSize = 64 << 20

// runDemo is the single-node demonstration of the NBD front end: a real
// `twinblock serve` process, our own client writing through it, FLUSH,
// TRIM and WRITE_ZEROES, a restart, and the data verified by checksum on
// the wire and in the backing file. It grows into the two-node failover
// demo with the replication issues.
func runDemo(ctx context.Context, out io.Writer, dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(img, demoSize); err != nil {
		return err
	}
	step := func(format string, a ...any) { fmt.Fprintf(out, "==> "+format+"\n", a...) }

	step("starting: twinblock serve --disk %s --listen 127.0.0.1:0 --export demo", img)
	srv, addr, err := startServe(ctx, self, img, dir)
	if err != nil {
		return err
	}
	defer srv.kill()
	fmt.Fprintf(out, "    serving on %s\n", addr)

	c, err := client.Dial(ctx, addr, client.Options{Export: "demo", Structured: true})
	if err != nil {
		return err
	}
	minB, prefB, maxB := c.BlockSizes()
	fmt.Fprintf(out, "    export size %d, flags %s, block sizes %d/%d/%d\n", c.Size(), flagNames(c.Flags()), minB, prefB, maxB)

	// The expected image: 48 MiB of seeded random data, then a trimmed
	// and a zeroed range inside it.
	want := make([]byte, demoSize)
	rng := rand.NewChaCha8([32]byte{'t', 'w', 'i', 'n'})
	_, _ = rng.Read(want[:48<<20])

	step("writing 48 MiB through NBD (1 MiB requests, 8 in flight)")
	start := time.Now()
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for off := 0; off < 48<<20; off += 1 << 20 {
		g.Go(func() error { return c.WriteAt(want[off:off+1<<20], int64(off), false) })
		if (off>>20)%8 == 7 {
			fmt.Fprintf(out, "    %2d MiB queued\n", off>>20+1)
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(out, "    wrote 48 MiB in %v (%.0f MiB/s)\n", el.Round(time.Millisecond), 48/el.Seconds())

	step("FLUSH, then a FUA write, TRIM of 4 MiB and WRITE_ZEROES of 2 MiB")
	if err := c.Flush(); err != nil {
		return err
	}
	copy(want[50<<20:], bytes.Repeat([]byte("twinblock"), 1000))
	if err := c.WriteAt(want[50<<20:50<<20+9000], 50<<20, true); err != nil {
		return err
	}
	if err := c.Trim(8<<20, 4<<20, false); err != nil {
		return err
	}
	clear(want[8<<20 : 12<<20])
	if err := c.WriteZeroes(20<<20, 2<<20, true, true); err != nil {
		return err
	}
	clear(want[20<<20 : 22<<20])

	step("reading everything back through NBD")
	if err := verifyThrough(c, want); err != nil {
		return err
	}
	fmt.Fprintf(out, "    sha256 %x matches\n", sha256.Sum256(want))
	step("a write past the end gets an error reply, and the connection stays up")
	err = c.WriteAt(make([]byte, 4096), demoSize, false)
	fmt.Fprintf(out, "    write beyond the end: %v\n", err)
	if err == nil {
		return errors.New("demo: a write beyond the end succeeded")
	}
	if err := c.ReadAt(make([]byte, 4096), 0); err != nil {
		return fmt.Errorf("demo: connection unusable after an error reply: %w", err)
	}
	if err := c.Close(); err != nil {
		return err
	}

	step("stopping the server (SIGTERM) and checking the backing file")
	if err := srv.stop(); err != nil {
		return err
	}
	got, err := os.ReadFile(img)
	if err != nil {
		return err
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		return errors.New("demo: backing file differs from what was written")
	}
	fmt.Fprintf(out, "    %s: sha256 %x matches\n", img, sha256.Sum256(got))

	step("restarting the server and reading back once more")
	srv2, addr2, err := startServe(ctx, self, img, dir)
	if err != nil {
		return err
	}
	defer srv2.kill()
	c2, err := client.Dial(ctx, addr2, client.Options{Export: "demo"})
	if err != nil {
		return err
	}
	if err := verifyThrough(c2, want); err != nil {
		return err
	}
	if err := c2.Close(); err != nil {
		return err
	}
	if err := srv2.stop(); err != nil {
		return err
	}
	step("demo OK: every byte written through NBD read back, on the wire and on disk")
	return nil
}

func verifyThrough(c *client.Client, want []byte) error {
	buf := make([]byte, 4<<20)
	for off := 0; off < len(want); off += len(buf) {
		buf := buf[:min(len(buf), len(want)-off)]
		if err := c.ReadAt(buf, int64(off)); err != nil {
			return err
		}
		if !bytes.Equal(buf, want[off:off+len(buf)]) {
			return fmt.Errorf("demo: data read back at %d differs", off)
		}
	}
	return nil
}

func flagNames(f uint16) string {
	names := []struct {
		bit  uint16
		name string
	}{
		{nbd.FlagHasFlags, "HAS_FLAGS"}, {nbd.FlagReadOnly, "READ_ONLY"}, {nbd.FlagSendFlush, "SEND_FLUSH"},
		{nbd.FlagSendFUA, "SEND_FUA"}, {nbd.FlagSendTrim, "SEND_TRIM"}, {nbd.FlagSendWriteZeroes, "SEND_WRITE_ZEROES"},
		{nbd.FlagSendDF, "SEND_DF"}, {nbd.FlagCanMultiConn, "CAN_MULTI_CONN"},
	}
	var out []string
	for _, n := range names {
		if f&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return strings.Join(out, "|")
}

// child is a twinblock process started by the demo.
type child struct {
	cmd  *exec.Cmd
	done chan error
}

func startServe(ctx context.Context, self, img, dir string) (*child, string, error) {
	cmd := exec.CommandContext(ctx, self, "serve", "--disk", img, "--listen", "127.0.0.1:0", "--export", "demo")
	logf, err := os.OpenFile(filepath.Join(dir, "serve.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, "", err
	}
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(logf, pw)
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	ch := &child{cmd: cmd, done: make(chan error, 1)}
	go func() { ch.done <- cmd.Wait(); pw.Close(); logf.Close() }()
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				addrc <- strings.Fields(rest)[0]
			}
		}
		close(addrc)
	}()
	select {
	case a, ok := <-addrc:
		if !ok {
			return nil, "", errors.New("demo: serve exited before listening (see serve.log)")
		}
		go io.Copy(io.Discard, pr)
		return ch, a, nil
	case <-time.After(10 * time.Second):
		ch.kill()
		return nil, "", errors.New("demo: serve did not start listening within 10 s")
	}
}

func (c *child) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		return err
	case <-time.After(30 * time.Second):
		c.kill()
		return errors.New("demo: serve did not stop on SIGTERM")
	}
}

func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
	}
}
