// Package status formats a snapshot of a node's resources ([]Resource) the
// ways DRBD users read them: DRBD 8.4's /proc/drbd (WriteProcDRBD, the
// daemon's status file), DRBD 9's `drbdadm status` (WriteStatus) and a JSON
// form modelled on `drbdsetup status --json` (WriteJSON). WriteFileAtomic
// replaces the status file so that readers never see a partial one.
//
// The package is pure formatting: it opens no socket, reads no clock (all
// durations come in the snapshot), starts no goroutine and keeps no state.
// WriteProcDRBD, WriteStatus and WriteJSON build the whole text first and
// hand it to the writer in a single Write; they sort a copy of the slice. Errors carry the "status:" prefix and wrap the
// writer's error.
//
// # /proc/drbd (WriteProcDRBD)
//
// Promise: the line shapes of DRBD 8.4.7's drbd_seq_show and
// drbd_syncer_progress, so that scripts written for /proc/drbd (check_drbd,
// awk and grep one-liners; monitor_test.go runs such regexes)
// parse the file unchanged. Field by field:
//
//   - The first line is "version: twinblock V (api:1/proto:1)"; DRBD's
//     second line (GIT-hash/build tag) is not printed (DESIGN.md).
//   - One resource per minor, in minor order, "%2d: cs:… ro:…/… ds:…/… P
//     flags" then the 4-space-indented counter line. As DRBD, an empty line
//     precedes a minor that does not follow the previous one (or, first, is
//     not 0).
//   - Flags: r/s (I/O suspended), a, p, u (resync paused by dependency, peer,
//     user), then the congestion reason and the AL-suspended flag, which
//     twinblock does not have: always '-'.
//   - ns nr dw dr oos are KiB (bytes>>10); al bm lo pe ua ap ep as given.
//     wo: is the given character, 'f' (flush, DRBD's default) when unset.
//     The protocol letter is blank when unset, as DRBD without a net config.
//   - "N: cs:Unconfigured" for a resource that is not up, and also, as DRBD
//     8.4 prints it, for one that is StandAlone, Diskless and Secondary at
//     once (a minor with neither disk nor network).
//   - The two tab-indented progress lines appear in SyncSource, SyncTarget,
//     VerifyS and VerifyT when Sync is set (DRBD prints none in PausedSync*).
//     "verified:" replaces "sync'ed:" in Verify* or when Sync.Verify is set.
//   - Not DRBD's: while Resource.SplitBrain is set, the resource's last line
//     (after the counter line and any progress lines) is the tab-indented
//     "\tsplit-brain: unresolved (uuid_compare rule 90); see: twinblock
//     explain r0" (without the parenthesis when the rule is 0, and absent
//     from a resource shown as cs:Unconfigured), which the cs:/ro:/ds: and
//     counter scrapers skip as they skip the progress lines.
//
// Progress arithmetic: DRBD's formulas, computed on bytes and nanoseconds
// instead of DRBD's 4 KiB bitmap bits and whole seconds:
//
//   - per mille done = 1000 − ⌊left·1000/total⌋ (DRBD shifts both by 10 or
//     16 bits first only to avoid overflow on 32-bit kernels); left > total
//     is clamped as DRBD does. The bar: x = ‰/50, x−1 '=', '>', 20−x '.',
//     so it is 21 characters wide at 0‰, as DRBD's.
//   - The percentage is "%3u.%u%%" of that per mille, except that it reads
//     99.9% rather than 100.0% while any byte is left (DRBD, which rounds
//     the per mille towards done, prints 100.0% during the last 0.1%). The
//     bar is not capped.
//   - (left/total)K in KiB, or (left/total)M in MiB (bytes>>20) when total
//     exceeds 4 GiB; DRBD's M values are in 4 MiB steps, ours in 1 MiB steps.
//   - speed = recent bytes / recent window, in KiB/s rounded down; the value
//     in parentheses = (total − left) / Elapsed. A window or Elapsed ≤ 0
//     counts as 1 s (DRBD's dt guard).
//   - finish = left · window / recent bytes, rounded UP to whole seconds so
//     that it reads 0:00:00 only when nothing is left (DRBD rounds down).
//     With no recent progress it is DRBD's own fallback, window(s) · left
//     in 4 KiB blocks / 100.
//   - "want: W" (thousands-grouped) whenever Sync.WantKiBps > 0. DRBD 8.4
//     prints it only in SyncTarget and VerifyS, where its rate controller
//     runs; the producer sets WantKiBps where twinblock's controller runs.
//   - Thousands grouping as DRBD's for values below 10⁹ KiB/s.
//   - " (stalled)" after K/sec when Sync.Stalled.
//
// DESIGN.md's example (1 GiB total, 2 KiB left, 524,288 K/sec) shows both
// twinblock roundings: DRBD's arithmetic gives 100.0% and 0:00:00 there;
// the example reads 99.9% and 0:00:01.
//
// # drbdadm status (WriteStatus)
//
// Promise: the layout of DRBD 9's drbdsetup status as written to a pipe
// (drbd-utils user/v9/drbdsetup.c and shared/wrap_printf.c): resource line,
// device line indented 2, connection line indented 2, peer-device line
// indented 4, an empty line after each resource, fields that do not fit in
// 80 columns continued on the next line at drbdsetup's indentation (counted
// as wrap_printf counts, so a line can reach a few columns past 80; unlike
// wrap_printf, a one-character name is not followed by a second
// indentation). Each
// resource has one volume (0) and at most one peer, so "volume:" is shown
// only with verbose, as drbdsetup does for a single volume 0.
//
// Fields and when they appear (verbose adds every field in brackets):
//
//	NAME role:R [suspended:yes|no] [force-io-failures:no]
//	    [write-ordering:flush|drain|none|barrier]
//	  [volume:0 minor:N] disk:D [client:no] [quorum:yes|no] [open:yes|no]
//	      [read: written: al-writes: bm-writes: upper-pending: lower-pending:
//	       al-suspended:no blocked:no]
//	  PEER [connection:C] [split-brain:yes] role:PR [tls:no congested:no]
//	    [volume:0] [replication:S] peer-disk:PD [peer-client:no] [done:P]
//	    [resync-suspended:user,peer,dependency]
//	        [received: sent: out-of-sync: pending: unacked: [dbdt1: eta:]]
//
// In detail:
//
//   - suspended: appears when I/O is suspended. DRBD names the reason (user,
//     no-data, fencing, quorum); twinblock suspends only for quorum
//     (on-no-quorum suspend-io), and prints suspended:quorum then
//     (Resource.SuspendedWhy), "yes" for a reason it does not name.
//     node-id is never printed: twinblock has no node ids.
//   - quorum:no on the device line when a quorum resource's node is out
//     of its group's majority (quorum:yes only with verbose, and for a
//     resource without quorum, as DRBD with quorum off).
//   - open:yes on the device line (where DRBD 9 prints it) when NBDClients >
//     0; open:no only with verbose. DRBD's client:no for a Diskless disk
//     appears only with verbose (drbdsetup shows it on a pipe, not on a
//     terminal; we keep the terminal's shorter form).
//   - connection: appears when the link is not Connected, role: of the peer
//     when it is. The peer-device line appears when Connected (or verbose).
//     No peer line at all when Resource.Peer is empty.
//   - replication: appears beyond Established; done: (%.2f, 100·(total −
//     left)/total) whenever Sync is set with Total > 0 (PausedSync* too);
//     resync-suspended: when paused (user, peer, dependency).
//   - The statistics are drbdsetup --statistics': KiB for received, sent,
//     out-of-sync, read, written; upper-pending = ap, lower-pending = lo.
//     dbdt1 (MiB/s over the recent window) and eta (seconds, "nan" without
//     progress) during a resync. DRBD's size:, ap-in-flight: and
//     rs-in-flight: are not printed here (events2 and --json carry them).
//   - DRBD 9 connection states come from DRBD9Conn.
//   - split-brain:yes, twinblock's own field, follows the connection state
//     while Resource.SplitBrain is set (never "no", even with verbose).
//   - A resource that is not up prints "NAME: No such resource" in its place
//     (the status verb does not pass it here: it writes that line to
//     stderr and exits 10, as drbdsetup); no resource at all prints
//     "# No currently configured DRBD found.".
//
// # JSON (WriteJSON)
//
// Promise: a stable schema, the types JSONResource and below; fields are
// only ever added. Names are drbdsetup status --json's where DRBD has the
// field (name, role, suspended, write-ordering, devices[volume, minor,
// disk-state, client, open, quorum, read, written, al-writes, bm-writes,
// upper-pending, lower-pending], connections[name, connection-state,
// congested, peer-role, tls, paths[this_host, remote_host, established],
// peer_devices[volume, replication-state, peer-disk-state, peer-client,
// resync-suspended, received, sent, out-of-sync, pending, unacked,
// has-sync-details, has-online-verify-details, and during a resync rs-total,
// rs-dt1-ms, rs-db1-sectors, ov-left, want, "db1/dt1 [MiB/s]",
// estimated-seconds-to-finish (987654321 without recent progress, as
// drbdsetup), "db/dt [MiB/s]", percent-resync-done]]). Twinblock's own
// fields are under "twinblock": node, cstate (the 8.4 state), protocol,
// nbd-clients, epochs and sync (the raw progress in bytes and ms); the one
// exception is split-brain (true) and split-brain-rule in the connection
// object, present only while Resource.SplitBrain is set, since a split
// brain belongs to a connection.
//
// node-id and peer-node-id are the places of the hosts' on sections (0,
// 1: twinblock has no node-id keyword); size is the device's (KiB);
// percent-in-sync is floored to two decimals; suspended-user and
// suspended-quorum follow Resource.SuspendedWhy, suspended-no-data and
// suspended-fencing are always false. ap-in-flight and rs-in-flight are in
// sectors, as DRBD's: the replicated writes sent and not yet acknowledged,
// the resync requested and not yet arrived.
//
// Left out because twinblock cannot fill them truthfully: rs-dt-start-ms, rs-paused-ms,
// rs-dt0-ms, rs-db0-sectors, "db0/dt0 [MiB/s]", rs-failed, rs-same-csum,
// ov-start-sector, ov-stop-sector, ov-position, ov-skipped. Resources that
// are not up are left out of the array, as drbdsetup does.
//
// # events2 (Events2Diff)
//
// Promise: drbdsetup events2's line format, one object per line
// (resource, connection, device, peer-device, path), "exists" lines for
// the initial state ended by "exists -", then create/change/destroy lines
// whose change lines carry only the groups of keys that changed. The keys
// are drbdsetup's (role, suspended, force-io-failures, may_promote,
// promotion_score; connection, role; disk, client, open, quorum;
// replication, peer-disk, peer-client, resync-suspended, done; established)
// and with statistics write-ordering; size, read, written, al-writes,
// bm-writes, upper-pending, lower-pending; congested, ap-in-flight,
// rs-in-flight; received, sent, out-of-sync, pending, unacked. DRBD's
// backing_dev: is left out (twinblock's status does not carry the disk's
// path). blocked: is on every device line (drbdsetup prints it with
// --statistics, and without only while blocked): upper while I/O is
// suspended, else no, so that a consumer sees the unblocking. done: is
// printed during a resync and not removed after it, as drbdsetup: it is
// meaningful only while replication: is a sync state.
package status
