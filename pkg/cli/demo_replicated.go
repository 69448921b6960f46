package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/twinblock/twinblock/internal/harness"
	"github.com/twinblock/twinblock/nbd/client"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/meta"
)

// demoConf is the embedded configuration of `make demo`: two nodes on
// 127.0.0.1 and 127.0.0.2, protocol C, authenticated, and the diskless
// witness gamma on 127.0.0.3 (quorum majority, auto-failover yes).
//
//go:embed demo.conf
var demoConf string

// runReplicatedDemo is `make demo`: two daemons and a witness on
// loopback (the integration tests' harness) and the DRBD procedures on
// them, one phase each: create-md, up, primary --force and the initial
// sync (its progress in the status file); writes through NBD; the
// Primary killed and beta taking over by itself (automatic failover,
// the quorum granting it); alpha back as the sync target of what
// changed; and the two data areas compared.
func runReplicatedDemo(ctx context.Context, out io.Writer, dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	d := &demo{ctx: ctx, out: out, want: make([]byte, demoSize), rng: rand.NewChaCha8([32]byte{'t', 'w', 'i', 'n', 's'})}
	// alpha's disk already holds data (say, an existing filesystem):
	// the initial sync must copy it to beta.
	_, _ = d.rng.Read(d.want[:existingData])
	d.cl, err = harness.New(harness.Options{Dir: dir, Bin: self, Names: [2]string{"alpha", "beta"}, DiskSize: demoSize,
		Witness: true, WitnessName: "gamma",
		Config: func(v harness.Vars) string {
			return strings.NewReplacer("@ADDR_A@", v.Addr[0], "@ADDR_B@", v.Addr[1], "@NBD_A@", v.NBD[0], "@NBD_B@", v.NBD[1],
				"@DISK_A@", v.Disk[0], "@DISK_B@", v.Disk[1], "@ADDR_W@", v.WitnessAddr,
				"@QUORUM_A@", v.QuorumAddr[0], "@QUORUM_B@", v.QuorumAddr[1], "@QUORUM_W@", v.QuorumAddr[2]).Replace(demoConf)
		},
		Fill: func(node string, f *os.File) error {
			if node != "alpha" {
				return nil
			}
			_, err := f.WriteAt(d.want[:existingData], 0)
			return err
		},
		NoCreateMD: true})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer d.cl.Close()
	d.alpha, d.beta, d.gamma = d.cl.Node("alpha"), d.cl.Node("beta"), d.cl.Witness
	conf, err := os.ReadFile(d.alpha.Conf)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "configuration (%s, and beta's and gamma's the same):\n%s\n", d.alpha.Conf, conf)
	for _, phase := range []func() error{d.initialSync, d.writeOnAlpha, d.failover, d.rejoin, d.compare} {
		if err := phase(); err != nil {
			return err
		}
	}
	d.step("demo OK: initial sync, automatic failover without losing an acknowledged write, resync of what changed; both data areas equal")
	return nil
}

// demo is the replicated demo's state: the two nodes, the NBD client of
// the Primary, and what the data area must hold (want).
type demo struct {
	ctx                context.Context
	out                io.Writer
	cl                 *harness.Cluster
	alpha, beta, gamma *harness.Node
	c                  *client.Client
	want               []byte
	rng                *rand.ChaCha8
}

// initialSync: create-md, the daemons, up, a refused promotion, primary
// --force on alpha and the initial full sync to beta.
func (d *demo) initialSync() error {
	d.step("create-md on both nodes (alpha's disk already holds %d MiB of data)", existingData>>20)
	for _, n := range []*harness.Node{d.alpha, d.beta} {
		if err := d.show(n, "create-md", "r0"); err != nil {
			return err
		}
	}
	d.step("starting the daemons of alpha (127.0.0.1), beta (127.0.0.2) and the witness gamma (127.0.0.3, no disk)")
	for _, n := range []*harness.Node{d.gamma, d.alpha, d.beta} {
		if err := n.Start(); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	d.step("up on both nodes")
	for _, n := range []*harness.Node{d.alpha, d.beta} {
		if err := d.show(n, "up", "r0"); err != nil {
			return err
		}
	}
	if err := d.wait(d.alpha, "cstate", "Connected"); err != nil {
		return err
	}
	if err := d.show(d.alpha, "status", "r0"); err != nil {
		return err
	}
	d.step("primary without --force is refused: nobody has UpToDate data yet")
	if err := d.show(d.alpha, "primary", "r0"); err == nil {
		return errors.New("demo: a promotion without UpToDate data succeeded")
	}
	d.step("primary --force on alpha: alpha's data wins (the quorum grants it: epoch 1), the initial full sync to beta starts")
	if err := d.show(d.alpha, "primary", "--force", "r0"); err != nil {
		return err
	}
	d.step("the initial sync, as alpha's status file (/proc/drbd format) shows it")
	if err := d.watchSync(d.alpha); err != nil {
		return err
	}
	return d.show(d.alpha, "status", "r0")
}

// writeOnAlpha: alpha's data read back through NBD, then writes, FLUSH,
// TRIM and WRITE_ZEROES, and a demotion refused while the client is
// connected.
func (d *demo) writeOnAlpha() error {
	c, err := client.Dial(d.ctx, d.alpha.NBD, client.Options{Export: "r0"})
	if err != nil {
		return err
	}
	d.c = c
	d.want = d.want[:c.Size()]
	fmt.Fprintf(d.out, "    NBD export r0 on alpha (%s): %d bytes, flags %s\n", d.alpha.NBD, c.Size(), flagNames(c.Flags()))
	if err := verifyThrough(c, d.want); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "    alpha's existing data reads back through NBD\n")
	d.step("writing 16 MiB through NBD on alpha (1 MiB requests, 8 in flight), each on both disks before the ack (protocol C)")
	if err := writeMiB(d.ctx, c, d.want, d.rng, 24<<20, 16); err != nil {
		return err
	}
	d.step("FLUSH, TRIM and WRITE_ZEROES (replicated as commands)")
	if err := c.Flush(); err != nil {
		return err
	}
	if err := c.Trim(8<<20, 4<<20, false); err != nil {
		return err
	}
	clear(d.want[8<<20 : 12<<20])
	if err := c.WriteZeroes(20<<20, 2<<20, true, true); err != nil {
		return err
	}
	clear(d.want[20<<20 : 22<<20])
	if err := c.Flush(); err != nil {
		return err
	}
	d.step("secondary is refused while an NBD client is connected")
	if err := d.show(d.alpha, "secondary", "r0"); err == nil {
		return errors.New("demo: demoted with a client connected")
	}
	return nil
}

// failover: alpha SIGKILLed; beta takes over by itself once the quorum
// (beta and gamma) counts alpha gone; every acknowledged write reads
// back from beta, which then takes writes of its own.
func (d *demo) failover() error {
	d.step("failover: alpha's daemon is killed (SIGKILL); nobody runs primary: beta and gamma are a majority, and beta takes over by itself")
	d.alpha.Kill()
	killed := time.Now()
	_ = d.c.Close()
	var c *client.Client
	for deadline := time.Now().Add(30 * time.Second); ; {
		var err error
		if c, err = client.Dial(d.ctx, d.beta.NBD, client.Options{Export: "r0"}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: beta did not take over within 30 s: %w", err)
		}
		select {
		case <-d.ctx.Done():
			return d.ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	d.c = c
	if err := c.WriteAt(d.want[:4096], 0, true); err != nil {
		return fmt.Errorf("demo: beta's first write: %w", err)
	}
	fmt.Fprintf(d.out, "    beta serves on %s and acknowledged a write %v after alpha's SIGKILL, with no operator\n",
		d.beta.NBD, time.Since(killed).Round(time.Millisecond))
	if err := verifyThrough(c, d.want); err != nil {
		return fmt.Errorf("demo: after failover: %w", err)
	}
	fmt.Fprintf(d.out, "    every write alpha acknowledged reads back from beta\n")
	fmt.Fprintf(d.out, "    from beta's log:\n")
	for _, l := range d.beta.LogSince("auto-failover") {
		if i := strings.Index(l, "msg="); i >= 0 {
			fmt.Fprintf(d.out, "      %s\n", l[i:])
		}
	}
	d.step("writing 8 MiB through NBD on beta while alpha is down (beta's bitmap records them)")
	if err := writeMiB(d.ctx, c, d.want, d.rng, 40<<20, 8); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return err
	}
	if err := d.show(d.beta, "status", "r0"); err != nil {
		return err
	}
	time.Sleep(1500 * time.Millisecond) // the daemon rewrites the file every second
	return d.showStatusFile(d.beta)
}

// showStatusFile prints n's status file (/proc/drbd's format, and the
// quorum line).
func (d *demo) showStatusFile(n *harness.Node) error {
	b, err := os.ReadFile(n.StatusFile)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "    %s's status file %s:\n", n.Name, n.StatusFile)
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		fmt.Fprintf(d.out, "      %s\n", strings.ReplaceAll(l, "\t", "        "))
	}
	return nil
}

// rejoin: alpha back, the sync target of what changed.
func (d *demo) rejoin() error {
	d.step("alpha comes back: up; it resyncs only what changed (and its activity log's extents, as it crashed Primary)")
	d.alpha.SkipLog()
	if err := d.alpha.Start(); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := d.show(d.alpha, "up", "r0"); err != nil {
		return err
	}
	if err := d.wait(d.alpha, "dstate", "UpToDate/UpToDate"); err != nil {
		return err
	}
	if err := d.wait(d.beta, "cstate", "Connected"); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "    from alpha's log:\n")
	for _, l := range d.alpha.LogSince("uuid_compare", "Resync done", "bitmaps merged") {
		if i := strings.Index(l, "msg="); i >= 0 {
			fmt.Fprintf(d.out, "      %s\n", l[i:])
		}
	}
	if err := d.show(d.beta, "status", "r0"); err != nil {
		return err
	}
	if err := verifyThrough(d.c, d.want); err != nil {
		return err
	}
	return d.c.Close()
}

// compare: down on both nodes, and each data area equal to what was
// written.
func (d *demo) compare() error {
	d.step("down on both nodes, then the two data areas compared")
	for _, n := range []*harness.Node{d.beta, d.alpha} {
		if err := d.show(n, "down", "r0"); err != nil {
			return err
		}
	}
	for _, n := range []*harness.Node{d.alpha, d.beta} {
		data, err := readDataArea(n.DiskPath)
		if err != nil {
			return err
		}
		if !bytes.Equal(data, d.want) {
			return fmt.Errorf("demo: %s's data area differs from what was written", n.Name)
		}
		fmt.Fprintf(d.out, "    %s %s: data area sha256 %x\n", n.Name, n.DiskPath, sha256.Sum256(data))
	}
	if killed := d.cl.Close(); len(killed) > 0 {
		return fmt.Errorf("demo: the daemons of %v ignored SIGTERM", killed)
	}
	return nil
}

// wait waits up to 20 s for n's query verb to print want.
func (d *demo) wait(n *harness.Node, verb, want string) error {
	if err := n.WaitFor(d.ctx, verb, want, 20*time.Second); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

func (d *demo) step(format string, a ...any) { fmt.Fprintf(d.out, "==> "+format+"\n", a...) }

// show runs a verb as node n and prints it and its output.
func (d *demo) show(n *harness.Node, args ...string) error {
	fmt.Fprintf(d.out, "    %s# twinblock %s\n", n.Name, strings.Join(args, " "))
	o, err := n.TBContext(d.ctx, time.Minute, args...)
	for _, l := range strings.Split(o, "\n") {
		if l != "" {
			fmt.Fprintf(d.out, "      %s\n", l)
		}
	}
	return err
}

// watchSync prints n's status file while the initial sync runs (at most
// eight times) until the pair is Connected and UpToDate/UpToDate.
func (d *demo) watchSync(n *harness.Node) error {
	shown := 0
	for deadline := time.Now().Add(2 * time.Minute); ; {
		b, _ := os.ReadFile(n.StatusFile)
		st := string(b)
		if strings.Contains(st, "sync'ed:") && shown < 8 {
			lines := strings.Split(strings.TrimRight(st, "\n"), "\n")
			for _, l := range lines[1:] {
				fmt.Fprintf(d.out, "    %s\n", strings.ReplaceAll(l, "\t", "        "))
			}
			shown++
		}
		if strings.Contains(st, "cs:Connected") && strings.Contains(st, "ds:UpToDate/UpToDate") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the initial sync did not finish:\n%s", st)
		}
		select {
		case <-d.ctx.Done():
			return d.ctx.Err()
		case <-time.After(700 * time.Millisecond):
		}
	}
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
