package backup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
)

// cowDisk is the disk the peer link writes to when backup-discarded is
// on: the data area, with every mutating call preceded by the armed
// journal's save of the blocks it touches. Reads and Flush pass through.
type cowDisk struct {
	disk.Disk
	j *atomic.Pointer[journal] // the resource's armed journal (nil: none)
}

// MinBlockSize forwards the data area's alignment.
func (c *cowDisk) MinBlockSize() int {
	if bs, ok := c.Disk.(interface{ MinBlockSize() int }); ok {
		return bs.MinBlockSize()
	}
	return 1
}

// WriteAt implements disk.Disk.
func (c *cowDisk) WriteAt(p []byte, off int64, fua bool) error {
	if err := c.save(off, int64(len(p))); err != nil {
		return err
	}
	return c.Disk.WriteAt(p, off, fua)
}

// Trim implements disk.Disk.
func (c *cowDisk) Trim(off, n int64, fua bool) error {
	if err := c.save(off, n); err != nil {
		return err
	}
	return c.Disk.Trim(off, n, fua)
}

// WriteZeroes implements disk.Disk.
func (c *cowDisk) WriteZeroes(off, n int64, noHole, fua bool) error {
	if err := c.save(off, n); err != nil {
		return err
	}
	return c.Disk.WriteZeroes(off, n, noHole, fua)
}

func (c *cowDisk) save(off, n int64) error {
	j := c.j.Load()
	if j == nil {
		return nil
	}
	if err := j.save(c.Disk, off, n); err != nil {
		return fmt.Errorf("backup: backup-discarded: cannot save the blocks at %d (%d bytes) before they are overwritten: %w", off, n, err)
	}
	return nil
}

// journal saves old blocks to an image and its index (index.go).
// The files are created at the first save, so a connection that
// discards nothing leaves none. Its methods are safe for concurrent use,
// except discard, which only run touches.
type journal struct {
	img    string // the image's path; the index is IndexPath(img)
	size   int64  // the data area's
	header string // the index's first line, without "# "
	// syncFile makes a file's data durable (fdatasync); tests record it.
	syncFile func(*os.File) error

	// discard: the handshake resolved a split brain against this node
	// (run's).
	discard bool

	mu       sync.Mutex
	imgF     *os.File // nil until the first save
	idxF     *os.File
	saved    *bitmap.Bitmap // blocks saved (durably)
	notes    []string       // comment lines for the index, before it exists
	closed   bool
	buf      []byte
	zeroSkip int64 // bytes of all-zero blocks left as holes (tests)
}

// saveChunk bounds the buffer one save reads through.
const saveChunk = 1 << 20

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

func newJournal(img string, size int64, header string) *journal {
	saved, err := bitmap.New(size, BlockSize)
	if err != nil {
		panic(fmt.Sprintf("backup: discarded-blocks bitmap of %d bytes: %v", size, err))
	}
	return &journal{img: img, size: size, header: header, syncFile: fdatasync, saved: saved}
}

// openJournal reopens the journal of an incomplete index (a daemon that
// stopped during the resync): armed, a discard, with the blocks its index
// lists saved. A final line a crash cut short is removed.
func openJournal(img string, size int64) (*journal, error) {
	idxPath := IndexPath(img)
	x, err := ReadIndex(idxPath)
	if err != nil {
		return nil, err
	}
	if x.Complete {
		return nil, fmt.Errorf("backup: %s is complete", idxPath)
	}
	st, err := os.Stat(img)
	if err != nil {
		return nil, fmt.Errorf("backup: discarded-blocks image: %w", err)
	}
	if st.Size() != size {
		return nil, fmt.Errorf("backup: %s holds %d bytes, the data area %d", img, st.Size(), size)
	}
	if err := x.CheckRuns(size); err != nil {
		return nil, fmt.Errorf("%s: %w", idxPath, err)
	}
	j := newJournal(img, size, x.Header)
	j.discard = true
	for _, r := range x.Runs {
		j.saved.MarkRange(r.Offset, r.Length)
	}
	if j.imgF, err = os.OpenFile(img, os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("backup: discarded-blocks image: %w", err)
	}
	if j.idxF, err = os.OpenFile(idxPath, os.O_WRONLY|os.O_APPEND, 0); err != nil {
		_ = j.imgF.Close()
		return nil, fmt.Errorf("backup: discarded-blocks index: %w", err)
	}
	if x.Torn {
		if err = j.idxF.Truncate(x.Valid); err == nil {
			err = j.syncFile(j.idxF)
		}
		if err != nil {
			j.closeFiles()
			return nil, fmt.Errorf("backup: discarded-blocks index: dropping the torn last line: %w", err)
		}
	}
	return j, nil
}

// idx is the index's path.
func (j *journal) idx() string { return IndexPath(j.img) }

// blocks is the number of blocks saved.
func (j *journal) blocks() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.saved.Count()
}

// createLocked creates the image (sparse, the data area's size) and the
// index (its header and notes), and makes both names durable.
func (j *journal) createLocked() error {
	if err := os.MkdirAll(filepath.Dir(j.img), 0o700); err != nil {
		return err
	}
	img, err := os.OpenFile(j.img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	idx, err := os.OpenFile(j.idx(), os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		_ = img.Close()
		_ = os.Remove(j.img)
		return err
	}
	var head strings.Builder
	fmt.Fprintf(&head, "# %s\n", j.header)
	for _, n := range j.notes {
		fmt.Fprintf(&head, "# %s\n", n)
	}
	j.notes = nil
	if err = img.Truncate(j.size); err == nil {
		_, err = idx.WriteString(head.String())
	}
	if err == nil {
		err = j.syncFile(img)
	}
	if err == nil {
		err = j.syncFile(idx)
	}
	if err == nil {
		err = syncDir(filepath.Dir(j.img))
	}
	if err != nil {
		_ = img.Close()
		_ = idx.Close()
		_ = os.Remove(j.img)
		_ = os.Remove(j.idx())
		return err
	}
	j.imgF, j.idxF = img, idx
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// save makes the old content of every block [off, off+n) touches that is
// not saved yet durable in the journal, reading it from d; it returns
// when that is done (or at once: nothing new to save, journal closed).
// One call syncs each file once, whatever the number of blocks.
func (j *journal) save(d disk.Disk, off, n int64) error {
	if n <= 0 || off < 0 || off >= j.size {
		return nil // out of range: the disk refuses the write itself
	}
	end := min(off+n, j.size)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	first, last, _ := j.saved.BlocksOf(off, end-off)
	var runs []Run
	for i := first; i <= last; {
		c, ok := j.saved.NextClear(i)
		if !ok || c > last {
			break
		}
		e := last
		if s, ok := j.saved.NextSet(c); ok && s <= last {
			e = s - 1
		}
		ro := int64(c) * BlockSize
		runs = append(runs, Run{Offset: ro, Length: min(int64(e+1)*BlockSize, j.size) - ro})
		i = e + 1
	}
	if len(runs) == 0 {
		return nil
	}
	if j.imgF == nil {
		if err := j.createLocked(); err != nil {
			return err
		}
	}
	if j.buf == nil {
		j.buf = make([]byte, saveChunk)
	}
	var lines []byte
	for _, r := range runs {
		for pos := r.Offset; pos < r.Offset+r.Length; {
			b := j.buf[:min(int64(saveChunk), r.Offset+r.Length-pos)]
			if err := d.ReadAt(b, pos); err != nil {
				return fmt.Errorf("reading the old content: %w", err)
			}
			if disk.AllZero(b) {
				j.zeroSkip += int64(len(b)) // the image's hole reads as zeroes
			} else if _, err := j.imgF.WriteAt(b, pos); err != nil {
				return err
			}
			pos += int64(len(b))
		}
		lines = fmt.Appendf(lines, "%d %d\n", r.Offset, r.Length)
	}
	if err := j.syncFile(j.imgF); err != nil {
		return err
	}
	if _, err := j.idxF.Write(lines); err != nil {
		return err
	}
	if err := j.syncFile(j.idxF); err != nil {
		return err
	}
	for _, r := range runs {
		j.saved.MarkRange(r.Offset, r.Length)
	}
	return nil
}

// materialize creates the files now (a discard: so that a crash before
// the first save still leaves an index for the next attach to resume).
func (j *journal) materialize() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed || j.imgF != nil {
		return nil
	}
	return j.createLocked()
}

// note adds a comment line to the index (after the header, if the index
// does not exist yet).
func (j *journal) note(line string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case j.closed:
	case j.idxF == nil:
		j.notes = append(j.notes, line)
	default:
		_, _ = fmt.Fprintf(j.idxF, "# %s\n", line) // synced with the next run or at close
	}
}

// complete ends the journal: the index gets its "complete" line and both
// files are synced and closed. It reports the blocks saved and whether
// the files exist.
func (j *journal) complete() (blocks uint64, files bool, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return j.saved.Count(), false, nil
	}
	j.closed = true
	if j.imgF == nil {
		return 0, false, nil
	}
	_, err = fmt.Fprintln(j.idxF, completeLine)
	if err == nil {
		err = j.syncFile(j.idxF)
	}
	j.closeFiles()
	return j.saved.Count(), true, err
}

// suspend closes the files of an unfinished journal (the disk is
// detached, the daemon stops); the next attach of the still
// Inconsistent disk reopens it.
func (j *journal) suspend() (blocks uint64, files bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return j.saved.Count(), false
	}
	j.closed = true
	if j.imgF == nil {
		return 0, false
	}
	_ = j.syncFile(j.idxF)
	j.closeFiles()
	return j.saved.Count(), true
}

// abandon closes the journal and removes its files: what it saved was
// not discarded (the connection turned out to be no discard of this
// node). It reports what was removed.
func (j *journal) abandon() (blocks uint64, files bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return 0, false
	}
	j.closed = true
	if j.imgF == nil {
		return 0, false
	}
	j.closeFiles()
	_ = os.Remove(j.idx())
	_ = os.Remove(j.img)
	_ = syncDir(filepath.Dir(j.img))
	return j.saved.Count(), true
}

func (j *journal) closeFiles() {
	_ = j.imgF.Close()
	_ = j.idxF.Close()
	j.imgF, j.idxF = nil, nil
}
