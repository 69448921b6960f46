#!/usr/bin/env bash
# resync64g.sh [path/to/twinblock] — the resync of a 1%-dirty 64 GiB device
# (issue 17): a pair on sparse 64 GiB files (BENCH_DIR, default /tmp: a
# disk, since the initial sync writes the target in full, which tmpfs would
# hold in RAM), the initial sync of the (zero) device, then 1% of its 4 KiB
# blocks written at random while the Secondary is disconnected, and the
# time of the bitmap resync when it reconnects. BENCH_RESYNC_GIB changes
# the size. Not part of make bench (it writes 64 GiB): run it by hand.
# Measured on the 2-core build machine: initial sync 27.2 s; the 1% resync
# (167,772 blocks, 652 MiB) 5.29 s; the Primary's RSS after it 38.3 MiB.
set -euo pipefail
TB=${1:-bin/twinblock}
TB=$(cd "$(dirname "$TB")" && pwd)/$(basename "$TB")
GIB=${BENCH_RESYNC_GIB:-64}
W=$(mktemp -d "${BENCH_DIR:-/tmp}/twinblock-resync64.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"' EXIT
die() { echo "resync64g: $*" >&2; exit 1; }
port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"; }
now() { date +%s.%N; }
truncate -s "${GIB}G" "$W/a.img" "$W/b.img"
na=$(port 127.0.0.1)
cat >"$W/c.conf" <<CONF
resource r0 {
  meta-disk internal;
  net { ping-int 2; connect-int 1; }
  on a { address 127.0.0.1:$(port 127.0.0.1); disk $W/a.img; nbd-listen 127.0.0.1:$na; }
  on b { address 127.0.0.2:$(port 127.0.0.2); disk $W/b.img; }
}
CONF
tb() { "$TB" --config "$W/c.conf" --node "$1" --control "$W/$1.sock" "${@:2}"; }
for n in a b; do
	tb "$n" create-md r0 >/dev/null
	"$TB" --config "$W/c.conf" --node "$n" --control "$W/$n.sock" daemon --status-file "$W/$n.st" --state-dir "$W/$n" 2>"$W/$n.log" &
	PIDS+=($!)
done
for _ in $(seq 100); do [[ -S $W/a.sock && -S $W/b.sock ]] && break; sleep 0.1; done
tb a up r0; tb b up r0
tb a wait-connect -t 30 r0
t0=$(now)
tb a primary --force r0
tb a wait-sync -t 3600 r0
t1=$(now)
echo "initial sync of ${GIB} GiB (sparse, zero): $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"
tb b disconnect r0
blocks=$(((GIB << 30) / 4096 / 100))
fio --name=dirty --ioengine=nbd --uri="nbd://127.0.0.1:$na/r0" --rw=randwrite --bs=4k --number_ios="$blocks" \
	--size=$((GIB << 30)) --iodepth=16 --randrepeat=0 --norandommap --output="$W/fio.out" >/dev/null 2>&1 || die "fio failed"
sleep 1.2
oos=$(sed -n 's/.*oos:\([0-9]*\).*/\1/p' "$W/a.st")
t0=$(now)
tb b connect r0
tb a wait-sync -t 3600 r0
t1=$(now)
python3 -c "
t=$t1-$t0; oos=$oos
print(f'bitmap resync, 1% dirty ({$blocks} random 4 KiB writes, {oos} KiB out of sync): {t:.2f} s, {oos/1024/t:.0f} MiB/s of dirty data')"
echo "Primary RSS after: $(awk '/^VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/${PIDS[0]}/status)"
