package node

import (
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/meta"
)

// diskOptions applies the disk section's durability knobs to an attach
// (openDisk): it returns the disks the data area and the metadata are
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
func (r *Resource) diskOptions(backing, mdDisk disk.Disk, opts *meta.Options) (data, md disk.Disk) {
	d := r.cfg.Disk
	data, md = backing, mdDisk
	if !d.Bool("disk-flushes") {
		data = disk.WithoutFlushes(backing)
		if opts.Data != nil {
			opts.Data = data
		}
		r.log.Warn("disk-flushes no: the data disk is never flushed; a power loss or kernel crash can lose acknowledged writes")
	}
	if !d.Bool("md-flushes") {
		md = disk.WithoutFlushes(mdDisk)
		r.log.Warn("md-flushes no: the metadata is never flushed; after a power loss or kernel crash it may not cover the writes in flight")
	}
	if !d.Bool("al-updates") {
		opts.DisableAL = true
		r.log.Warn("al-updates no: the activity log is not written; a crash while Primary costs a full resync")
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
