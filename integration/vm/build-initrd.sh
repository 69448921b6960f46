#!/bin/sh
# build-initrd.sh OUTDIR
#
# Builds a tiny initramfs (OUTDIR/initrd.gz) for booting Debian's own kernel
# under qemu to exercise the Linux kernel NBD client (nbd.ko + nbd-client)
# against twinblock. Everything comes from files already on this host
# (Debian packages busybox-static, nbd-client, e2fsprogs, linux-image-amd64);
# nothing is downloaded.
#
# The kernel version is the newest one that has both /boot/vmlinuz-<ver> and
# /lib/modules/<ver>/kernel/drivers/block/nbd.ko* (the running kernel may be a
# different one without nbd). Override with TB_KVER=<ver>.
#
# Optional: TB_TWINBLOCK=/path/to/twinblock copies that (statically linked)
# binary in as /bin/twinblock, and debugfs beside mke2fs and e2fsck, for the
# guest's pair mode (integration/kerneldev_test.go). The binary's content is
# part of the cache key; give such a build its own OUTDIR, or it and the
# default build replace each other's initrd on every run.
#
# Idempotent: when the inputs have not changed since the last build, the
# existing initrd is reused. Prints, on stdout:
#   KERNEL=/boot/vmlinuz-<ver>
#   INITRD=OUTDIR/initrd.gz
#   KVER=<ver>
set -eu

out=${1:?usage: build-initrd.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
init_src=$here/init

die() { echo "build-initrd: $*" >&2; exit 1; }

# --- pick the kernel --------------------------------------------------------
kver=${TB_KVER:-}
if [ -z "$kver" ]; then
	for d in $(ls -1 /lib/modules 2>/dev/null | sort -rV); do
		if [ -f "/boot/vmlinuz-$d" ] &&
			ls "/lib/modules/$d/kernel/drivers/block/"nbd.ko* >/dev/null 2>&1; then
			kver=$d
			break
		fi
	done
fi
if [ -z "$kver" ]; then
	# Exit status 3: nothing to boot here (the Go test skips on it).
	echo "build-initrd: no kernel with both /boot/vmlinuz-<ver> and nbd.ko under /lib/modules (apt-get install linux-image-amd64)" >&2
	exit 3
fi
kernel=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[ -r "$kernel" ] || die "$kernel not readable"
[ -f "$moddir/modules.dep" ] || die "$moddir/modules.dep missing"

# --- tools ------------------------------------------------------------------
busybox=
for b in /bin/busybox /usr/bin/busybox; do
	[ -x "$b" ] && { busybox=$b; break; }
done
[ -n "$busybox" ] || die "busybox not found (apt-get install busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then
	die "$busybox is dynamically linked; install busybox-static"
fi
nbdclient=
for c in /usr/sbin/nbd-client /sbin/nbd-client $(command -v nbd-client || true); do
	[ -x "$c" ] && { nbdclient=$c; break; }
done
[ -n "$nbdclient" ] || die "nbd-client not found (apt-get install nbd-client)"
tbbin=${TB_TWINBLOCK:-}
if [ -n "$tbbin" ]; then
	[ -f "$tbbin" ] && [ -x "$tbbin" ] || die "TB_TWINBLOCK=$tbbin is not an executable file"
	if ldd "$tbbin" >/dev/null 2>&1; then
		die "$tbbin is dynamically linked; build it with CGO_ENABLED=0"
	fi
fi

# Optional: e2fsprogs for a filesystem test in the guest (and debugfs for the
# pair mode's look into the Secondary's disk file).
extras=
progs="mke2fs e2fsck"
[ -n "$tbbin" ] && progs="$progs debugfs"
for p in $progs; do
	for d in /usr/sbin /sbin; do
		if [ -x "$d/$p" ]; then extras="$extras $d/$p"; break; fi
	done
done

# Modules (by name) to load in this order; dependencies are added from
# modules.dep. crc32c_generic is ext4's/jbd2's softdep (crypto-crc32c).
want_mods="e1000 nbd"
for m in crc32c_generic ext4; do
	if grep -q "/$m\.ko[.a-z]*:" "$moddir/modules.dep"; then
		want_mods="$want_mods $m"
	fi
done

# --- cache check ------------------------------------------------------------
mkdir -p "$out"
out=$(cd "$out" && pwd)
initrd=$out/initrd.gz
stampf=$out/initrd.stamp
stamp=$(
	{
		echo "kver=$kver mods=$want_mods"
		cat "$0" "$init_src"
		ls -lL "$kernel" "$busybox" "$nbdclient" $extras "$moddir/modules.dep"
		if [ -n "$tbbin" ]; then
			echo "twinblock"
			md5sum <"$tbbin"
		fi
	} | md5sum | cut -d' ' -f1
)
if [ -f "$initrd" ] && [ -f "$stampf" ] && [ "$(cat "$stampf")" = "$stamp" ]; then
	echo "KERNEL=$kernel"
	echo "INITRD=$initrd"
	echo "KVER=$kver"
	exit 0
fi

# --- build ------------------------------------------------------------------
root=$(mktemp -d "$out/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/sbin" "$root/etc" "$root/proc" "$root/sys" \
	"$root/dev" "$root/tmp" "$root/mnt" "$root/lib/modules" "$root/run"

cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do
	[ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
done

# copy_with_libs SRC DEST: copy an ELF program to DEST inside the initramfs,
# plus the shared libraries ldd lists, at their host paths.
copy_with_libs() {
	mkdir -p "$root$(dirname "$2")"
	cp -L "$1" "$root$2"
	ldd "$1" 2>/dev/null | awk '
		/=>/ && $3 ~ /^\// { print $3; next }
		$1 ~ /^\// { print $1 }' | while read -r lib; do
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}
# Fixed paths in the guest: /usr/sbin/nbd-client, /usr/sbin/mke2fs,
# /usr/sbin/e2fsck (and /usr/sbin/debugfs). The guest calls these by full path, because Debian's
# busybox sh runs its own applets (it has a mke2fs applet) before PATH.
copy_with_libs "$nbdclient" /usr/sbin/nbd-client
for e in $extras; do
	copy_with_libs "$e" "/usr/sbin/$(basename "$e")"
done
# The dynamic loader, at its canonical path.
for ld in /lib64/ld-linux-x86-64.so.2; do
	if [ -e "$ld" ] && [ ! -e "$root$ld" ]; then
		mkdir -p "$root$(dirname "$ld")"
		cp -L "$ld" "$root$ld"
	fi
done
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/"
ln -sf /proc/mounts "$root/etc/mtab"
echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"

# Modules: modules.dep lists each module's full dependency closure, the ones
# to load first last. Decompress them and write the load order.
: >"$root/lib/modules/load.order"
seen=" "
copy_mod() {
	case "$seen" in *" $1 "*) return 0 ;; esac
	seen="$seen$1 "
	base=${1##*/}
	name=${base%%.ko*}.ko
	case "$base" in
	*.ko) cp "$moddir/$1" "$root/lib/modules/$name" ;;
	*.ko.xz) xz -dc "$moddir/$1" >"$root/lib/modules/$name" ;;
	*.ko.zst) zstd -qdc "$moddir/$1" >"$root/lib/modules/$name" ;;
	*.ko.gz) gzip -dc "$moddir/$1" >"$root/lib/modules/$name" ;;
	*) die "unknown module format: $moddir/$1" ;;
	esac
	echo "$name" >>"$root/lib/modules/load.order"
}
for m in $want_mods; do
	line=$(awk -v m="$m" '{ n = $1; sub(/:$/, "", n); sub(/.*\//, "", n); sub(/\.ko.*/, "", n); if (n == m) { print; exit } }' "$moddir/modules.dep")
	if [ -z "$line" ]; then
		# Built into the kernel? Then there is nothing to load.
		if grep -q "/$m\.ko\$" "$moddir/modules.builtin" 2>/dev/null; then continue; fi
		die "module $m not found in $moddir/modules.dep"
	fi
	rel=${line%%:*}
	for d in $(echo "${line#*:}" | tr ' ' '\n' | sed '/^$/d' | tac); do
		copy_mod "$d"
	done
	copy_mod "$rel"
done

if [ -n "$tbbin" ]; then
	cp "$tbbin" "$root/bin/twinblock"
	chmod 0755 "$root/bin/twinblock"
fi

cp "$init_src" "$root/init"
chmod 0755 "$root/init"
echo "$kver" >"$root/etc/tb-kver"

tmp=$(mktemp "$out/initrd.gz.XXXXXX")
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) | gzip -1 >"$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$initrd"
echo "$stamp" >"$stampf"

echo "built $initrd ($(du -h "$initrd" | cut -f1)) with modules: $(tr '\n' ' ' <"$root/lib/modules/load.order")" >&2
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
echo "KVER=$kver"
