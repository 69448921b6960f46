# replicated.sh — a BENCH_EXTRA file for bench.sh (make bench sources it):
# adds the column "twinblock-C", a Primary replicating with protocol C to a
# Secondary on the same machine (peer link over loopback, 127.0.0.1 and
# 127.0.0.2), both disks on the same tmpfs as the other servers'.
# Uses the helpers bench.sh defines (make_disk, free_port, start_bg, ...).
# REP_NAME names the column (before.sh sources this file again with an
# earlier binary as $TWINBLOCK); REP_PROTOCOL is the protocol (C); REP_DISK
# adds statements to the disk section; REP_RESYNC=1 keeps a resync running
# under the measurements (a pre-job hook restarts it with invalidate-remote
# whenever the pair is in sync).

rep_name=${REP_NAME:-twinblock-C}
rep_protocol=${REP_PROTOCOL:-C}
rep_dir=$WORK/$rep_name
mkdir -p "$rep_dir"
rep_a=$(make_disk "$rep_name-a")
rep_b=$(make_disk "$rep_name-b")
rep_pa=$(free_port)
rep_pb=$(free_port)
rep_nbd=$(free_port)
cat >"$rep_dir/twinblock.conf" <<CONF
resource bench {
  protocol $rep_protocol;
  disk { ${REP_DISK:-} }
  meta-disk internal;
  on a { address 127.0.0.1:$rep_pa; disk $rep_a; nbd-listen 127.0.0.1:$rep_nbd; }
  on b { address 127.0.0.2:$rep_pb; disk $rep_b; }
}
CONF
rep_tb() { "$TWINBLOCK" --config "$rep_dir/twinblock.conf" --node "$1" --control "$rep_dir/$1.sock" "${@:2}"; }
rep_pids=()
for n in a b; do
	rep_tb "$n" create-md bench >/dev/null || die "create-md on $n failed"
	start_bg "$rep_name-$n" "$TWINBLOCK" --config "$rep_dir/twinblock.conf" --node "$n" --control "$rep_dir/$n.sock" \
		daemon --status-file "$rep_dir/$n.status"
	rep_pids+=("$BG_PID")
done
for i in $(seq 100); do
	[[ -S $rep_dir/a.sock && -S $rep_dir/b.sock ]] && break
	sleep 0.1
done
rep_tb a up bench && rep_tb b up bench || die "up failed"
for i in $(seq 100); do
	[[ $(rep_tb a cstate bench 2>/dev/null) == Connected ]] && break
	sleep 0.1
done
[[ $(rep_tb a cstate bench) == Connected ]] || die "the replicated pair did not connect"
rep_tb a primary --force bench || die "primary --force failed"
# The initial sync first: the columns measure replication, not a resync.
for i in $(seq 1200); do
	[[ $(rep_tb b dstate bench 2>/dev/null) == UpToDate/UpToDate ]] && break
	sleep 0.1
done
[[ $(rep_tb b dstate bench) == UpToDate/UpToDate ]] || die "the initial sync did not finish"
wait_port "$rep_nbd" "$rep_name-a"
add_target "$rep_name" "nbd://127.0.0.1:$rep_nbd/bench" "${rep_pids[@]}"
log "$rep_name: Primary a replicating to b with protocol $rep_protocol ($(rep_tb a dstate bench))"
if [[ ${REP_RESYNC:-} == 1 ]]; then
	# The hook runs in later calls, when these variables have other values
	# (another file may source this one again): it keeps its own copy.
	eval "pre_job_${rep_name//[-+.]/_}() {
		local st
		st=\$(\"$TWINBLOCK\" --config \"$rep_dir/twinblock.conf\" --node a --control \"$rep_dir/a.sock\" dstate bench 2>/dev/null)
		if [[ \$st == UpToDate/UpToDate ]]; then
			if \"$TWINBLOCK\" --config \"$rep_dir/twinblock.conf\" --node a --control \"$rep_dir/a.sock\" invalidate-remote bench >/dev/null 2>&1; then
				log \"$rep_name: a full resync starts under the next row\"
			else
				log \"$rep_name: invalidate-remote failed\"
			fi
		else
			log \"$rep_name: the resync still runs (\$st)\"
		fi
	}"
fi
