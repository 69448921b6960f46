package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twinblock/twinblock/bitmap"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/splitbrain"
)

// net { backup-discarded yes; } (a twinblock addition): when a split
// brain is resolved against this node, the node saves the old content of
// every block the resync (and the survivor's mirrored writes) overwrite
// until the resync as target completes, so that `twinblock
// restore-discarded` can undo a wrong choice. The file format is in
// backupindex.go.
//
// The blocks are overwritten by the peer link's applier, which may run
// the survivor's writes as soon as the link is up, before run has seen
// the handshake's decision. So the save is copy-on-write at the disk the
// link writes to (cowDisk), with a journal armed before the connection
// exists (handshake) and kept or dropped once run knows the decision
// (backupDecide):
//
//   - armed, not yet a discard: the blocks overwritten in that window are
//     saved; if the handshake decides no discard, the journal is dropped
//     and its files (if it created any) removed;
//   - a discard: it stays armed across link drops and reconnects (the
//     resync resumes from the bitmap) and across a daemon restart (the
//     next attach of an Inconsistent disk reopens an incomplete index),
//     until the disk is UpToDate and Connected again; then the index gets
//     its "complete" line.
//
// Invariant: a block is overwritten through cowDisk while a journal is
// armed only after its old content is durable in the image and its run
// durable in the index (fdatasync of both, image first). A block is saved
// once: a second overwrite would save the survivor's data.
//
// Failing to save (the metadata directory full, say) fails the write:
// nothing is discarded without its backup. The link reports it as a disk
// error (on-io-error applies).

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
		return fmt.Errorf("node: backup-discarded: cannot save the blocks at %d (%d bytes) before they are overwritten: %w", off, n, err)
	}
	return nil
}

// journal saves old blocks to an image and its index (backupindex.go).
// The files are created at the first save, so a connection that
// discards nothing leaves none. Its methods are safe for concurrent use,
// except discard, which only run touches.
type journal struct {
	img    string // the image's path; the index is DiscardedIndexPath(img)
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
	saved, err := bitmap.New(size, DiscardedBlockSize)
	if err != nil {
		panic(fmt.Sprintf("node: discarded-blocks bitmap of %d bytes: %v", size, err))
	}
	return &journal{img: img, size: size, header: header, syncFile: fdatasync, saved: saved}
}

// openJournal reopens the journal of an incomplete index (a daemon that
// stopped during the resync): armed, a discard, with the blocks its index
// lists saved. A final line a crash cut short is removed.
func openJournal(img string, size int64) (*journal, error) {
	idxPath := DiscardedIndexPath(img)
	x, err := ReadDiscardedIndex(idxPath)
	if err != nil {
		return nil, err
	}
	if x.Complete {
		return nil, fmt.Errorf("node: %s is complete", idxPath)
	}
	st, err := os.Stat(img)
	if err != nil {
		return nil, fmt.Errorf("node: discarded-blocks image: %w", err)
	}
	if st.Size() != size {
		return nil, fmt.Errorf("node: %s holds %d bytes, the data area %d", img, st.Size(), size)
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
		return nil, fmt.Errorf("node: discarded-blocks image: %w", err)
	}
	if j.idxF, err = os.OpenFile(idxPath, os.O_WRONLY|os.O_APPEND, 0); err != nil {
		_ = j.imgF.Close()
		return nil, fmt.Errorf("node: discarded-blocks index: %w", err)
	}
	if x.Torn {
		if err = j.idxF.Truncate(x.Valid); err == nil {
			err = j.syncFile(j.idxF)
		}
		if err != nil {
			j.closeFiles()
			return nil, fmt.Errorf("node: discarded-blocks index: dropping the torn last line: %w", err)
		}
	}
	return j, nil
}

// idx is the index's path.
func (j *journal) idx() string { return DiscardedIndexPath(j.img) }

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
	var runs []DiscardedRun
	for i := first; i <= last; {
		c, ok := j.saved.NextClear(i)
		if !ok || c > last {
			break
		}
		e := last
		if s, ok := j.saved.NextSet(c); ok && s <= last {
			e = s - 1
		}
		ro := int64(c) * DiscardedBlockSize
		runs = append(runs, DiscardedRun{Offset: ro, Length: min(int64(e+1)*DiscardedBlockSize, j.size) - ro})
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
	_, err = fmt.Fprintln(j.idxF, discardedCompleteLine)
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

// backupEnabled reports net { backup-discarded yes; }.
func (r *Resource) backupEnabled() bool { return r.cfg.Net.Bool("backup-discarded") }

// metaDir is the metadata directory: the meta-disk file's, or with
// internal metadata the backing disk's; for a device under /dev (a
// tmpfs, gone at reboot) it is DeviceBackupDir.
func (r *Resource) metaDir() string {
	p := r.self.Disk
	if !r.self.MetaDisk.Internal && r.self.MetaDisk.Path != "" {
		p = r.self.MetaDisk.Path
	}
	dir := filepath.Dir(p)
	if dir == "/dev" || strings.HasPrefix(dir, "/dev/") {
		return DeviceBackupDir
	}
	return dir
}

// DeviceBackupDir holds the backup-discarded files of resources whose
// metadata lives on a block device.
const DeviceBackupDir = "/var/lib/twinblock"

// linkDisk is the disk the peer link writes to: the data area, through
// cowDisk when backup-discarded is on (nil while diskless).
func (r *Resource) linkDisk() disk.Disk {
	if r.data == nil {
		return nil
	}
	if !r.backupEnabled() {
		return r.data
	}
	return &cowDisk{Disk: r.data, j: &r.backup}
}

// armBackup arms a journal for a connection about to be set up, unless
// one is armed (a discard in progress, or another attempt's). run calls
// it before the link exists, so the peer's first writes find it.
func (r *Resource) armBackup() {
	if !r.backupEnabled() || r.md == nil || r.backup.Load() != nil {
		return
	}
	now := time.Now().UTC()
	dir := r.metaDir()
	var img string
	for {
		img = filepath.Join(dir, DiscardedFileName(r.name, now))
		if _, err := os.Lstat(img); errors.Is(err, os.ErrNotExist) {
			if _, err := os.Lstat(DiscardedIndexPath(img)); errors.Is(err, os.ErrNotExist) {
				break
			}
		}
		now = now.Add(time.Second)
	}
	header := fmt.Sprintf("twinblock backup-discarded v1: resource %s, node %s, peer %s, created %s, data size %d bytes, block %d; this node's generations %s",
		r.name, r.self.Name, r.peer.Name, now.Format(time.RFC3339), r.md.Layout().DataSize, DiscardedBlockSize, r.fsm.GI())
	r.backup.Store(newJournal(img, r.md.Layout().DataSize, header))
}

// isDiscardOfSelf reports a handshake that resolved a split brain
// against this node: it becomes the sync target of the survivor.
func isDiscardOfSelf(o splitbrain.Outcome) bool {
	return o.SplitBrain && o.Decision < 0 && o.Refuse == ""
}

// backupDecide runs after LinkUp: the handshake (if it ran: prev is the
// one before) decided whether this connection discards this node's data.
func (r *Resource) backupDecide(prev *fsm.Handshake) {
	j := r.backup.Load()
	if j == nil || j.discard {
		return // a discard stays armed until its resync completes
	}
	if hs := r.fsm.LastHandshake(); hs != nil && hs != prev && isDiscardOfSelf(hs.Outcome) {
		j.discard = true
		j.note(fmt.Sprintf("split brain resolved against this node (uuid_compare rule %d; %s); the peer's generations %s",
			hs.Outcome.Rule, hs.Outcome.Resolution, hs.Peer.GI))
		if err := j.materialize(); err != nil {
			// Retried at the first save, which fails its write if it
			// fails again.
			r.log.Error("cannot create the discarded-blocks files", "file", j.img, "err", err)
		}
		// Logged after the handshake's own lines (reconcileBackup).
		r.backupNews = append(r.backupNews, func() {
			r.log.Info(fmt.Sprintf("saving the blocks this node discards to %s", j.img), "resolution", hs.Outcome.Resolution)
		})
		return
	}
	r.dropBackup(j)
}

// backupIdle drops an armed journal that is no discard once no
// connection is up or being set up.
func (r *Resource) backupIdle() {
	if r.link != nil || r.handshakes > 0 {
		return
	}
	if j := r.backup.Load(); j != nil && !j.discard {
		r.dropBackup(j)
	}
}

// dropBackup disarms j (no discard) and removes what it saved.
func (r *Resource) dropBackup(j *journal) {
	r.backup.CompareAndSwap(j, nil)
	if n, files := j.abandon(); files {
		r.log.Info(fmt.Sprintf("removed %s: this connection discards nothing (%d blocks saved before the handshake decided)", j.img, n))
	}
}

// reconcileBackup completes a discard's journal once the resync as
// target is done: the disk UpToDate, the connection established. It runs
// after every Ready.
func (r *Resource) reconcileBackup() {
	for _, f := range r.backupNews {
		f()
	}
	r.backupNews = nil
	j := r.backup.Load()
	if j == nil || !j.discard {
		return
	}
	st := r.fsm.State()
	if st.Disk != fsm.UpToDate || st.Conn != fsm.Connected {
		return
	}
	r.backup.CompareAndSwap(j, nil)
	n, files, err := j.complete()
	switch {
	case err != nil:
		r.log.Error("discarded-blocks index: writing its end", "file", j.idx(), "err", err)
	case files:
		r.log.Info(fmt.Sprintf("discarded blocks saved: %d blocks in %s", n, j.img))
	default:
		r.log.Info("discarded blocks saved: 0 blocks; the resync overwrote nothing, no file written")
	}
}

// closeBackup ends the journal with the disk (detach, shutdown): a
// discard's stays on disk, incomplete, for the next attach.
func (r *Resource) closeBackup() {
	j := r.backup.Swap(nil)
	if j == nil {
		return
	}
	if !j.discard {
		if n, files := j.abandon(); files {
			r.log.Info(fmt.Sprintf("removed %s: the disk was detached before the handshake decided (%d blocks saved)", j.img, n))
		}
		return
	}
	if n, files := j.suspend(); files {
		r.log.Info(fmt.Sprintf("the save of the discarded blocks to %s is incomplete (%d blocks): the resync did not finish; it resumes at the next attach", j.img, n))
	}
}

// resumeBackup runs after an attach: an Inconsistent disk whose newest
// discarded-blocks index is incomplete is still to be resynced after a
// discard (the daemon stopped during it), so its journal is reopened.
func (r *Resource) resumeBackup() {
	if !r.backupEnabled() || r.md == nil || r.backup.Load() != nil || r.fsm.State().Disk != fsm.Inconsistent {
		return
	}
	img, err := unfinishedDiscarded(r.metaDir(), r.name)
	if err != nil {
		r.log.Warn("cannot resume the save of the discarded blocks", "err", err)
		return
	}
	if img == "" {
		return
	}
	j, err := openJournal(img, r.md.Layout().DataSize)
	if err != nil {
		r.log.Warn("cannot resume the save of the discarded blocks", "file", img, "err", err)
		return
	}
	r.backup.Store(j)
	r.log.Info(fmt.Sprintf("resuming the save of the blocks this node discards to %s (%d blocks saved before)", img, j.blocks()))
}

// unfinishedDiscarded returns the image of resource res's newest
// discarded-blocks index in dir if that index is not complete ("" if
// there is none, or the newest is complete: older ones were abandoned).
func unfinishedDiscarded(dir, res string) (string, error) {
	idxs, err := filepath.Glob(filepath.Join(dir, res+"-discarded-*.img.blocks"))
	if err != nil || len(idxs) == 0 {
		return "", err
	}
	sort.Strings(idxs) // the names sort by time
	img := strings.TrimSuffix(idxs[len(idxs)-1], ".blocks")
	x, err := ReadDiscardedIndex(DiscardedIndexPath(img))
	if err != nil {
		return "", err
	}
	if x.Complete {
		return "", nil
	}
	return img, nil
}
