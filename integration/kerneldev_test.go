package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The pair in TestKernelDevicePair: two disk files of kdevDiskMiB in the
// guest's tmpfs, a pattern file of kdevPatternMiB on ext4. Both daemons,
// the kernel's NBD client and ext4 run in one guest under TCG, slower than
// TestKernelNBDClient's: the bounds are wider.
const (
	kdevDiskMiB       = 64
	kdevPatternMiB    = 4
	kdevGuestMemMiB   = 1024 // tmpfs holds both disk files and the unpacked initramfs
	kdevQemuTimeout   = 420 * time.Second
	kdevGuestWatchdog = 360 // seconds; fires before the host gives up
)

// TestKernelDevicePair checks `device /dev/nbdN;`: the Primary's daemon
// attaches its own export to the kernel's NBD device and detaches it before
// demotion. It boots Debian's kernel under qemu with an initramfs that also
// holds a static twinblock (vm/build-initrd.sh with TB_TWINBLOCK); the
// guest's init (vm/init, tb.mode=pair) runs both nodes of a pair on
// loopback: alpha (with the device) and beta, create-md, two daemons, up,
// primary --force on alpha, wait-sync. It then waits for /dev/nbd0 to get
// its size, makes ext4 on it, mounts it, writes a pattern file, tries
// secondary while mounted (refused), unmounts, demotes alpha (the device
// detaches), takes both down and compares the two disk files' data areas,
// checks beta's filesystem with e2fsck and reads the pattern file back from
// beta's disk with debugfs.
//
// As TestKernelNBDClient, the VM runs under TCG unless
// TWINBLOCK_QEMU_ACCEL=kvm.
func TestKernelDevicePair(t *testing.T) {
	requireTools(t, "qemu-system-x86_64", "nbd-client", "busybox", "cpio", "gzip")
	start := time.Now()

	bin := buildStaticTwinblock(t)
	wantSize := exportSizeOf(t, bin, kdevDiskMiB<<20)
	kernel, initrd := buildKernelInitrdIn(t, filepath.Join(".cache", "pair"), "TB_TWINBLOCK="+bin)
	t.Logf("static twinblock, kernel %s, initrd %s (%v); export size of a %d MiB disk: %d",
		kernel, initrd, time.Since(start).Round(time.Millisecond), kdevDiskMiB, wantSize)

	accel := os.Getenv("TWINBLOCK_QEMU_ACCEL")
	if accel == "" {
		accel = "tcg"
	}
	appendLine := fmt.Sprintf("console=ttyS0 quiet panic=-1 tb.mode=pair tb.diskmib=%d tb.mib=%d tb.timeout=%d",
		kdevDiskMiB, kdevPatternMiB, kdevGuestWatchdog)
	args := []string{
		"-accel", accel,
		"-m", strconv.Itoa(kdevGuestMemMiB), "-smp", "1",
		"-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", appendLine,
		"-nic", "none",
	}

	bootStart := time.Now()
	console, qerr := runQemu(kdevQemuTimeout, args)
	bootTime := time.Since(bootStart)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("qemu-system-x86_64 %s", strings.Join(args, " "))
			t.Logf("guest console (%v):\n%s", bootTime.Round(time.Millisecond), cleanConsole(console))
			// Last, so that a log cut to its tail still says why.
			m := parseMarkers(console)
			t.Logf("guest failures: %q; markers: %s", m.all("TB-FAIL"), markerSummary(m))
		}
	})
	require.NoError(t, qerr, "qemu")
	t.Logf("guest ran for %v (accel %s)", bootTime.Round(time.Millisecond), accel)
	m := parseMarkers(console)
	for _, kv := range m {
		if !strings.HasPrefix(kv[0], "TB-LOG-") && kv[0] != "TB-DMESG" {
			t.Logf("guest %s %s", kv[0], kv[1])
		}
	}

	for _, why := range m.all("TB-FAIL") {
		assert.Fail(t, "guest: "+why)
	}
	assert.Equal(t, "PASS", m.last("TB-RESULT"), "guest verdict TB-RESULT")
	pmd5 := m.last("TB-PATTERN-MD5")
	assert.Len(t, pmd5, 32, "no TB-PATTERN-MD5 from the guest")
	assert.Equal(t, strconv.FormatInt(wantSize, 10), m.last("TB-DEV-SIZE"),
		"/dev/nbd0's size (/sys/block/nbd0/size*512) once alpha is Primary, want the export's")
	// Refused because the device is in use, as DRBD refuses it (not, say,
	// because the verb timed out).
	mounted, why := m.last("TB-SECONDARY-MOUNTED"), strings.Join(m.all("TB-SECONDARY-MOUNTED-OUT"), " | ")
	assert.True(t, strings.HasPrefix(mounted, "rc=") && mounted != "rc=0",
		"secondary r0 while /dev/nbd0 is mounted: %q, want refused (non-zero)", mounted)
	assert.Contains(t, why, "(-12) Device is held open by someone", "secondary r0 while /dev/nbd0 is mounted")
	assert.Equal(t, "Primary/Secondary", m.last("TB-ROLE-MOUNTED-OUT"), "role r0 after the refused secondary")
	assert.Equal(t, pmd5, m.last("TB-FS-READ-MD5"), "/mnt/pattern.bin read back through /dev/nbd0 after the refused secondary")
	assert.Equal(t, "rc=0", m.last("TB-SECONDARY"), "secondary r0 after umount")
	after, pid := m.last("TB-AFTER-SIZE"), m.last("TB-AFTER-PID")
	t.Logf("after secondary: /sys/block/nbd0/size*512 = %s, pid = %s", after, pid)
	assert.True(t, after == "0" || pid == "none",
		"/dev/nbd0 still attached after secondary: size %s, pid %s", after, pid)

	amd5, bmd5 := m.last("TB-A-MD5"), m.last("TB-B-MD5")
	assert.Len(t, amd5, 32, "no TB-A-MD5 from the guest")
	assert.Equal(t, amd5, bmd5, "md5 of the first %s bytes of alpha's and beta's disk files", m.last("TB-DEV-SIZE"))
	assert.Equal(t, pmd5, m.last("TB-B-PATTERN-MD5"), "/pattern.bin in beta's disk file (debugfs dump)")
	assert.Equal(t, pmd5, m.last("TB-A-PATTERN-MD5"), "/pattern.bin in alpha's disk file (debugfs dump)")
	assert.Equal(t, "rc=0", m.last("TB-E2FSCK"), "e2fsck -fn on beta's disk file: %s", strings.Join(m.all("TB-E2FSCK-OUT"), " | "))

	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// buildStaticTwinblock builds a statically linked twinblock (CGO_ENABLED=0)
// for the guest and returns its path.
func buildStaticTwinblock(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "twinblock")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/twinblock")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "CGO_ENABLED=0 go build ./cmd/twinblock:\n%s", out)
	return bin
}

var usableSize = regexp.MustCompile(`usable data size: (\d+) bytes`)

// exportSizeOf is the export size of a disk of size bytes with internal
// metadata, as create-md reports it.
func exportSizeOf(t *testing.T, bin string, size int64) int64 {
	t.Helper()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	f, err := os.Create(disk)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	conf := filepath.Join(dir, "twinblock.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`resource r0 {
  meta-disk internal;
  on alpha { address 127.0.0.1:7789; disk %s; }
  on beta  { address 127.0.0.2:7789; disk /nonexistent; }
}
`, disk)), 0o644))
	out, err := run(t, time.Minute, bin, "-c", conf, "--node", "alpha", "create-md", "r0")
	require.NoError(t, err, "create-md:\n%s", out)
	sm := usableSize.FindStringSubmatch(out)
	require.NotNil(t, sm, "create-md did not report the usable data size:\n%s", out)
	n, err := strconv.ParseInt(sm[1], 10, 64)
	require.NoError(t, err)
	return n
}

// markerSummary is the guest's markers on one line, without the log,
// dmesg and command-output lines and the failures (logged beside it).
func markerSummary(m markers) string {
	var b strings.Builder
	for _, kv := range m {
		if strings.HasPrefix(kv[0], "TB-LOG-") || strings.HasPrefix(kv[0], "TB-DEVLOG-") ||
			strings.HasSuffix(kv[0], "-OUT") || kv[0] == "TB-DMESG" || kv[0] == "TB-FAIL" {
			continue
		}
		fmt.Fprintf(&b, "%s=%s; ", kv[0], kv[1])
	}
	return b.String()
}
