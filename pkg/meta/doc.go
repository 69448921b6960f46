// Package meta is twinblock's on-disk metadata, as DRBD 8.4 keeps it: a
// superblock with the generation identifiers and flags, the dirty bitmap,
// and the activity log. docs/metadata.md has the layout byte by byte.
//
// Placement (Layout, ComputeLayout): meta-disk internal puts
// [bitmap][activity log][superblock] at the end of the backing disk and
// exports what remains before them; an external meta device holds
// [superblock][activity log][bitmap] from offset 0, or from
// index × 128 MiB for DRBD's indexed layout. Sizes are DRBD's: 4 KiB of
// superblock, a 32 KiB log ring, and a bitmap of one bit per 4 KiB in
// whole 512-byte sectors rounded up to 4 KiB.
//
// The superblock block holds two 512-byte slots, each with a sequence
// number and a CRC32C. An update writes the slot that does not hold the
// current version, rewriting the other byte for byte, and flushes; a
// torn write can only damage the new slot, and the reader takes the
// valid slot with the higher sequence.
//
// The activity log is a ring of 4 KiB transactions (64 slot updates and
// a 919-slot context window, as DRBD). A write calls BeginWrite, which
// returns once a transaction naming its extents is durable, and EndWrite
// when it is done. Extents leave the log least recently used first, once
// no write holds them, after their bitmap pages are written. A clean
// detach (Close) sets the "log clean" flag; Open without it replays the
// log and marks its extents out of sync, so that a crashed Primary
// resyncs only those. Each attach starts a new log epoch, so older
// transactions are never replayed.
//
// With Options.DisableAL (DRBD's al-updates no) no log transaction is
// written; the superblock records genid.FlagALDisabled, the bitmap is written
// before the superblock stops saying Primary, and attaching after a
// crash while Primary marks every block out of sync: a full resync, as
// DRBD does.
//
// The invariants the replication layer relies on are on Meta; the crash
// tests check them at thousands of crash points, between application
// writes and at every write and flush of the metadata itself, including
// in the middle of a recovery (disk.Crash keeps what was flushed or
// written with FUA and a seeded part of the rest, torn at 512-byte
// sectors).
//
// Corruption is reported, never repaired: a superblock slot or a required
// log transaction that fails its checksum stops Open and Inspect with a
// *DiskError ("metadata checksum mismatch on DISK at offset N"), and
// nothing is written. The one exception is the expected damage of a
// crash: the superblock slot or the log block being written when it
// happened, which the format tolerates by design.
//
// The generation-identifier tuple, its rotations and the superblock
// flags are values in pkg/genid (below the state machine, which needs
// them without any I/O); the caller persists a rotation's result with
// Meta.Update before acting on it.
package meta
