#!/usr/bin/env bash
# scripts/deps.sh [--list]
#
# The Debian packages that `make test` (and `make bench`) need, in one
# place: .ci/run and the Makefile's test target both run this script, and
# the README lists the same packages.
#
# Run as root on a machine with apt-get, it installs the missing ones (an
# apt-get update first, only when something is missing). Otherwise it
# prints which are missing and exits 0: the tests skip what is not
# installed, unless TWINBLOCK_REQUIRE_TOOLS=1 (as .ci/run sets) makes a
# missing tool a failure. It exits non-zero only when an install fails.
#
# --list prints the package names, one a line, and exits.
set -euo pipefail

pkgs=(
  fio                 # fio --ioengine=nbd
  libnbd-bin          # nbdinfo, nbdcopy, nbdfuse
  python3-libnbd      # nbdsh, for requests qemu-io will not send
  nbdkit              # the peer in make bench
  jq                  # make bench reads fio's JSON
  qemu-utils          # qemu-io, qemu-img
  e2fsprogs           # mkfs.ext4, e2fsck, debugfs
  fuse3               # fusermount3 for nbdfuse
  qemu-system-x86     # the VM that runs the kernel's nbd-client
  linux-image-amd64   # a kernel with nbd.ko for that VM
  busybox-static      # the VM's userland
  nbd-client          # the kernel NBD client, copied into the VM
  cpio                # packs the VM's initramfs
  iptables            # the quorum tests partition the Primary (loopback ports only)
  resource-agents     # ocf-tester and ocf-shellfuncs, for the OCF agent's test
  libxml2-utils       # xmllint, with which ocf-tester checks the agent's meta-data
  systemd             # systemd-analyze verify, for the installed units (make install)
  groff-base          # renders the installed man pages (make install)
)

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${pkgs[@]}"
  exit 0
fi

if ! command -v dpkg-query >/dev/null; then
  echo "deps: not a Debian system; the tests that need these skip unless installed: ${pkgs[*]}" >&2
  exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "deps: missing Debian packages: ${missing[*]}" >&2
  echo "deps: the tests that need them skip; install them with: sudo bash scripts/deps.sh" >&2
  exit 0
fi

echo "deps: installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
