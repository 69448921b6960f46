// Command mdscale measures twinblock's metadata at scale for `make bench`
// (issue 3): on a sparse backing file of -size bytes with internal
// metadata, the time of `twinblock create-md`, the time and peak resident
// memory of attaching it, and the time to count and to scan the whole
// bitmap.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/meta"
)

func main() {
	bin := flag.String("twinblock", "bin/twinblock", "the twinblock binary")
	dir := flag.String("dir", os.TempDir(), "where the sparse backing file goes")
	size := flag.Int64("size", 1<<40, "backing file size in bytes")
	flag.Parse()
	if err := run(*bin, *dir, *size); err != nil {
		fmt.Fprintln(os.Stderr, "mdscale:", err)
		os.Exit(1)
	}
}

func run(bin, dir string, size int64) error {
	work, err := os.MkdirTemp(dir, "twinblock-mdscale.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	img := filepath.Join(work, "backing.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(img, size); err != nil {
		return fmt.Errorf("a sparse file of %d bytes in %s: %w", size, dir, err)
	}
	conf := filepath.Join(work, "twinblock.conf")
	src := fmt.Sprintf("resource scale {\n on a { disk %s; address 127.0.0.1:7789; meta-disk internal; }\n on b { disk /dev/null; address 127.0.0.2:7789; meta-disk internal; }\n}\n", img)
	if err := os.WriteFile(conf, []byte(src), 0o600); err != nil {
		return err
	}

	start := time.Now()
	out, err := exec.Command(bin, "create-md", "scale", "-c", conf, "--node", "a").CombinedOutput()
	if err != nil {
		return fmt.Errorf("create-md: %v\n%s", err, out)
	}
	createMD := time.Since(start)

	start = time.Now()
	f, err := disk.OpenFile(img, disk.FileOptions{})
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := meta.Open(f, meta.InternalPlacement, meta.Options{Name: img})
	if err != nil {
		return err
	}
	attach := time.Since(start)
	hwm, err := peakRSS()
	if err != nil {
		return err
	}
	l := m.Layout()

	var (
		count             uint64
		countT, emptyScan time.Duration
		dirtyScan         time.Duration
		runs              int
		recount           time.Duration
	)
	m.WithBitmap(func(b *bitmap.Bitmap) {
		start := time.Now()
		count = b.Count()
		countT = time.Since(start)
		start = time.Now()
		if _, ok := b.NextSet(0); ok {
			panic("fresh bitmap has a set bit")
		}
		emptyScan = time.Since(start)
		// 1% of the disk out of sync, in 10000 scattered runs.
		rng := rand.New(rand.NewPCG(1, 1))
		per := b.Bits() / 100 / 10000
		for i := 0; i < 10000; i++ {
			f := rng.Uint64N(b.Bits() - per)
			b.Set(f, f+per-1)
		}
		start = time.Now()
		for i, ok := b.NextSet(0); ok; {
			runs++
			j, more := b.NextClear(i)
			if !more {
				break
			}
			i, ok = b.NextSet(j)
		}
		dirtyScan = time.Since(start)
		start = time.Now()
		if err := b.Check(); err != nil {
			panic(err)
		}
		recount = time.Since(start)
		count = b.Count()
	})
	// Leave it as create-md left it: clear what the scan set up.
	m.WithBitmap(func(b *bitmap.Bitmap) { b.Clear(0, b.Bits()-1) })
	if err := m.Close(); err != nil {
		return err
	}

	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	fmt.Printf("\nmetadata at scale: a %s sparse backing file, meta-disk internal, %d KiB per bit\n", human(size), l.Granularity>>10)
	fmt.Printf("  bitmap %s, activity log %d KiB, exported %d bytes\n\n", human(l.BMSize), l.ALSize>>10, l.DataSize)
	fmt.Printf("  %-44s %12s   %s\n", "what", "measured", "target")
	fmt.Printf("  %-44s %12s   %s\n", "create-md (the whole command)", fmt.Sprintf("%.2f s", createMD.Seconds()), "< 5 s")
	fmt.Printf("  %-44s %12s   %s\n", "attach (read superblock and bitmap)", ms(attach), "")
	fmt.Printf("  %-44s %12s   %s\n", "peak resident memory of the attaching process", fmt.Sprintf("%.1f MiB", float64(hwm)/(1<<20)), "<= 64 MiB")
	fmt.Printf("  %-44s %12s   %s\n", "count out-of-sync blocks (kept up to date)", fmt.Sprintf("%.3f ms", float64(countT.Nanoseconds())/1e6), "< 50 ms")
	fmt.Printf("  %-44s %12s   %s\n", "scan the whole clean bitmap (next dirty)", ms(emptyScan), "< 50 ms")
	fmt.Printf("  %-44s %12s   %s\n", fmt.Sprintf("scan, 1%% dirty in %d runs", runs), ms(dirtyScan), "< 50 ms")
	fmt.Printf("  %-44s %12s   %s\n", "recount every word (Check)", ms(recount), "< 50 ms")
	fmt.Printf("  (%d blocks were set for the scan)\n", count)
	return nil
}

// peakRSS is VmHWM of this process, in bytes.
func peakRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

func human(n int64) string {
	switch {
	case n >= 1<<40:
		return fmt.Sprintf("%g TiB", float64(n)/(1<<40))
	case n >= 1<<30:
		return fmt.Sprintf("%g GiB", float64(n)/(1<<30))
	default:
		return fmt.Sprintf("%g MiB", float64(n)/(1<<20))
	}
}
