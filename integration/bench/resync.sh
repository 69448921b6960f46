#!/usr/bin/env bash
# resync.sh — resync benchmarks (the resync part of `make bench`):
#
#   1. Full sync of BENCH_RESYNC_MIB (1024) MiB of random data over
#      loopback (127.0.0.1 -> 127.0.0.2), beside nbdcopy copying the same
#      file between two nbdkit exports, in the same script on the same
#      tmpfs, the two alternating round by round; the ratio twinblock /
#      nbdcopy of the medians and round by round (issue 17's target: at
#      least 1.0).
#   2. A bitmap resync after 1% of the blocks were written while the peer
#      was disconnected: time and bytes sent.
#   3. Application write throughput (fio, 4 KiB random writes, QD 8) during
#      a full resync, against the same run with no resync, and the resync
#      rate meanwhile (c-min-rate keeps it from starving).
#
# Usage: bash integration/bench/resync.sh [path/to/twinblock]
# Environment: BENCH_RESYNC_MIB=1024, BENCH_ROUNDS=3 (median), BENCH_DIR=/dev/shm.
set -euo pipefail

TWINBLOCK=${1:-bin/twinblock}
MIB=${BENCH_RESYNC_MIB:-1024}
ROUNDS=${BENCH_ROUNDS:-3}
BASE_DIR=${BENCH_DIR:-/dev/shm}
die() { echo "resync-bench: $*" >&2; exit 1; }
log() { echo "resync-bench: $*" >&2; }

[[ -x $TWINBLOCK ]] || die "no executable twinblock at '$TWINBLOCK'"
TWINBLOCK=$(cd "$(dirname "$TWINBLOCK")" && pwd)/$(basename "$TWINBLOCK")
for tool in nbdkit nbdcopy fio python3; do
	command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -d $BASE_DIR ]] || BASE_DIR=/tmp
avail=$(($(df -Pk "$BASE_DIR" | awk 'NR==2 {print $4}') / 1024))
if ((avail < 5 * MIB + 512)); then
	MIB=$(((avail - 512) / 5 / 64 * 64))
	((MIB >= 64)) || die "not enough space in $BASE_DIR"
	log "shrinking to $MIB MiB: $BASE_DIR has $avail MiB free"
fi

WORK=$(mktemp -d "$BASE_DIR/twinblock-resync.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The data: MIB MiB of random bytes (incompressible: the worst case for
# compression, the common case for a database).
src=$WORK/src.img
head -c $((MIB << 20)) /dev/urandom >"$src"

# ---------------------------------------------------------------- nbdcopy between two nbdkit exports
log "baseline: nbdcopy of $MIB MiB between two nbdkit file exports"
dst=$WORK/dst.img
truncate -s $((MIB << 20)) "$dst"
pa=$(free_port) pb=$(free_port)
nbdkit -f -p "$pa" -i 127.0.0.1 file "$src" & PIDS+=($!)
nbdkit -f -p "$pb" -i 127.0.0.1 file "$dst" & PIDS+=($!)
sleep 1
copy_uri_a="nbd://127.0.0.1:$pa" copy_uri_b="nbd://127.0.0.1:$pb"

# ---------------------------------------------------------------- the twinblock pair
dir=$WORK/pair
mkdir -p "$dir"
da=$dir/a.img db=$dir/b.img
cp "$src" "$da"
truncate -s $(((MIB + 64) << 20)) "$da"
truncate -s $(((MIB + 64) << 20)) "$db"
pa=$(free_port 127.0.0.1) pb=$(free_port 127.0.0.2) na=$(free_port 127.0.0.1)
cat >"$dir/twinblock.conf" <<CONF
resource r0 {
  protocol C;
  meta-disk internal;
  net { ping-int 2; connect-int 1; }
  disk { ${BENCH_RESYNC_DISK:-} }
  on a { address 127.0.0.1:$pa; disk $da; nbd-listen 127.0.0.1:$na; }
  on b { address 127.0.0.2:$pb; disk $db; }
}
CONF
tb() { "$TWINBLOCK" --config "$dir/twinblock.conf" --node "$1" --control "$dir/$1.sock" "${@:2}"; }
for n in a b; do
	tb "$n" create-md r0 >/dev/null
	"$TWINBLOCK" --config "$dir/twinblock.conf" --node "$n" --control "$dir/$n.sock" daemon \
		--status-file "$dir/$n.status" 2>"$dir/$n.log" & PIDS+=($!)
done
for _ in $(seq 100); do [[ -S $dir/a.sock && -S $dir/b.sock ]] && break; sleep 0.1; done
tb a up r0
tb b up r0
for _ in $(seq 100); do [[ $(tb a cstate r0) == Connected ]] && break; sleep 0.1; done

# wait_synced: until both nodes are UpToDate/UpToDate and Connected.
wait_synced() {
	for _ in $(seq 6000); do
		[[ $(tb b dstate r0) == UpToDate/UpToDate && $(tb a cstate r0) == Connected ]] && return 0
		sleep 0.05
	done
	die "no resync end after 300 s: $(tb a status r0)"
}
# wire_bytes: the last "Resync done" line's wire-bytes on b.
wire_bytes() { grep 'Resync done (total' "$dir/b.log" | tail -1 | sed -n 's/.*wire-bytes=\([0-9]*\).*/\1/p'; }

# The rounds alternate: nbdcopy and twinblock's full sync back to back,
# the one going first alternating too, so that the machine's drift
# between rounds (a shared machine's load) weighs on both, and the ratio
# is also taken round by round.
log "twinblock: full sync of $MIB MiB (primary --force, then invalidate-remote for the next rounds), alternating with nbdcopy"
copy_round() {
	local t0 t1
	t0=$(now)
	nbdcopy "$copy_uri_a" "$copy_uri_b"
	t1=$(now)
	copy_times+=("$(python3 -c "print($t1 - $t0)")")
}
sync_round() {
	local t0 t1
	t0=$(now)
	if ((r == 1)); then tb a primary --force r0; else tb a invalidate-remote r0; fi
	wait_synced
	t1=$(now)
	sync_times+=("$(python3 -c "print($t1 - $t0)")")
}
copy_times=() sync_times=() round_ratios=()
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2)); then copy_round; sync_round; else sync_round; copy_round; fi
	round_ratios+=("$(python3 -c "print(${copy_times[-1]} / ${sync_times[-1]})")")
done
copy_s=$(printf '%s\n' "${copy_times[@]}" | median)
sync_s=$(printf '%s\n' "${sync_times[@]}" | median)
ratio_med=$(printf '%s\n' "${round_ratios[@]}" | median)
ratio_min=$(printf '%s\n' "${round_ratios[@]}" | sort -g | head -1)
ratio_max=$(printf '%s\n' "${round_ratios[@]}" | sort -g | tail -1)
full_wire=$(wire_bytes)
cmp -s "$src" "$dst" || die "nbdcopy's copy differs"
rm -f "$dst"

# ---------------------------------------------------------------- 1% dirty
tb b disconnect r0
for _ in $(seq 100); do [[ $(tb a cstate r0) == WFConnection ]] && break; sleep 0.05; done
blocks=$(((MIB << 20) / 4096 / 100))
fio --name=dirty --ioengine=nbd --uri="nbd://127.0.0.1:$na/r0" --rw=randwrite --bs=4k \
	--number_ios="$blocks" --size=$((MIB << 20)) --iodepth=8 --randrepeat=0 --output="$WORK/dirty.out" >"$WORK/fio.stderr" 2>&1 ||
	{ cat "$WORK/fio.stderr" >&2; die "fio failed"; }
sleep 1.2 # the status file is rewritten once a second
oos_kib=$(sed -n 's/.*oos:\([0-9]*\).*/\1/p' "$dir/a.status")
t0=$(now)
tb b connect r0
wait_synced
t1=$(now)
dirty_s=$(python3 -c "print($t1 - $t0)")
dirty_wire=$(wire_bytes)

# ---------------------------------------------------------------- application writes during a resync
fio_iops() {
	fio --name=app --ioengine=nbd --uri="nbd://127.0.0.1:$na/r0" --rw=randwrite --bs=4k --iodepth=8 \
		--size=$((MIB << 20)) --time_based --runtime=5 --norandommap --randrepeat=0 \
		--output-format=json --output="$WORK/fio.json" >"$WORK/fio.stderr" 2>&1 ||
		{ cat "$WORK/fio.stderr" >&2; die "fio failed"; }
	python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["jobs"][0]["write"]["iops"]))' "$WORK/fio.json"
}
idle_iops=$(fio_iops)
tb a invalidate-remote r0
sleep 0.5
oos0=$(sed -n 's/.*oos:\([0-9]*\).*/\1/p' "$dir/a.status")
t0=$(now)
busy_iops=$(fio_iops)
t1=$(now)
oos1=$(sed -n 's/.*oos:\([0-9]*\).*/\1/p' "$dir/a.status")
during_rate=$(python3 -c "print(round(($oos0 - $oos1) / 1024 / ($t1 - $t0), 1))")
wait_synced

python3 - "$MIB" "$copy_s" "$sync_s" "$full_wire" "$blocks" "$oos_kib" "$dirty_s" "$dirty_wire" \
	"$idle_iops" "$busy_iops" "$during_rate" "$ratio_med" "$ratio_min" "$ratio_max" "$ROUNDS" <<'PY'
import sys
mib, copy_s, sync_s, full_wire, blocks, oos_kib, dirty_s, dirty_wire, idle, busy, during, rmed, rmin, rmax, rounds = sys.argv[1:]
mib = int(mib); copy_s = float(copy_s); sync_s = float(sync_s)
print(f"\nresync benchmarks ({mib} MiB of random data, loopback, tmpfs; median of rounds)")
print(f"{'':34}{'nbdcopy (nbdkit→nbdkit)':>26}{'twinblock full sync':>22}{'ratio':>8}")
print(f"{'throughput MiB/s':34}{mib/copy_s:>26.0f}{mib/sync_s:>22.0f}{(mib/sync_s)/(mib/copy_s):>8.2f}")
print(f"{'time s':34}{copy_s:>26.2f}{sync_s:>22.2f}")
print(f"ratio round by round (the two back to back): median {float(rmed):.2f} [{float(rmin):.2f} .. {float(rmax):.2f}] over {rounds} rounds")
print(f"full sync: {int(full_wire or 0)/2**20:.0f} MiB sent for {mib} MiB")
print(f"bitmap resync, 1% dirty ({blocks} random 4 KiB writes, {int(oos_kib)} KiB out of sync): "
      f"{float(dirty_s):.2f} s, {int(dirty_wire or 0)} bytes sent ({int(dirty_wire or 0)/(int(oos_kib)*1024 or 1):.2f}× the dirty bytes)")
print(f"application 4 KiB random writes, QD 8: {idle} IOPS idle, {busy} IOPS during a full resync "
      f"({int(busy)/max(int(idle),1):.2f}×); the resync ran at {during} MiB/s meanwhile (c-min-rate default 32 MiB/s)")
PY
