package disk

import (
	"math/rand/v2"
	"sync"
)

// SectorSize is the unit a Crash disk tears writes at: a device writes a
// 512-byte sector entirely or not at all, but a larger write may land in
// part.
const SectorSize = 512

const crashPage = 4096

// Crash is a sparse in-memory disk with a volatile write cache, for crash
// tests (pebble's crashable MemFS, for a block device). Writes, trims and
// zeroings land in the cache; Flush makes everything cached so far
// durable, and a FUA write makes itself durable (only itself, as on a
// real device: earlier cached writes stay volatile). CrashClone returns
// what the device may hold after a power loss at this instant: everything
// durable plus a seeded choice of the cached sectors, applied in write
// order (so a later write to the same sector wins when both survive).
//
// Only pages ever written take memory, so a crash test can use a device of
// hundreds of MiB and clone it thousands of times.
type Crash struct {
	mu      sync.Mutex
	size    int64
	durable map[int64]*[crashPage]byte // page index -> content; absent = zeroes
	cache   []cachedWrite
	stats   MemStats
}

type cachedWrite struct {
	off  int64
	data []byte // nil: zeroes of length n
	n    int64
	// durable: a FUA write, already applied to the durable pages; kept
	// in the cache so that a crash replays it after the older cached
	// writes it overlaps, which therefore cannot resurface over it.
	durable bool
}

// NewCrash returns a zeroed crashable disk of size bytes.
func NewCrash(size int64) *Crash {
	return &Crash{size: size, durable: make(map[int64]*[crashPage]byte)}
}

// Size implements Disk.
func (c *Crash) Size() int64 { return c.size }

// ReadOnly implements Disk.
func (c *Crash) ReadOnly() bool { return false }

// ReadAt implements Disk: the durable content overlaid with the cache.
func (c *Crash) ReadAt(p []byte, off int64) error {
	if err := checkRange(off, int64(len(p)), c.size); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Reads++
	c.readDurable(p, off)
	for _, w := range c.cache {
		lo, hi := max(off, w.off), min(off+int64(len(p)), w.off+w.n)
		if lo >= hi {
			continue
		}
		if w.data == nil {
			clear(p[lo-off : hi-off])
		} else {
			copy(p[lo-off:hi-off], w.data[lo-w.off:hi-w.off])
		}
	}
	return nil
}

func (c *Crash) readDurable(p []byte, off int64) {
	for done := 0; done < len(p); {
		o := off + int64(done)
		pg, in := o/crashPage, int(o%crashPage)
		n := min(len(p)-done, crashPage-in)
		if page := c.durable[pg]; page != nil {
			copy(p[done:done+n], page[in:in+n])
		} else {
			clear(p[done : done+n])
		}
		done += n
	}
}

// WriteAt implements Disk.
func (c *Crash) WriteAt(p []byte, off int64, fua bool) error {
	if err := checkRange(off, int64(len(p)), c.size); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Writes++
	w := cachedWrite{off: off, data: append([]byte(nil), p...), n: int64(len(p)), durable: fua}
	c.cache = append(c.cache, w)
	if fua {
		c.stats.FUAWrites++
		applyWrite(c.durable, w, w.off, w.off+w.n)
	}
	return nil
}

// Flush implements Disk.
func (c *Crash) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Flushes++
	c.flushLocked()
	return nil
}

func (c *Crash) flushLocked() {
	for _, w := range c.cache {
		applyWrite(c.durable, w, w.off, w.off+w.n)
	}
	c.cache = c.cache[:0]
}

// applyWrite copies the part [lo, hi) of w into pages.
func applyWrite(pages map[int64]*[crashPage]byte, w cachedWrite, lo, hi int64) {
	for o := lo; o < hi; {
		pg, in := o/crashPage, o%crashPage
		n := min(hi-o, crashPage-in)
		page := pages[pg]
		if page == nil {
			if w.data == nil {
				o += n
				continue
			}
			page = new([crashPage]byte)
			pages[pg] = page
		}
		if w.data == nil {
			clear(page[in : in+n])
		} else {
			copy(page[in:in+n], w.data[o-w.off:o-w.off+n])
		}
		o += n
	}
}

// Trim implements Disk (the range reads back as zeroes).
func (c *Crash) Trim(off, n int64, fua bool) error { return c.zero(off, n, fua, &c.stats.Trims) }

// WriteZeroes implements Disk.
func (c *Crash) WriteZeroes(off, n int64, _, fua bool) error {
	return c.zero(off, n, fua, &c.stats.Zeroes)
}

func (c *Crash) zero(off, n int64, fua bool, counter *int64) error {
	if err := checkRange(off, n, c.size); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	*counter++
	w := cachedWrite{off: off, n: n, durable: fua}
	c.cache = append(c.cache, w)
	if fua {
		applyWrite(c.durable, w, w.off, w.off+w.n)
	}
	return nil
}

// Close implements Disk.
func (c *Crash) Close() error { return nil }

// Stats returns the operation counters.
func (c *Crash) Stats() MemStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// CrashClone returns a new disk holding what this one may hold after a
// power loss now: all durable data, and each cached sector with
// probability keep (0 drops the whole cache, 1 keeps it), chosen by rng.
// Sectors are SectorSize-aligned pieces of the device, so a write that
// spans several may survive in part (a torn write). The receiver is not
// changed.
func (c *Crash) CrashClone(rng *rand.Rand, keep float64) *Crash {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := NewCrash(c.size)
	for pg, page := range c.durable {
		cp := *page
		out.durable[pg] = &cp
	}
	for _, w := range c.cache {
		end := w.off + w.n
		for lo := w.off; lo < end; {
			hi := min(end, (lo/SectorSize+1)*SectorSize)
			if w.durable || rng.Float64() < keep {
				applyWrite(out.durable, w, lo, hi)
			}
			lo = hi
		}
	}
	return out
}
