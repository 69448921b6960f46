package node

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/meta"
)

// storage holds the attached disk: it opens the backing disk and its
// metadata for an attach and closes them at a detach (the metadata
// cleanly if it can). The Ready loop calls it for ActOpenDisk and
// ActCloseDisk; tests put disks of their own behind Env.OpenDisk.
type storage interface {
	// Open opens the disk and its metadata: the data area (the backing
	// disk less internal metadata) and the metadata, or an error naming
	// the disk and what to do (create-md).
	Open() (*meta.Meta, disk.Disk, error)
	// Close closes what Open opened; the error is the metadata's (a
	// log that stays unclean).
	Close() error
}

// fileStorage is the real storage: the configured disk and meta-disk,
// through Env.OpenDisk or as files under advisory locks, with the disk
// section's durability knobs.
type fileStorage struct {
	name string
	host *config.Host
	disk *config.Section                      // the disk section
	open func(path string) (disk.Disk, error) // nil: disk.OpenFile with locks
	log  *slog.Logger

	backing disk.Disk // the backing disk as opened
	mdDisk  disk.Disk // the meta device (backing itself when internal)
	md      *meta.Meta
	locks   []*os.File // advisory locks on the attached disks
}

// Open implements storage (drbdadm attach).
func (s *fileStorage) Open() (*meta.Meta, disk.Disk, error) {
	h := s.host
	open := s.open
	var locks []*os.File
	if open == nil {
		open = func(path string) (disk.Disk, error) { return disk.OpenFile(path, disk.FileOptions{}) }
		var err error
		if locks, err = lockDisks(h); err != nil {
			return nil, nil, err
		}
	}
	backing, err := open(h.Disk)
	if err != nil {
		unlockAll(locks)
		return nil, nil, fmt.Errorf("%s: %w", s.name, err)
	}
	mdDisk := disk.Disk(backing)
	placement := meta.InternalPlacement
	if !h.MetaDisk.Internal {
		placement = meta.ExternalPlacement(h.MetaDisk.Index)
		if mdDisk, err = open(h.MetaDisk.Path); err != nil {
			_ = backing.Close()
			unlockAll(locks)
			return nil, nil, fmt.Errorf("%s: meta-disk: %w", s.name, err)
		}
	}
	opts := meta.Options{Name: h.Disk, ALExtents: int(s.disk.Int("al-extents")), Logger: s.log}
	if !h.MetaDisk.Internal {
		opts.Name, opts.Data = h.MetaDisk.Path, backing
	}
	dataIO, mdIO := s.diskOptions(backing, mdDisk, &opts) // disk-flushes, md-flushes, al-updates
	closeAll := func() {
		if mdDisk != disk.Disk(backing) {
			_ = mdDisk.Close()
		}
		_ = backing.Close()
		unlockAll(locks)
	}
	md, err := meta.Open(mdIO, placement, opts)
	if err != nil {
		closeAll()
		if errors.Is(err, meta.ErrNoMetadata) {
			return nil, nil, fmt.Errorf("%s: %w (run create-md %s first)", s.name, err, s.name)
		}
		return nil, nil, fmt.Errorf("%s: %w", s.name, err)
	}
	data, err := disk.NewRegion(dataIO, 0, md.Layout().DataSize)
	if err != nil {
		_ = md.Close()
		closeAll()
		return nil, nil, err
	}
	s.backing, s.mdDisk, s.md, s.locks = backing, mdDisk, md, locks
	return md, data, nil
}

// Close implements storage.
func (s *fileStorage) Close() error {
	if s.md == nil {
		return nil
	}
	err := s.md.Close()
	if s.mdDisk != s.backing {
		_ = s.mdDisk.Close()
	}
	_ = s.backing.Close()
	unlockAll(s.locks)
	s.backing, s.mdDisk, s.md, s.locks = nil, nil, nil, nil
	return err
}

// lockDisks takes the exclusive locks on the backing disk and an
// external meta device, so that no metadata verb edits them while they
// are attached.
func lockDisks(h *config.Host) ([]*os.File, error) {
	paths := []string{h.Disk}
	// An indexed meta device is shared by several resources: not locked.
	if !h.MetaDisk.Internal && h.MetaDisk.Index < 0 && h.MetaDisk.Path != h.Disk {
		paths = append(paths, h.MetaDisk.Path)
	}
	var locks []*os.File
	for _, p := range paths {
		f, err := disk.Lock(p, true)
		if err != nil {
			unlockAll(locks)
			return nil, err
		}
		locks = append(locks, f)
	}
	return locks, nil
}

func unlockAll(locks []*os.File) {
	for _, f := range locks {
		_ = f.Close()
	}
}

// diskOptions applies the disk section's durability knobs to an attach
// (Open): it returns the disks the data area and the metadata are
// written through, and sets opts (an external meta device's Data, the
// activity log).
//
//   - disk-flushes no: the data is written through disk.NoFlush (no
//     fdatasync for NBD FLUSH and FUA, the Secondary's barriers, the
//     resync's checkpoints, nor before the activity log forgets an
//     extent);
//   - md-flushes no: the metadata is written through disk.NoFlush;
//   - al-updates no: meta.Options.DisableAL.
//
// Each is DRBD's, with DRBD's danger (docs/configuration.md, "Flushes
// and the activity log"), and each is logged at attach when it is off.
func (s *fileStorage) diskOptions(backing, mdDisk disk.Disk, opts *meta.Options) (data, md disk.Disk) {
	d := s.disk
	data, md = backing, mdDisk
	if !d.Bool("disk-flushes") {
		data = disk.WithoutFlushes(backing)
		if opts.Data != nil {
			opts.Data = data
		}
		s.log.Warn("disk-flushes no: the data disk is never flushed; a power loss or kernel crash can lose acknowledged writes")
	}
	if !d.Bool("md-flushes") {
		md = disk.WithoutFlushes(mdDisk)
		s.log.Warn("md-flushes no: the metadata is never flushed; after a power loss or kernel crash it may not cover the writes in flight")
	}
	if !d.Bool("al-updates") {
		opts.DisableAL = true
		s.log.Warn("al-updates no: the activity log is not written; a crash while Primary costs a full resync")
	}
	return data, md
}

// writeOrder is the status file's wo: field: f (flush) with
// disk-flushes yes, n (none) without (twinblock has no barrier and no
// drain mode; disk-drain is not implemented).
func (r *Resource) writeOrder() byte {
	if r.cfg.Disk.Bool("disk-flushes") {
		return 'f'
	}
	return 'n'
}
