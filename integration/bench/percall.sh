#!/usr/bin/env bash
# percall.sh [path/to/twinblock] — what one 4k write costs each process, in
# CPU (perf's task-clock) and in system calls, for a protocol C pair and for
# nbdkit (issue 17; by hand: it needs perf, run as root or with
# perf_event_paranoid <= 1). Two loads: fio 4k randwrite QD32 at a fixed
# 15,000 IOPS (PERCALL_RATE), and saturated. Each process is watched for 5 s
# in the middle of a 9 s fio run; the figures are per write fio completed in
# that window's rate.
set -euo pipefail
TB=${1:-bin/twinblock}
TB=$(cd "$(dirname "$TB")" && pwd)/$(basename "$TB")
RATE=${PERCALL_RATE:-15000}
command -v perf >/dev/null || { echo "percall.sh: needs perf" >&2; exit 2; }
W=$(mktemp -d "${BENCH_DIR:-/dev/shm}/twinblock-percall.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"' EXIT
port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"; }

for n in a b k; do truncate -s 1G "$W/$n.img"; done
na=$(port 127.0.0.1) nk=$(port 127.0.0.1)
cat >"$W/c.conf" <<CONF
resource r0 {
  meta-disk internal;
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
pa=${PIDS[0]} pb=${PIDS[1]}
nbdkit -f -p "$nk" -i 127.0.0.1 file "$W/k.img" &
PIDS+=($!)
pk=$!
for _ in $(seq 100); do [[ -S $W/a.sock && -S $W/b.sock ]] && break; sleep 0.1; done
tb a up r0
tb b up r0
tb a wait-connect -t 30 r0
tb a primary --force r0
tb a wait-sync -t 300 r0

calls=(pwrite64 read writev sendto epoll_pwait futex nanosleep)
events=task-clock,raw_syscalls:sys_enter
for c in "${calls[@]}"; do events+=",syscalls:sys_enter_$c"; done

# measure URI RATE NAME=PID...: one fio run; a line per process.
measure() {
	local uri=$1 rate=$2 load=at-$2
	shift 2
	[[ $rate == 0 ]] && load=saturated
	local opt=()
	[[ $rate != 0 ]] && opt=(--rate_iops="$rate")
	fio --name=p --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth=32 --numjobs=1 --size=1g \
		--time_based --runtime=9 --norandommap --randrepeat=0 "${opt[@]}" \
		--output-format=json --output="$W/fio.json" >/dev/null 2>&1 &
	local f=$! np perfs=()
	sleep 2
	for np in "$@"; do
		perf stat -x, -e "$events" -p "${np#*=}" -o "$W/perf-${np#*=}.txt" -- sleep 5 &
		perfs+=($!)
	done
	wait "$f" "${perfs[@]}" # not a bare wait: the servers run in the background too
	local iops
	iops=$(jq -r '.jobs[0].write.iops' "$W/fio.json")
	for np in "$@"; do
		python3 - "$W/perf-${np#*=}.txt" "$iops" "${np%%=*} $load" "${calls[@]}" <<'PY'
import sys
path, iops, label, calls = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
v = {}
for line in open(path):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and not line.startswith("#"):
        try:
            v[f[2]] = float(f[0])
        except ValueError:
            pass
n = iops * 5  # writes in the 5 s watched
print(f"{label:<24}{iops:>9.0f}{v.get('task-clock', 0) * 1e3 / n:>10.2f}{v.get('raw_syscalls:sys_enter', 0) / n:>8.2f}"
      + "".join(f"{v.get('syscalls:sys_enter_' + c, 0) / n:>12.2f}" for c in calls))
PY
	done
}

printf '%-24s%9s%10s%8s' "process, load" "IOPS" "CPU us" "calls"
printf "%12s" "${calls[@]}"
printf '\n'
for rate in "$RATE" 0; do
	measure "nbd://127.0.0.1:$na/r0" "$rate" "Primary=$pa" "Secondary=$pb"
	measure "nbd://127.0.0.1:$nk/" "$rate" "nbdkit=$pk"
done
echo "(per 4k write; CPU us: perf task-clock; calls: system calls, all and by name)"
