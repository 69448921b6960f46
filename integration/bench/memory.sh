#!/usr/bin/env bash
# memory.sh [path/to/twinblock] — the daemon's memory (issue 17): resident
# set size of a Primary and its Secondary idle with one 1 GiB resource,
# under a 4k random write load (fio QD32, 5 s), and of one daemon hosting
# 100 resources (each 64 MiB, up and Connected to a second daemon), all
# on loopback and /dev/shm. Prints one line per figure (VmRSS and VmHWM,
# MiB).
set -euo pipefail
TB=${1:-bin/twinblock}
TB=$(cd "$(dirname "$TB")" && pwd)/$(basename "$TB")
W=$(mktemp -d /dev/shm/twinblock-mem.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"' EXIT
rss() { awk '/^VmRSS|^VmHWM/ { printf "%s %.1f MiB  ", $1, $2 / 1024 }' "/proc/$1/status"; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# One resource, 1 GiB.
for n in a b; do truncate -s 1G "$W/$n.img"; done
nbd=$(port)
cat >"$W/one.conf" <<CONF
resource r0 {
  meta-disk internal;
  on a { address 127.0.0.1:$(port); disk $W/a.img; nbd-listen 127.0.0.1:$nbd; }
  on b { address 127.0.0.2:$(port); disk $W/b.img; }
}
CONF
tb() { "$TB" --config "$1" --node "$2" --control "$W/$2-$3.sock" "${@:4}"; }
for n in a b; do
	tb "$W/one.conf" "$n" one create-md r0 >/dev/null
	"$TB" --config "$W/one.conf" --node "$n" --control "$W/$n-one.sock" daemon --status-file "$W/$n-one.st" --state-dir "$W/$n-one" >"$W/$n-one.log" 2>&1 &
	PIDS+=($!)
done
sleep 1
pa=${PIDS[0]} pb=${PIDS[1]}
tb "$W/one.conf" a one up r0; tb "$W/one.conf" b one up r0
tb "$W/one.conf" a one wait-connect -t 30 r0
tb "$W/one.conf" a one primary --force r0
tb "$W/one.conf" a one wait-sync -t 120 r0
sleep 2
echo "one 1 GiB resource, idle:        Primary $(rss "$pa")| Secondary $(rss "$pb")"
fio --name=m --ioengine=nbd --uri="nbd://127.0.0.1:$nbd/r0" --rw=randwrite --bs=4k --iodepth=32 \
	--time_based --runtime=5 --output=/dev/null >/dev/null 2>&1
echo "after 5 s of 4k randwrite QD32:  Primary $(rss "$pa")| Secondary $(rss "$pb")"

# 100 resources of 64 MiB in one daemon (and its peer).
{
	for i in $(seq 0 99); do
		truncate -s 64M "$W/a$i.img" "$W/b$i.img"
		printf 'resource m%d {\n  meta-disk internal;\n  on a { address 127.0.0.1:%d; disk %s/a%d.img; nbd-listen 127.0.0.1:%d; }\n  on b { address 127.0.0.2:%d; disk %s/b%d.img; }\n}\n' \
			"$i" "$((20000 + i))" "$W" "$i" "$((21000 + i))" "$((22000 + i))" "$W" "$i"
	done
} >"$W/many.conf"
for n in a b; do
	for i in $(seq 0 99); do tb "$W/many.conf" "$n" many create-md "m$i" >/dev/null; done
	"$TB" --config "$W/many.conf" --node "$n" --control "$W/$n-many.sock" daemon --status-file "$W/$n-many.st" --state-dir "$W/$n-many" >"$W/$n-many.log" 2>&1 &
	PIDS+=($!)
done
sleep 1
ma=${PIDS[2]}
tb "$W/many.conf" a many up all; tb "$W/many.conf" b many up all
for i in $(seq 0 99); do tb "$W/many.conf" a many wait-connect -t 60 "m$i"; done
sleep 2
echo "100 resources, Connected, idle:  node a $(rss "$ma")"
