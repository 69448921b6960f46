# variants.sh — a BENCH_EXTRA file for bench.sh (make bench sources it):
# the columns "twinblock-A" (protocol A: a write is acknowledged once it is
# on the local disk and sent) and "twinblock-C+resync" (protocol C with a
# full resync running underneath, restarted before each row, at resync-rate
# 100M with the controller off, so that it outlasts a row). Each is a pair
# of daemons on loopback, as replicated.sh's.

# shellcheck disable=SC1091
REP_NAME=twinblock-A REP_PROTOCOL=A source "$(dirname "${BASH_SOURCE[0]}")/replicated.sh"
# shellcheck disable=SC1091
REP_NAME=twinblock-C+resync REP_PROTOCOL=C REP_RESYNC=1 REP_DISK="resync-rate 100M; c-plan-ahead 0;" \
	source "$(dirname "${BASH_SOURCE[0]}")/replicated.sh"
unset REP_NAME REP_PROTOCOL REP_RESYNC REP_DISK
