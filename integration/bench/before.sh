# before.sh — a BENCH_EXTRA file for bench.sh: the columns "before" and
# "before-C", the same servers as "twinblock" and "twinblock-C" run by an
# earlier build ($BENCH_BEFORE), so that a change's before and after are
# measured in one run, on the same files and load:
#
#   git worktree add /tmp/old REV && (cd /tmp/old && go build -o /tmp/tb-old ./cmd/twinblock)
#   BENCH_BEFORE=/tmp/tb-old BENCH_EXTRA="integration/bench/replicated.sh integration/bench/before.sh" \
#       bash integration/bench/bench.sh bin/twinblock

[[ -x ${BENCH_BEFORE:-} ]] || die "before.sh: BENCH_BEFORE must name an earlier twinblock binary"
bf_disk=$(make_disk before)
bf_port=$(free_port)
start_bg before "$BENCH_BEFORE" serve --disk "$bf_disk" --listen "127.0.0.1:$bf_port" --export "$EXPORT"
wait_port "$bf_port" before "$BG_PID"
add_target before "nbd://127.0.0.1:$bf_port/$EXPORT" "$BG_PID"
bf_saved=$TWINBLOCK
TWINBLOCK=$BENCH_BEFORE REP_NAME=before-C
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/replicated.sh"
TWINBLOCK=$bf_saved
unset REP_NAME
