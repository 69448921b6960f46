package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/twinblock/twinblock/nbd/client"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/meta"
)

// demoConf is the embedded configuration of `make demo`: two nodes on
// 127.0.0.1 and 127.0.0.2, protocol C, authenticated.
//
//go:embed demo.conf
var demoConf string

// runReplicatedDemo is `make demo`: two daemons on loopback, the DRBD
// procedure (create-md, up, primary --force), writes through NBD, the
// status file, and the Secondary's data compared with the Primary's.
func runReplicatedDemo(ctx context.Context, out io.Writer, dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	step := func(format string, a ...any) { fmt.Fprintf(out, "==> "+format+"\n", a...) }
	ports := map[string]string{}
	for _, k := range []string{"a", "b", "nbd"} {
		host := "127.0.0.1"
		if k == "b" {
			host = "127.0.0.2"
		}
		l, err := net.Listen("tcp", host+":0")
		if err != nil {
			return fmt.Errorf("demo: %w (127.0.0.2 must be usable: it is loopback on Linux)", err)
		}
		ports[k] = l.Addr().String()
		l.Close()
	}
	disks := map[string]string{"alpha": filepath.Join(dir, "alpha.img"), "beta": filepath.Join(dir, "beta.img")}
	for _, p := range disks {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return err
		}
		if err := os.Truncate(p, demoSize); err != nil {
			return err
		}
	}
	conf := strings.NewReplacer("@ADDR_A@", ports["a"], "@ADDR_B@", ports["b"], "@NBD_A@", ports["nbd"],
		"@DISK_A@", disks["alpha"], "@DISK_B@", disks["beta"]).Replace(demoConf)
	confPath := filepath.Join(dir, "twinblock.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(out, "configuration (%s):\n%s\n", confPath, conf)

	tb := func(node string, args ...string) (string, error) {
		full := append([]string{"--config", confPath, "--node", node, "--control", filepath.Join(dir, node+".sock")}, args...)
		o, err := exec.CommandContext(ctx, self, full...).CombinedOutput()
		if err != nil {
			return string(o), fmt.Errorf("twinblock %s (on %s): %v: %s", strings.Join(args, " "), node, err, strings.TrimSpace(string(o)))
		}
		return string(o), nil
	}
	show := func(node string, args ...string) error {
		fmt.Fprintf(out, "    %s# twinblock %s\n", node, strings.Join(args, " "))
		o, err := tb(node, args...)
		for _, l := range strings.Split(strings.TrimRight(o, "\n"), "\n") {
			if l != "" {
				fmt.Fprintf(out, "      %s\n", l)
			}
		}
		return err
	}

	step("create-md on both nodes")
	for _, n := range []string{"alpha", "beta"} {
		if err := show(n, "create-md", "r0"); err != nil {
			return err
		}
	}
	step("starting the daemons of alpha (127.0.0.1) and beta (127.0.0.2)")
	daemons := map[string]*child{}
	defer func() {
		for _, d := range daemons {
			d.kill()
		}
	}()
	for _, n := range []string{"alpha", "beta"} {
		d, err := startDaemon(ctx, self, confPath, n, dir)
		if err != nil {
			return err
		}
		daemons[n] = d
	}
	step("up on both nodes")
	for _, n := range []string{"alpha", "beta"} {
		if err := show(n, "up", "r0"); err != nil {
			return err
		}
	}
	if err := waitState(ctx, tb, "alpha", "cstate", "Connected"); err != nil {
		return err
	}
	if err := show("alpha", "status", "r0"); err != nil {
		return err
	}
	step("primary without --force is refused: nobody has UpToDate data yet")
	if err := show("alpha", "primary", "r0"); err == nil {
		return errors.New("demo: a promotion without UpToDate data succeeded")
	}
	step("primary --force on alpha (the DRBD procedure for the first promotion)")
	if err := show("alpha", "primary", "--force", "r0"); err != nil {
		return err
	}
	if err := waitState(ctx, tb, "beta", "role", "Secondary/Primary"); err != nil {
		return err
	}
	if err := show("alpha", "status", "r0"); err != nil {
		return err
	}

	c, err := client.Dial(ctx, ports["nbd"], client.Options{Export: "r0"})
	if err != nil {
		return err
	}
	size := c.Size()
	fmt.Fprintf(out, "    NBD export r0 on %s: %d bytes, flags %s\n", ports["nbd"], size, flagNames(c.Flags()))
	want := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{'t', 'w', 'i', 'n', 's'})
	n := min(int(size), 48<<20) &^ (1<<20 - 1)
	_, _ = rng.Read(want[:n])
	step("writing %d MiB through NBD on alpha (1 MiB requests, 8 in flight), each on both disks before the ack (protocol C)", n>>20)
	start := time.Now()
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for off := 0; off < n; off += 1 << 20 {
		g.Go(func() error { return c.WriteAt(want[off:off+1<<20], int64(off), false) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(out, "    wrote %d MiB in %v (%.0f MiB/s)\n", n>>20, el.Round(time.Millisecond), float64(n>>20)/el.Seconds())
	step("FLUSH (a barrier on both nodes), TRIM and WRITE_ZEROES (replicated as commands)")
	if err := c.Flush(); err != nil {
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
	if err := c.Flush(); err != nil {
		return err
	}
	if err := verifyThrough(c, want); err != nil {
		return err
	}
	fmt.Fprintf(out, "    read back through NBD: sha256 %x\n", sha256.Sum256(want))
	time.Sleep(1100 * time.Millisecond) // the file is rewritten at least once a second
	step("the status file of alpha (/proc/drbd format)")
	st, err := os.ReadFile(filepath.Join(dir, "alpha.status"))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s", st)
	step("secondary is refused while an NBD client is connected")
	if err := show("alpha", "secondary", "r0"); err == nil {
		return errors.New("demo: demoted with a client connected")
	}
	if err := c.Close(); err != nil {
		return err
	}
	step("down on both nodes, then the two data areas compared")
	for _, n := range []string{"alpha", "beta"} {
		if err := show(n, "down", "r0"); err != nil {
			return err
		}
	}
	sums := map[string][32]byte{}
	for node, p := range disks {
		data, err := readDataArea(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(data, want) {
			return fmt.Errorf("demo: %s's data area differs from what was written", node)
		}
		sums[node] = sha256.Sum256(data)
		fmt.Fprintf(out, "    %s %s: data area sha256 %x\n", node, p, sums[node])
	}
	for _, d := range daemons {
		if err := d.stop(); err != nil {
			return err
		}
	}
	step("demo OK: every write reached both nodes' disks; beta's data equals alpha's")
	fmt.Fprintln(out, "    (beta stays Inconsistent until a resync: the initial sync arrives with the resync issue)")
	return nil
}

// readDataArea reads what the export shows of a disk with internal
// metadata.
func readDataArea(path string) ([]byte, error) {
	d, err := disk.OpenFile(path, disk.FileOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	sb, _, err := meta.Probe(d, meta.InternalPlacement, path)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, sb.DataSize)
	return buf, d.ReadAt(buf, 0)
}

func waitState(ctx context.Context, tb func(string, ...string) (string, error), node, verb, want string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		o, _ := tb(node, verb, "r0")
		if strings.TrimSpace(o) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: %s %s is %q, expected %q", node, verb, strings.TrimSpace(o), want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func startDaemon(ctx context.Context, self, confPath, node, dir string) (*child, error) {
	sock := filepath.Join(dir, node+".sock")
	cmd := exec.CommandContext(ctx, self, "--config", confPath, "--node", node, "--control", sock,
		"daemon", "--status-file", filepath.Join(dir, node+".status"))
	logf, err := os.OpenFile(filepath.Join(dir, node+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := &child{cmd: cmd, done: make(chan error, 1)}
	go func() { ch.done <- cmd.Wait(); logf.Close() }()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return ch, nil
		}
	}
	ch.kill()
	b, _ := os.ReadFile(filepath.Join(dir, node+".log"))
	return nil, fmt.Errorf("demo: the daemon of %s did not start:\n%s", node, tail(b))
}

func tail(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}
