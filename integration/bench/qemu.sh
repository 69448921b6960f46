# qemu.sh — a BENCH_EXTRA file for bench.sh (make bench sources it): the
# column "qemu-quorum", the other userspace answer to a replicated disk:
# qemu-storage-daemon exporting a quorum block driver over a local file and
# an NBD peer (qemu-nbd on 127.0.0.2, serving the second file). Every write
# goes to both children and completes when both did (vote-threshold 1,
# reads from the local file first: read-pattern fifo), as protocol C.
# Skipped with a message when qemu-storage-daemon or qemu-nbd is missing.

if ! command -v qemu-storage-daemon >/dev/null || ! command -v qemu-nbd >/dev/null; then
	log "qemu.sh: qemu-storage-daemon or qemu-nbd missing (apt-get install qemu-system-common qemu-utils): no qemu-quorum column"
else
	qq_local=$(make_disk qemu-quorum-a)
	qq_remote=$(make_disk qemu-quorum-b)
	qq_peer=$(free_port)
	qq_port=$(free_port)
	start_bg qemu-quorum-peer qemu-nbd --format=raw --export-name="$EXPORT" --bind=127.0.0.2 --port="$qq_peer" \
		--persistent --shared=8 --cache=writeback --aio=threads "$qq_remote"
	qq_peer_pid=$BG_PID
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.2/$qq_peer") 2>/dev/null && break
		kill -0 "$qq_peer_pid" 2>/dev/null || { cat "$WORK/qemu-quorum-peer.log" >&2; die "qemu-nbd exited"; }
		sleep 0.1
	done
	start_bg qemu-quorum qemu-storage-daemon \
		--blockdev "driver=file,node-name=local,filename=$qq_local,cache.direct=off,aio=threads" \
		--blockdev "driver=nbd,node-name=peer,server.type=inet,server.host=127.0.0.2,server.port=$qq_peer,export=$EXPORT" \
		--blockdev '{"driver":"quorum","node-name":"q","vote-threshold":1,"read-pattern":"fifo","children":["local","peer"]}' \
		--nbd-server "addr.type=inet,addr.host=127.0.0.1,addr.port=$qq_port" \
		--export "type=nbd,id=e0,node-name=q,name=$EXPORT,writable=on"
	wait_port "$qq_port" qemu-quorum "$BG_PID"
	add_target qemu-quorum "nbd://127.0.0.1:$qq_port/$EXPORT" "$BG_PID" "$qq_peer_pid"
	log "qemu-quorum: qemu-storage-daemon quorum(file, nbd://127.0.0.2:$qq_peer) on 127.0.0.1:$qq_port"
fi
