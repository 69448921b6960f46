#!/usr/bin/env bash
# profile.sh [path/to/twinblock] — the per-write cost of a replicated 4k
# random write at QD32, from CPU profiles (issue 17; make bench runs it).
# A protocol C pair on /dev/shm; fio drives the Primary for 12 s while
# `go tool pprof` samples both daemons (--pprof) for 8 s; the table gives,
# for each node, the CPU microseconds per write spent under each stage
# (cumulative time of the stage's function: the stages overlap where one
# calls another, so they do not add up to the total).
set -euo pipefail
TB=${1:-bin/twinblock}
TB=$(cd "$(dirname "$TB")" && pwd)/$(basename "$TB")
W=$(mktemp -d "${BENCH_DIR:-/dev/shm}/twinblock-profile.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"' EXIT
port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"; }
for n in a b; do truncate -s 1G "$W/$n.img"; done
na=$(port 127.0.0.1) qa=$(port 127.0.0.1) qb=$(port 127.0.0.1)
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
	p=$qa; [[ $n == b ]] && p=$qb
	"$TB" --config "$W/c.conf" --node "$n" --control "$W/$n.sock" daemon --status-file "$W/$n.st" --state-dir "$W/$n" \
		--pprof "127.0.0.1:$p" 2>"$W/$n.log" &
	PIDS+=($!)
done
for _ in $(seq 100); do [[ -S $W/a.sock && -S $W/b.sock ]] && break; sleep 0.1; done
tb a up r0; tb b up r0
tb a wait-connect -t 30 r0
tb a primary --force r0
tb a wait-sync -t 300 r0
fio --name=p --ioengine=nbd --uri="nbd://127.0.0.1:$na/r0" --rw=randwrite --bs=4k --iodepth=32 --numjobs=1 \
	--time_based --runtime=12 --ramp_time=1 --norandommap --randrepeat=0 --output-format=json --output="$W/fio.json" >/dev/null 2>&1 &
fio_pid=$!
sleep 3
curl -s -o "$W/a.pprof" "http://127.0.0.1:$qa/debug/pprof/profile?seconds=8" &
ca=$!
curl -s -o "$W/b.pprof" "http://127.0.0.1:$qb/debug/pprof/profile?seconds=8" &
cb=$!
wait "$fio_pid" "$ca" "$cb"
iops=$(jq -r '.jobs[0].write.iops' "$W/fio.json")
writes=$(python3 -c "print(int($iops * 8))") # during the 8 s sampled
echo "per-write CPU cost, protocol C pair, 4k randwrite QD32: $(printf '%.0f' "$iops") IOPS, ${writes} writes in the 8 s profiled"
printf '%-44s %12s %12s\n' "stage (cumulative)" "Primary us" "Secondary us"
cum() { # cum PROFILE FUNC: seconds of CPU under the function FUNC (its cumulative time)
	go tool pprof -top -cum -nodecount=400 "$TB" "$1" 2>/dev/null |
		awk -v fn="$2" '$6 == fn { v=$4; if (v ~ /ms$/) { sub(/ms$/,"",v); v/=1000 } else sub(/s$/,"",v); print v; exit }'
}
total() { go tool pprof -top "$TB" "$1" 2>/dev/null | sed -n 's/.*Total samples = \([0-9.]*\)\(m*s\).*/\1 \2/p' | awk '{ print ($2 == "ms") ? $1/1000 : $1 }'; }
row() {
	local label=$1 re=$2 a b
	a=$(cum "$W/a.pprof" "$re"); b=$(cum "$W/b.pprof" "$re")
	printf '%-44s %12s %12s\n' "$label" \
		"$(python3 -c "print(f'{${a:-0}*1e6/$writes:.2f}')")" "$(python3 -c "print(f'{${b:-0}*1e6/$writes:.2f}')")"
}
ta=$(total "$W/a.pprof"); tbb=$(total "$W/b.pprof")
printf '%-44s %12s %12s\n' "total CPU" \
	"$(python3 -c "print(f'{$ta*1e6/$writes:.2f}')")" "$(python3 -c "print(f'{$tbb*1e6/$writes:.2f}')")"
row "NBD: read and parse requests" 'github.com/twinblock/twinblock/nbd.(*conn).readLoop'
row "NBD: reply" 'github.com/twinblock/twinblock/nbd.(*conn).reply'
row "device: the write, local half and wait" 'github.com/twinblock/twinblock/pkg/node.(*device).mutate'
row "local disk write (pwrite)" 'github.com/twinblock/twinblock/pkg/disk.(*File).WriteAt'
row "activity log (BeginWrite)" 'github.com/twinblock/twinblock/pkg/meta.(*Meta).BeginWrite'
row "link: send (writev of the batch)" 'github.com/twinblock/twinblock/replication.(*Link).send'
row "link: receive (acks / the peer's writes)" 'github.com/twinblock/twinblock/replication.(*Link).receiveLoop'
row "peer: apply (the Secondary's write)" 'github.com/twinblock/twinblock/replication.(*applier).worker'
row "Go scheduler (findRunnable)" 'runtime.findRunnable'
