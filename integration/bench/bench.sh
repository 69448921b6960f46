#!/usr/bin/env bash
# bench.sh — side-by-side NBD throughput/latency benchmark: twinblock vs nbdkit.
#
# Usage: bash integration/bench/bench.sh [path/to/twinblock]     (the body of `make bench`)
#
# Every server exports an equal-size, fully written file on tmpfs. fio's nbd
# ioengine drives each server over 127.0.0.1; every row runs against every
# server once per round, with the server order rotated each round, and the
# table shows the MEDIAN over the rounds. See integration/bench/README.md.
#
# Environment:
#   BENCH_ROUNDS=3      rounds (median is taken over these)
#   BENCH_RUNTIME=5     seconds measured per fio run
#   BENCH_RAMP=1        seconds of fio ramp_time (not measured) per run
#   BENCH_SIZE_MIB=1024 size of each export (shrunk if the tmpfs is short on space)
#   BENCH_DIR=/dev/shm  where the backing files go (tmpfs, so the disk is not measured)
#   BENCH_RAW=FILE      also write the raw per-round results (TSV) to FILE
#   BENCH_EXTRA="a.sh b.sh"
#                       bash files sourced after twinblock is up and before nbdkit;
#                       each may start more servers and add columns with the helpers
#                       below, e.g.
#                         d=$(make_disk primary); port=$(free_port)
#                         start_bg primary bin/twinblock ... --disk "$d" --listen 127.0.0.1:$port
#                         wait_port "$port" primary
#                         add_target primary "nbd://127.0.0.1:$port/bench"
#                       (`on_exit CMD` registers extra cleanup; processes started with
#                       start_bg are terminated automatically.)
set -euo pipefail

TWINBLOCK=${1:-bin/twinblock}
ROUNDS=${BENCH_ROUNDS:-3}
RUNTIME=${BENCH_RUNTIME:-5}
RAMP=${BENCH_RAMP:-1}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
BASE_DIR=${BENCH_DIR:-/dev/shm}
EXPORT=bench

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

[[ -x $TWINBLOCK ]] || die "no executable twinblock at '$TWINBLOCK' (build it: go build -o bin/twinblock ./cmd/twinblock)"
TWINBLOCK=$(cd "$(dirname "$TWINBLOCK")" && pwd)/$(basename "$TWINBLOCK")
for tool in fio nbdkit jq; do
	command -v "$tool" >/dev/null || die "$tool is not installed"
done
if [[ -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; else PYTHON=$(command -v python3) || die "python3 is not installed"; fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ $RUNTIME =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNTIME must be a positive integer (seconds)"
[[ $RAMP =~ ^[0-9]+$ ]] || die "BENCH_RAMP must be a non-negative integer (seconds)"
[[ -d $BASE_DIR ]] || BASE_DIR=/tmp

# ---------------------------------------------------------------- cleanup

WORK=$(mktemp -d "$BASE_DIR/twinblock-bench.XXXXXX")
PIDS=()          # processes we started (start_bg); terminated on exit
EXIT_HOOKS=()    # extra cleanup commands (on_exit)

cleanup() {
	local rc=$? pid i
	trap - EXIT INT TERM
	for ((i = ${#EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
		eval "${EXIT_HOOKS[i]}" || true
	done
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for i in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "pid $pid ignored SIGTERM for 5 s, killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

on_exit() { EXIT_HOOKS+=("$*"); }

# ---------------------------------------------------------------- helpers (also for BENCH_EXTRA)

# free_port: print a TCP port on 127.0.0.1 that is free right now.
free_port() {
	"$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# make_disk NAME: create $WORK/NAME.img of SIZE_MIB, every byte written once
# (so no server pays tmpfs first-touch allocation during a measured run); print its path.
make_disk() {
	local path=$WORK/$1.img avail_mib
	avail_mib=$(df -Pm "$WORK" | awk 'NR == 2 { print $4 }')
	((avail_mib > SIZE_MIB + 64)) || die "only ${avail_mib} MiB free in $WORK, need $((SIZE_MIB + 64)) for $1"
	dd if=/dev/zero of="$path" bs=1M count="$SIZE_MIB" conv=fsync status=none
	echo "$path"
}

# start_bg NAME CMD...: run CMD in the background, stdout+stderr to $WORK/NAME.log.
# Sets BG_PID to its pid; the process is terminated (SIGTERM) on exit.
start_bg() {
	local name=$1
	shift
	"$@" >"$WORK/$name.log" 2>&1 &
	BG_PID=$!
	PIDS+=("$BG_PID")
}

# wait_port PORT NAME [PID]: wait (up to 10 s) until 127.0.0.1:PORT accepts connections.
wait_port() {
	local port=$1 name=$2 pid=${3:-${BG_PID:-}} i
	for i in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			cat "$WORK/$name.log" >&2 2>/dev/null || true
			die "$name exited before listening on port $port"
		fi
		sleep 0.1
	done
	die "$name is not listening on 127.0.0.1:$port after 10 s"
}

TARGET_NAMES=()
TARGET_URIS=()
TARGET_PIDS=()
# add_target NAME URI [PID...]: add a column; every row is run against URI in
# every round. The PIDs (the servers behind it: a Primary, then its
# Secondary) are charged CPU time: the write rows also report CPU seconds
# per GiB written, for each PID in order ("node 1", "node 2").
add_target() {
	[[ $1 =~ ^[A-Za-z0-9_+.-]+$ ]] || die "bad target name '$1'"
	TARGET_NAMES+=("$1")
	TARGET_URIS+=("$2")
	TARGET_PIDS+=("${*:3}")
}

# cpu_ticks PID: the process's user+system CPU time in clock ticks (0 if gone).
cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- rows

# One fio job per entry: id|rw|bs|iodepth|extra fio options. The table rows
# (below, in report()) are derived from these: the QD1 job yields the p50 and
# p99 rows.
JOBS=(
	"randwrite_qd32|randwrite|4k|32|"
	"randread_qd32|randread|4k|32|"
	"seqwrite_1m_qd8|write|1m|8|"
	"randwrite_qd1|randwrite|4k|1|"
	"randwrite_64k_qd16|randwrite|64k|16|"
	"randrw_70_qd16|randrw|4k|16|--rwmixread=70"
	"fsync_4k|randwrite|4k|1|--fsync=1"
	"randwrite_qd32_15k|randwrite|4k|32|--rate_iops=15000"
)
# The write rows whose CPU cost per GiB written is reported. The last job
# only measures that: every server gets the same 15,000 writes a second
# (or as many as it can), so its CPU cost is compared at an equal, moderate
# load, where sleeping and waking between requests weigh more than at
# saturation.
CPU_JOBS=" randwrite_qd32 seqwrite_1m_qd8 randwrite_64k_qd16 randwrite_qd32_15k "

RESULTS=$WORK/results.tsv   # target \t round \t metric \t value
: >"$RESULTS"
FAILED=0
ROUND=0

# run_job NAME URI ID RW BS QD EXTRA PIDS: one fio run; appends its metrics to $RESULTS.
run_job() {
	local name=$1 uri=$2 id=$3 rw=$4 bs=$5 qd=$6 extra=$7 pids=$8
	local out=$WORK/fio-$name-$id-r$ROUND.json
	local -a before=()
	local pid
	for pid in $pids; do before+=("$(cpu_ticks "$pid")"); done
	# shellcheck disable=SC2086
	if ! fio --output-format=json --output="$out" \
		--name="$id" --ioengine=nbd --uri="$uri" \
		--rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs=1 $extra \
		--time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
		--norandommap --randrepeat=0 --lat_percentiles=1 \
		>"$WORK/fio.stderr" 2>&1; then
		log "round $ROUND $name $id: fio failed:"
		sed 's/^/    /' "$WORK/fio.stderr" | sort -u | head -5 >&2 || true
		FAILED=1
		return 0
	fi
	local dir=write
	[[ $rw == *read ]] && dir=read
	# CPU seconds per GiB written, per server process (ramp included in
	# the CPU, so the written bytes include the ramp too: fio's io_kbytes
	# counts only the measured part, hence the scaling by (runtime+ramp)/runtime).
	if [[ $CPU_JOBS == *" $id "* && -n $pids ]]; then
		local gib k=0 after
		gib=$(jq -r --arg r "$RUNTIME" --arg p "$RAMP" '.jobs[0].write.io_kbytes / 1048576 * (($r|tonumber) + ($p|tonumber)) / ($r|tonumber)' "$out")
		for pid in $pids; do
			after=$(cpu_ticks "$pid")
			k=$((k + 1))
			"$PYTHON" -c 'import sys; t,g,hz=float(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]); print(f"{t/hz/g:.3f}" if g > 0 else "0")' \
				"$((after - before[k - 1]))" "$gib" "$CLK_TCK" |
				{ read -r v; printf '%s\t%s\t%s\t%s\n' "$name" "$ROUND" "${id}_cpu$k" "$v" >>"$RESULTS"; }
		done
	fi
	# iops, MiB/s, latency p50/p99 in µs; error is fio's per-job error code.
	# Latency is fio's total "lat" (submission to completion), not "clat": with the
	# nbd engine the request is sent, and often already answered, inside the submit
	# call, so clat alone can be a few µs and depends on how quickly each server
	# replies rather than on the full round trip.
	local line
	line=$(jq -r --arg d "$dir" '.jobs[0] as $j | $j[$d] as $x |
		[$j.error, $x.iops, ($x.bw_bytes / 1048576),
		 ($x.lat_ns.percentile["50.000000"] / 1000),
		 ($x.lat_ns.percentile["99.000000"] / 1000)] | @tsv' "$out") || {
		log "round $ROUND $name $id: cannot parse $out"
		FAILED=1
		return 0
	}
	local err iops mibs p50 p99
	IFS=$'\t' read -r err iops mibs p50 p99 <<<"$line"
	if [[ $err != 0 ]]; then
		log "round $ROUND $name $id: fio reports error $err"
		FAILED=1
		return 0
	fi
	case $id in
	randwrite_qd32 | randread_qd32 | randwrite_64k_qd16 | randrw_70_qd16 | fsync_4k | randwrite_qd32_15k)
		printf '%s\t%s\t%s\t%s\n' "$name" "$ROUND" "$id" "$iops" >>"$RESULTS"
		log "$(printf 'round %d %-10s %-16s %10.0f IOPS' "$ROUND" "$name" "$id" "$iops")"
		;;
	seqwrite_1m_qd8)
		printf '%s\t%s\t%s\t%s\n' "$name" "$ROUND" "$id" "$mibs" >>"$RESULTS"
		log "$(printf 'round %d %-10s %-16s %10.0f MiB/s' "$ROUND" "$name" "$id" "$mibs")"
		;;
	randwrite_qd1)
		printf '%s\t%s\t%s\t%s\n' "$name" "$ROUND" "${id}_p50" "$p50" "$name" "$ROUND" "${id}_p99" "$p99" >>"$RESULTS"
		log "$(printf 'round %d %-10s %-16s %10.1f us p50 %10.1f us p99 (%.0f IOPS)' "$ROUND" "$name" "$id" "$p50" "$p99" "$iops")"
		;;
	esac
	rm -f "$out"
}

# bench_target NAME URI [PIDS]: run every row once against URI, recording under
# NAME for $ROUND. A function pre_job_NAME (dashes and pluses as underscores),
# if defined, runs before each row (the resync column restarts its resync).
bench_target() {
	local name=$1 uri=$2 pids=${3:-} job id rw bs qd extra hook
	hook=pre_job_${name//[-+.]/_}
	for job in "${JOBS[@]}"; do
		IFS='|' read -r id rw bs qd extra <<<"$job"
		if declare -F "$hook" >/dev/null; then "$hook"; fi
		run_job "$name" "$uri" "$id" "$rw" "$bs" "$qd" "$extra" "$pids"
	done
}

# report: the median table. Columns in TARGET order; the last column is the
# baseline (nbdkit) and every other column gets a ratio against it, oriented so
# that >= 1.0 means "at least as good as the baseline".
report() {
	"$PYTHON" - "$RESULTS" "${TARGET_NAMES[@]}" <<'EOF'
import statistics, sys
from collections import defaultdict

path, targets = sys.argv[1], sys.argv[2:]
base = targets[-1]
vals = defaultdict(list)
by_round = defaultdict(dict)  # (target, metric) -> {round: value}
with open(path) as f:
    for line in f:
        t, rnd, metric, v = line.rstrip("\n").split("\t")
        vals[(t, metric)].append(float(v))
        by_round[(t, metric)][rnd] = float(v)

# metric, label, higher_is_better, format
rows = [
    ("randwrite_qd32", "4k randwrite QD32 (IOPS)", True, "{:,.0f}"),
    ("randread_qd32", "4k randread QD32 (IOPS)", True, "{:,.0f}"),
    ("seqwrite_1m_qd8", "1M seqwrite QD8 (MiB/s)", True, "{:,.0f}"),
    ("randwrite_qd1_p50", "4k randwrite QD1 p50 (us)", False, "{:,.1f}"),
    ("randwrite_qd1_p99", "4k randwrite QD1 p99 (us)", False, "{:,.1f}"),
    ("randwrite_64k_qd16", "64k randwrite QD16 (IOPS)", True, "{:,.0f}"),
    ("randrw_70_qd16", "4k randrw 70/30 QD16 (IOPS)", True, "{:,.0f}"),
    ("fsync_4k", "4k write+fsync QD1 (IOPS)", True, "{:,.0f}"),
    ("randwrite_qd32_15k", "4k QD32 at 15k IOPS (IOPS)", True, "{:,.0f}"),
]
for job, label in [("randwrite_qd32", "4k randwrite QD32"), ("seqwrite_1m_qd8", "1M seqwrite QD8"), ("randwrite_64k_qd16", "64k randwrite QD16"),
                   ("randwrite_qd32_15k", "4k QD32 at 15k IOPS")]:
    for k in (1, 2):
        rows.append((f"{job}_cpu{k}", f"CPU s/GiB {label} n{k}", False, "{:,.2f}"))

def median(t, m):
    v = vals.get((t, m))
    return statistics.median(v) if v else None

others = [t for t in targets if t != base]
w = max(12, *(len(t) + 2 for t in targets))
head = f"{'row':<28}" + "".join(f"{t:>{w}}" for t in targets)
if len(others) == 1:
    head += f"   ratio ({others[0]}/{base}, >=1.0 is better)"
else:
    head += "".join(f"   {t + '/' + base:>{max(8, len(t) + len(base) + 1)}}" for t in others)
    head += "   (ratio >= 1.0 is better)"
print(head)
for metric, label, higher, fmt in rows:
    line = f"{label:<28}"
    med = {t: median(t, metric) for t in targets}
    for t in targets:
        line += f"{(fmt.format(med[t]) if med[t] is not None else 'n/a'):>{w}}"
    for t in others:
        a, b = med[t], med[base]
        if a is None or b is None or a == 0 or b == 0:
            r = "n/a"
        else:
            r = f"{(a / b) if higher else (b / a):.2f}x"
        cw = 5 if len(others) == 1 else max(8, len(t) + len(base) + 1)
        line += f"   {r:>{cw}}"
    if not higher and "(us)" in label:
        line += f"   (latency: ratio = {base}/{others[0] if len(others) == 1 else 'column'})"
    elif not higher:
        line += f"   (CPU: ratio = {base}/column, the server processes' user+system time)"
    print(line)

# An earlier build's columns (before.sh: "before", "before-C") against this
# build's, round by round: the two ran back to back in each round, so the
# ratio cancels the machine's drift between rounds, which the medians keep
# (a run of one binary in both columns gave per-round ratios from 0.73 to
# 1.16 at 4k QD32, median 1.02: a change must beat that spread).
pairs = [(t.replace("before", "twinblock", 1), t) for t in targets if t.startswith("before")]
pairs = [(n, o) for n, o in pairs if n in targets]
if pairs:
    print()
    print("this build against the earlier one, per round (ratio >= 1.0: this build is better): median [min .. max]")
    for metric, label, higher, _fmt in rows:
        line, any_ = f"{label:<28}", False
        for new_t, old_t in pairs:
            a, b = by_round.get((new_t, metric), {}), by_round.get((old_t, metric), {})
            rs = sorted((a[r] / b[r]) if higher else (b[r] / a[r]) for r in a if r in b and a[r] and b[r])
            if rs:
                any_ = True
                line += f"   {new_t}/{old_t} {statistics.median(rs):.2f}x [{rs[0]:.2f} .. {rs[-1]:.2f}]"
        if any_:
            print(line)
EOF
}

# ---------------------------------------------------------------- setup

START=$(date +%s)
# Disks: twinblock's and nbdkit's, and two per BENCH_EXTRA file (a pair).
read -ra _extras <<<"${BENCH_EXTRA:-}"
NTARGETS_EST=$((2 + 2 * ${#_extras[@]}))
[[ " ${BENCH_EXTRA:-} " == *variants.sh* ]] && NTARGETS_EST=$((NTARGETS_EST + 2)) # two pairs
avail_mib=$(df -Pm "$WORK" | awk 'NR == 2 { print $4 }')
while ((SIZE_MIB > 64 && NTARGETS_EST * SIZE_MIB + 256 > avail_mib)); do
	SIZE_MIB=$((SIZE_MIB / 2))
done
((NTARGETS_EST * SIZE_MIB + 128 <= avail_mib)) || die "not enough space in $WORK ($avail_mib MiB free)"

echo "twinblock bench — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine: $(nproc) cores, $(uname -sr), $(fio --version), $(nbdkit --version 2>&1 | head -1)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "setup: ${SIZE_MIB} MiB exports on $(df -P "$WORK" | awk 'NR == 2 { print $1 }') ($BASE_DIR), $ROUNDS rounds x ${RUNTIME} s (+${RAMP} s ramp) per row, fio nbd engine, numjobs=1, median shown"
echo

# twinblock first column.
tb_disk=$(make_disk twinblock)
start_bg twinblock "$TWINBLOCK" serve --disk "$tb_disk" --listen 127.0.0.1:0 --export "$EXPORT"
tb_pid=$BG_PID
tb_addr=
for _ in $(seq 100); do
	tb_addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$WORK/twinblock.log" | head -1)
	[[ -n $tb_addr ]] && break
	kill -0 "$tb_pid" 2>/dev/null || { cat "$WORK/twinblock.log" >&2; die "twinblock exited before listening"; }
	sleep 0.1
done
[[ -n $tb_addr ]] || die "twinblock did not print 'listening on' within 10 s"
add_target twinblock "nbd://$tb_addr/$EXPORT" "$tb_pid"

# Extra columns (replicated Primary, qemu quorum, ...).
for extra in ${BENCH_EXTRA:-}; do
	[[ -f $extra ]] || die "BENCH_EXTRA file '$extra' not found"
	log "sourcing $extra"
	# shellcheck disable=SC1090
	source "$extra"
done

# nbdkit last: the baseline column.
nk_disk=$(make_disk nbdkit)
nk_port=$(free_port)
start_bg nbdkit nbdkit -f -p "$nk_port" -i 127.0.0.1 file "$nk_disk"
wait_port "$nk_port" nbdkit "$BG_PID"
add_target nbdkit "nbd://127.0.0.1:$nk_port/$EXPORT" "$BG_PID"

# ---------------------------------------------------------------- rounds

n=${#TARGET_NAMES[@]}
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
	# Rotate the order each round so no server always runs first (or right after another).
	for ((k = 0; k < n; k++)); do
		i=$(((k + ROUND - 1) % n))
		bench_target "${TARGET_NAMES[i]}" "${TARGET_URIS[i]}" "${TARGET_PIDS[i]}"
	done
done

report
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); total $(($(date +%s) - START)) s"
if [[ -n ${BENCH_RAW:-} ]]; then cp "$RESULTS" "$BENCH_RAW"; fi
if ((FAILED)); then
	die "some fio runs failed (see messages above); their cells are missing from the medians"
fi
