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

// runReplicatedDemo is `make demo`: two daemons on loopback and the DRBD
// procedures on them: create-md, up, primary --force and the initial
// sync (its progress in the status file), writes through NBD, the
// Primary killed and beta promoted (failover), alpha back as the sync
// target of what changed, and the two data areas compared.
func runReplicatedDemo(ctx context.Context, out io.Writer, dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	step := func(format string, a ...any) { fmt.Fprintf(out, "==> "+format+"\n", a...) }
	ports := map[string]string{}
	for _, k := range []string{"a", "b", "nbd-a", "nbd-b"} {
		host := "127.0.0.1"
		if strings.HasSuffix(k, "b") {
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
	// alpha's disk already holds data (say, an existing filesystem):
	// the initial sync must copy it to beta.
	want := make([]byte, demoSize)
	rng := rand.NewChaCha8([32]byte{'t', 'w', 'i', 'n', 's'})
	_, _ = rng.Read(want[:existingData])
	if err := writeFileAt(disks["alpha"], want[:existingData], 0); err != nil {
		return err
	}
	conf := strings.NewReplacer("@ADDR_A@", ports["a"], "@ADDR_B@", ports["b"], "@NBD_A@", ports["nbd-a"], "@NBD_B@", ports["nbd-b"],
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
	statusFile := func(node string) string {
		b, _ := os.ReadFile(filepath.Join(dir, node+".status"))
		return string(b)
	}

	step("create-md on both nodes (alpha's disk already holds %d MiB of data)", existingData>>20)
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
	step("primary --force on alpha: alpha's data wins, the initial full sync to beta starts")
	if err := show("alpha", "primary", "--force", "r0"); err != nil {
		return err
	}
	step("the initial sync, as alpha's status file (/proc/drbd format) shows it")
	shown := 0
	for deadline := time.Now().Add(2 * time.Minute); ; {
		st := statusFile("alpha")
		if strings.Contains(st, "sync'ed:") && shown < 8 {
			lines := strings.Split(strings.TrimRight(st, "\n"), "\n")
			for _, l := range lines[1:] {
				fmt.Fprintf(out, "    %s\n", strings.ReplaceAll(l, "\t", "        "))
			}
			shown++
		}
		if strings.Contains(st, "cs:Connected") && strings.Contains(st, "ds:UpToDate/UpToDate") {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the initial sync did not finish:\n%s", st)
		}
		time.Sleep(700 * time.Millisecond)
	}
	if err := show("alpha", "status", "r0"); err != nil {
		return err
	}

	c, err := client.Dial(ctx, ports["nbd-a"], client.Options{Export: "r0"})
	if err != nil {
		return err
	}
	size := c.Size()
	want = want[:size]
	fmt.Fprintf(out, "    NBD export r0 on alpha (%s): %d bytes, flags %s\n", ports["nbd-a"], size, flagNames(c.Flags()))
	if err := verifyThrough(c, want); err != nil {
		return err
	}
	fmt.Fprintf(out, "    alpha's existing data reads back through NBD\n")
	step("writing 16 MiB through NBD on alpha (1 MiB requests, 8 in flight), each on both disks before the ack (protocol C)")
	if err := writeMiB(ctx, c, want, rng, 24<<20, 16); err != nil {
		return err
	}
	step("FLUSH, TRIM and WRITE_ZEROES (replicated as commands)")
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
	step("secondary is refused while an NBD client is connected")
	if err := show("alpha", "secondary", "r0"); err == nil {
		return errors.New("demo: demoted with a client connected")
	}

	step("failover: alpha's daemon is killed (SIGKILL), beta is promoted and serves the data")
	daemons["alpha"].kill()
	delete(daemons, "alpha")
	_ = c.Close()
	if err := waitState(ctx, tb, "beta", "cstate", "WFConnection"); err != nil {
		return err
	}
	start := time.Now()
	if err := show("beta", "primary", "r0"); err != nil {
		return err
	}
	c, err = client.Dial(ctx, ports["nbd-b"], client.Options{Export: "r0"})
	if err != nil {
		return err
	}
	if err := verifyThrough(c, want); err != nil {
		return fmt.Errorf("demo: after failover: %w", err)
	}
	fmt.Fprintf(out, "    beta serves on %s %v after its promotion; every acknowledged write is there\n",
		ports["nbd-b"], time.Since(start).Round(time.Millisecond))
	step("writing 8 MiB through NBD on beta while alpha is down (beta's bitmap records them)")
	if err := writeMiB(ctx, c, want, rng, 40<<20, 8); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return err
	}
	if err := show("beta", "status", "r0"); err != nil {
		return err
	}

	step("alpha comes back: up; it resyncs only what changed (and its activity log's extents, as it crashed Primary)")
	d, err := startDaemon(ctx, self, confPath, "alpha", dir)
	if err != nil {
		return err
	}
	daemons["alpha"] = d
	if err := show("alpha", "up", "r0"); err != nil {
		return err
	}
	if err := waitState(ctx, tb, "alpha", "dstate", "UpToDate/UpToDate"); err != nil {
		return err
	}
	if err := waitState(ctx, tb, "beta", "cstate", "Connected"); err != nil {
		return err
	}
	logA, _ := os.ReadFile(filepath.Join(dir, "alpha.log"))
	fmt.Fprintf(out, "    from alpha's log:\n")
	for _, l := range strings.Split(string(logA), "\n") {
		if i := strings.Index(l, "msg="); i >= 0 && (strings.Contains(l, "uuid_compare") || strings.Contains(l, "Resync done") || strings.Contains(l, "bitmaps merged")) {
			fmt.Fprintf(out, "      %s\n", l[i:])
		}
	}
	if err := show("beta", "status", "r0"); err != nil {
		return err
	}
	if err := verifyThrough(c, want); err != nil {
		return err
	}
	if err := c.Close(); err != nil {
		return err
	}
	step("down on both nodes, then the two data areas compared")
	for _, n := range []string{"beta", "alpha"} {
		if err := show(n, "down", "r0"); err != nil {
			return err
		}
	}
	for _, node := range []string{"alpha", "beta"} {
		data, err := readDataArea(disks[node])
		if err != nil {
			return err
		}
		if !bytes.Equal(data, want) {
			return fmt.Errorf("demo: %s's data area differs from what was written", node)
		}
		fmt.Fprintf(out, "    %s %s: data area sha256 %x\n", node, disks[node], sha256.Sum256(data))
	}
	for _, d := range daemons {
		if err := d.stop(); err != nil {
			return err
		}
	}
	step("demo OK: initial sync, failover without losing an acknowledged write, resync of what changed; both data areas equal")
	return nil
}

// existingData is what alpha's disk holds before create-md in the demo.
const existingData = 32 << 20

// writeMiB writes n MiB of random data at off through c (1 MiB requests,
// 8 in flight) and records it in want.
func writeMiB(ctx context.Context, c *client.Client, want []byte, rng *rand.ChaCha8, off, n int) error {
	_, _ = rng.Read(want[off : off+n<<20])
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for o := off; o < off+n<<20; o += 1 << 20 {
		g.Go(func() error { return c.WriteAt(want[o:o+1<<20], int64(o), false) })
	}
	return g.Wait()
}

func writeFileAt(path string, b []byte, off int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
