package integration

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Layout of the 64 MiB export used by TestKernelNBDClient. The guest makes
// an ext4 filesystem in the first kernelFSMiB and writes a random pattern of
// kernelPatternMiB at kernelPatternSeekMiB, well clear of the filesystem, so
// the host can check both independently afterwards.
const (
	kernelDiskMiB        = 64
	kernelPatternSeekMiB = 60
	kernelPatternMiB     = 4
	kernelFSMiB          = 32
	kernelQemuTimeout    = 180 * time.Second
	kernelGuestWatchdog  = 150 // seconds; fires before the host gives up
)

// TestKernelNBDClient boots Debian's kernel under qemu with an initramfs
// holding nbd.ko and nbd-client (see vm/build-initrd.sh and vm/init), attaches
// our export as /dev/nbd0 through qemu's user-mode network (the guest's
// 10.0.2.2 is the host's 127.0.0.1), writes and reads it back through the
// kernel's block layer, makes and checks an ext4 filesystem on it, and then
// verifies on the host that the bytes reached the server's backing file.
//
// The VM runs under TCG (software emulation) by default; set
// TWINBLOCK_QEMU_ACCEL=kvm to use KVM where it works (nested KVM on some
// build machines opens /dev/kvm fine and then hangs in the BIOS).
func TestKernelNBDClient(t *testing.T) {
	requireTools(t, "qemu-system-x86_64", "nbd-client", "busybox", "cpio", "gzip")
	start := time.Now()

	kernel, initrd := buildKernelInitrd(t)
	t.Logf("kernel %s, initrd %s (%v)", kernel, initrd, time.Since(start).Round(time.Millisecond))

	disk := makeDisk(t, kernelDiskMiB<<20)
	s := startServe(t, disk)
	_, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		t.Fatalf("server address %q: %v", s.Addr, err)
	}

	accel := os.Getenv("TWINBLOCK_QEMU_ACCEL")
	if accel == "" {
		accel = "tcg"
	}
	appendLine := fmt.Sprintf("console=ttyS0 quiet panic=-1 tb.port=%s tb.export=%s tb.seek=%d tb.mib=%d tb.fsmib=%d tb.timeout=%d",
		port, s.Export, kernelPatternSeekMiB, kernelPatternMiB, kernelFSMiB, kernelGuestWatchdog)
	args := []string{
		"-accel", accel,
		"-m", "512", "-smp", "1",
		"-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", appendLine,
		"-netdev", "user,id=n0", "-device", "e1000,netdev=n0",
	}

	bootStart := time.Now()
	console, qerr := runQemu(kernelQemuTimeout, args)
	bootTime := time.Since(bootStart)
	m := parseMarkers(console)
	logConsole := func() {
		t.Helper()
		t.Logf("qemu-system-x86_64 %s", strings.Join(args, " "))
		t.Logf("guest console (%v):\n%s", bootTime.Round(time.Millisecond), cleanConsole(console))
	}
	if qerr != nil {
		logConsole()
		t.Fatalf("qemu: %v", qerr)
	}
	t.Logf("guest ran for %v (accel %s)", bootTime.Round(time.Millisecond), accel)
	for _, l := range m.all("TB-NBD-CLIENT-OUT") {
		t.Logf("guest nbd-client: %s", l)
	}

	failed := false
	check := func(ok bool, format string, a ...any) {
		t.Helper()
		if !ok {
			failed = true
			t.Errorf(format, a...)
		}
	}
	for _, why := range m.all("TB-FAIL") {
		check(false, "guest: %s", why)
	}
	check(m.last("TB-RESULT") == "PASS", "guest verdict TB-RESULT = %q, want PASS", m.last("TB-RESULT"))
	check(m.last("TB-SIZE") == strconv.Itoa(kernelDiskMiB<<20), "guest /dev/nbd0 size = %q, want %d", m.last("TB-SIZE"), kernelDiskMiB<<20)
	wmd5 := m.last("TB-WRITE-MD5")
	check(len(wmd5) == 32, "no TB-WRITE-MD5 from the guest")
	check(m.last("TB-READ-MD5") == wmd5, "guest read back %q (page cache dropped), wrote %q", m.last("TB-READ-MD5"), wmd5)
	check(m.last("TB-READ-DIRECT-MD5") == wmd5, "guest read back %q (O_DIRECT), wrote %q", m.last("TB-READ-DIRECT-MD5"), wmd5)
	fsResult := m.last("TB-FS-RESULT")
	switch fsResult {
	case "PASS":
		check(m.last("TB-FS-MD5") == wmd5, "file read back from ext4 has md5 %q, want %q", m.last("TB-FS-MD5"), wmd5)
	case "SKIP":
		t.Logf("guest skipped the ext4 test (no mke2fs or ext4 module in the initramfs)")
	default:
		check(false, "guest ext4 test: TB-FS-RESULT = %q", fsResult)
	}
	check(m.last("TB-DISCONNECT") == "rc=0", "nbd-client -d: %q", m.last("TB-DISCONNECT"))

	// The data must have reached our server's backing file, not only the
	// guest's caches: stop the server (it flushes) and look at the file.
	s.Stop(t)
	got := fileRegionMD5(t, disk, kernelPatternSeekMiB<<20, kernelPatternMiB<<20)
	check(got == wmd5, "host backing file [%d MiB, +%d MiB) md5 = %s, guest wrote %s", kernelPatternSeekMiB, kernelPatternMiB, got, wmd5)

	if fsResult == "PASS" {
		checkHostExt4(t, disk, wmd5, check)
	}

	if failed {
		logConsole()
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// buildKernelInitrd runs vm/build-initrd.sh into vm/.cache and returns the
// kernel and initrd paths it reports.
func buildKernelInitrd(t *testing.T) (kernel, initrd string) {
	t.Helper()
	return buildKernelInitrdIn(t, ".cache")
}

// buildKernelInitrdIn runs vm/build-initrd.sh into vm/SUBDIR with env
// ("KEY=value") added to its environment, and returns the kernel and
// initrd paths it reports.
func buildKernelInitrdIn(t *testing.T, subdir string, env ...string) (kernel, initrd string) {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("vm", "build-initrd.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(filepath.Dir(script), subdir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", script, cache)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/usr/sbin:/bin:/sbin:"+os.Getenv("PATH"))
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 3 {
			// No kernel with nbd.ko installed: a missing tool, in effect.
			if os.Getenv("CI") == "true" || os.Getenv("TWINBLOCK_REQUIRE_TOOLS") == "1" {
				t.Fatalf("build-initrd.sh: %s", stderr.String())
			}
			t.Skipf("build-initrd.sh: %s", strings.TrimSpace(stderr.String()))
		}
		t.Fatalf("build-initrd.sh: %v\n%s%s", err, out, stderr.String())
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "KERNEL="); ok {
			kernel = v
		}
		if v, ok := strings.CutPrefix(l, "INITRD="); ok {
			initrd = v
		}
	}
	if kernel == "" || initrd == "" {
		t.Fatalf("build-initrd.sh did not report KERNEL= and INITRD=:\n%s%s", out, stderr.String())
	}
	return kernel, initrd
}

// lockedBuffer is a bytes.Buffer safe for qemu's stdout and stderr at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runQemu runs qemu-system-x86_64 with args until the guest powers off (or
// timeout) and returns everything it printed (the serial console).
func runQemu(timeout time.Duration, args []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var out lockedBuffer
	cmd.Stdin = nil // /dev/null
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.String(), fmt.Errorf("guest did not power off within %v: %w", timeout, ctx.Err())
	}
	return out.String(), err
}

// markers holds the guest's "TB-KEY value" lines in order.
type markers [][2]string

func parseMarkers(console string) markers {
	var m markers
	for _, l := range strings.Split(console, "\n") {
		l = strings.TrimRight(l, "\r")
		i := strings.Index(l, "TB-")
		if i < 0 {
			continue
		}
		k, v, _ := strings.Cut(l[i:], " ")
		m = append(m, [2]string{k, strings.TrimSpace(v)})
	}
	return m
}

func (m markers) last(key string) string {
	for i := len(m) - 1; i >= 0; i-- {
		if m[i][0] == key {
			return m[i][1]
		}
	}
	return ""
}

func (m markers) all(key string) []string {
	var r []string
	for _, kv := range m {
		if kv[0] == key {
			r = append(r, kv[1])
		}
	}
	return r
}

var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\x1bc`)

// cleanConsole strips the terminal escapes SeaBIOS prints.
func cleanConsole(s string) string {
	return strings.ReplaceAll(ansiEscape.ReplaceAllString(s, ""), "\r", "")
}

// fileRegionMD5 returns the hex md5 of size bytes of path at off.
func fileRegionMD5(t *testing.T, path string, off, size int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := md5.New()
	if n, err := io.Copy(h, io.NewSectionReader(f, off, size)); err != nil || n != size {
		t.Fatalf("reading %s [%d, +%d): %d bytes, %v", path, off, size, n, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkHostExt4 checks the guest's ext4 filesystem in the backing file with
// the host's e2fsprogs, when installed: e2fsck finds it clean and
// /pattern.bin holds what the guest wrote.
func checkHostExt4(t *testing.T, disk, wantMD5 string, check func(bool, string, ...any)) {
	t.Helper()
	for _, tool := range []string{"e2fsck", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/sbin/" + tool); err != nil {
				t.Logf("%s not installed; not checking the guest's ext4 on the host", tool)
				return
			}
		}
	}
	out, err := run(t, time.Minute, "e2fsck", "-fn", disk)
	check(err == nil, "host e2fsck -fn on the backing file: %v\n%s", err, out)
	dump := filepath.Join(t.TempDir(), "pattern.bin")
	out, err = run(t, time.Minute, "debugfs", "-R", "dump /pattern.bin "+dump, disk)
	if err != nil {
		check(false, "host debugfs dump /pattern.bin: %v\n%s", err, out)
		return
	}
	st, err := os.Stat(dump)
	if err != nil {
		check(false, "host debugfs dump /pattern.bin: %v\n%s", err, out)
		return
	}
	got := fileRegionMD5(t, dump, 0, st.Size())
	check(got == wantMD5, "host: /pattern.bin in the backing file's ext4 has md5 %s, guest wrote %s", got, wantMD5)
}
