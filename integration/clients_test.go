package integration

// Tests of `twinblock serve` with the real NBD clients Debian ships (see
// /work/shared/reference/testing.md §1.2 and §2): nbdinfo, qemu-io, nbdcopy,
// fio's nbd engine and nbdfuse with an ext4 loop mount. Each test runs its
// own server on 127.0.0.1 and, where it wrote data, checks the server's
// backing file directly after stopping the server.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	mib            = 1 << 20
	kib            = 1 << 10
	clientTimeout  = 60 * time.Second
	nbdfuseTimeout = 60 * time.Second
)

// runSplit runs a command with a timeout and returns stdout and stderr
// separately (run merges them). PATH gets /usr/bin first, as in run.
func runSplit(t *testing.T, timeout time.Duration, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/usr/sbin:/bin:/sbin:"+os.Getenv("PATH"))
	cmd.WaitDelay = 5 * time.Second
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %v: %w", name, timeout, ctx.Err())
	}
	return o.String(), e.String(), err
}

// fillFile writes size bytes of b to path (creating or truncating it).
func fillFile(t *testing.T, path string, b byte, size int64) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte{b}, int(size)), 0o644))
}

// randomBytes returns n pseudo-random bytes from a fixed seed (fast, and
// reproducible when a test fails).
func randomBytes(seed uint64, n int) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	p := make([]byte, n)
	_, _ = r.Read(p)
	return p
}

// sha256File returns the hex sha256 of a whole file.
func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// requireRegion checks that path holds only byte b in [off, off+size).
func requireRegion(t *testing.T, path string, off, size int64, b byte) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, off)
	require.NoError(t, err, "reading %s [%d, +%d)", path, off, size)
	require.EqualValues(t, size, n)
	for i, c := range buf {
		if c != b {
			t.Fatalf("%s: byte at offset %d (region [%d, +%d)) is %#02x, want %#02x", path, off+int64(i), off, size, c, b)
		}
	}
}

// serverPort returns the port of a running server.
func serverPort(t *testing.T, s *serveProc) string {
	t.Helper()
	_, port, err := net.SplitHostPort(s.Addr)
	require.NoError(t, err, "server address %q", s.Addr)
	return port
}

// ---------------------------------------------------------------- nbdinfo

// nbdinfoExport is one entry of `nbdinfo --json`'s "exports".
type nbdinfoExport struct {
	ExportName   string `json:"export-name"`
	Description  string `json:"description"`
	URI          string `json:"uri"`
	IsReadOnly   bool   `json:"is_read_only"`
	CanFlush     bool   `json:"can_flush"`
	CanFUA       bool   `json:"can_fua"`
	CanTrim      bool   `json:"can_trim"`
	CanZero      bool   `json:"can_zero"`
	CanMultiConn bool   `json:"can_multi_conn"`
	CanDF        bool   `json:"can_df"`
	BlockMin     int64  `json:"block_size_minimum"`
	BlockPref    int64  `json:"block_size_preferred"`
	BlockMax     int64  `json:"block_size_maximum"`
	ExportSize   int64  `json:"export-size"`
}

type nbdinfoOutput struct {
	Protocol   string          `json:"protocol"`
	TLS        bool            `json:"TLS"`
	Structured bool            `json:"structured"`
	Exports    []nbdinfoExport `json:"exports"`
}

func nbdinfoJSON(t *testing.T, args ...string) nbdinfoOutput {
	t.Helper()
	stdout, stderr, err := runSplit(t, clientTimeout, "nbdinfo", append([]string{"--json"}, args...)...)
	require.NoError(t, err, "nbdinfo --json %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), stdout, stderr)
	var out nbdinfoOutput
	require.NoError(t, json.Unmarshal([]byte(stdout), &out), "nbdinfo --json output:\n%s", stdout)
	return out
}

func TestNbdinfo(t *testing.T) {
	requireTools(t, "nbdinfo")
	type flags map[string]bool // json name -> expected value; absent = not checked
	cases := []struct {
		name    string
		size    int64
		extra   []string
		want    flags
		wantMin int64
	}{
		{
			name: "default", size: 24 * mib,
			want: flags{"is_read_only": false, "can_flush": true, "can_fua": true, "can_trim": true,
				"can_zero": true, "can_multi_conn": true},
			wantMin: 1,
		},
		{
			// An odd size: not a multiple of 4096.
			name: "odd-size", size: 8*mib + 512 + 1,
			want:    flags{"is_read_only": false, "can_flush": true, "can_multi_conn": true},
			wantMin: 1,
		},
		{
			name: "read-only", size: 16 * mib, extra: []string{"--read-only"},
			want:    flags{"is_read_only": true, "can_trim": false, "can_zero": false, "can_multi_conn": true},
			wantMin: 1,
		},
		{
			name: "direct", size: 8 * mib, extra: []string{"--direct"},
			want: flags{"is_read_only": false, "can_flush": true, "can_fua": true, "can_trim": true,
				"can_zero": true, "can_multi_conn": true},
			wantMin: 4096,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			disk := makeDisk(t, tc.size)
			s := startServe(t, disk, tc.extra...)
			out := nbdinfoJSON(t, s.URI())
			assert.Equal(t, "newstyle-fixed", out.Protocol)
			assert.True(t, out.Structured, "structured replies negotiated")
			require.Len(t, out.Exports, 1)
			e := out.Exports[0]
			t.Logf("%+v", e)
			assert.Equal(t, "test", e.ExportName)
			assert.Equal(t, tc.size, e.ExportSize, "export-size")
			got := flags{"is_read_only": e.IsReadOnly, "can_flush": e.CanFlush, "can_fua": e.CanFUA,
				"can_trim": e.CanTrim, "can_zero": e.CanZero, "can_multi_conn": e.CanMultiConn}
			for k, v := range tc.want {
				assert.Equal(t, v, got[k], k)
			}
			assert.Equal(t, tc.wantMin, e.BlockMin, "block_size_minimum")
			assert.EqualValues(t, 4096, e.BlockPref, "block_size_preferred")
			assert.EqualValues(t, 32*mib, e.BlockMax, "block_size_maximum")
		})
	}

	t.Run("list", func(t *testing.T) {
		s := startServe(t, makeDisk(t, 4*mib))
		base := "nbd://127.0.0.1:" + serverPort(t, s)
		text := mustRun(t, clientTimeout, "nbdinfo", "--list", base)
		assert.Contains(t, text, `export="test"`, "nbdinfo --list %s", base)
		out := nbdinfoJSON(t, "--list", base)
		var names []string
		for _, e := range out.Exports {
			names = append(names, e.ExportName)
		}
		assert.Equal(t, []string{"test"}, names, "nbdinfo --list --json export names")
	})
}

// ---------------------------------------------------------------- qemu-io

// qemuCmd is one qemu-io -c command and the line it must print on success
// ("" for commands that print nothing, like flush).
type qemuCmd struct {
	cmd, want string
}

func qWrite(opts string, pattern string, off, n int64) qemuCmd {
	c := "write"
	if opts != "" {
		c += " " + opts
	}
	if pattern != "" {
		c += " -P " + pattern
	}
	return qemuCmd{fmt.Sprintf("%s %d %d", c, off, n), fmt.Sprintf("wrote %d/%d bytes at offset %d", n, n, off)}
}

func qRead(pattern string, off, n int64) qemuCmd {
	return qemuCmd{fmt.Sprintf("read -P %s %d %d", pattern, off, n), fmt.Sprintf("read %d/%d bytes at offset %d", n, n, off)}
}

// runQemuIO runs qemu-io -f raw with cmds on uri and fails the test on any
// error: a non-zero exit, "Pattern verification failed", "... failed: ...",
// a "qemu-io:" diagnostic, or a missing success line.
func runQemuIO(t *testing.T, uri string, cmds []qemuCmd) string {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c.cmd)
	}
	args = append(args, uri)
	out, err := run(t, clientTimeout, "qemu-io", args...)
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("qemu-io %s\n%s\noutput:\n%s", strings.Join(args, " "), fmt.Sprintf(format, a...), out)
	}
	if err != nil {
		fail("error: %v", err)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "Pattern verification failed") || strings.Contains(l, "failed:") ||
			strings.HasPrefix(l, "qemu-io:") || strings.Contains(strings.ToLower(l), "error") {
			fail("error line: %q", l)
		}
	}
	rest := out
	for _, c := range cmds {
		if c.want == "" {
			continue
		}
		i := strings.Index(rest, c.want+"\n")
		if i < 0 {
			fail("no %q (in order) for command %q", c.want, c.cmd)
		}
		rest = rest[i+len(c.want):]
	}
	return out
}

// qemuRegion is a range of the export and the byte it must hold at the end.
type qemuRegion struct {
	off, size int64
	b         byte
}

func TestQemuIO(t *testing.T) {
	requireTools(t, "qemu-io")

	// Layout after the command sequence below; [2M, 2M+64k) was discarded
	// and its content is unspecified.
	layout := []qemuRegion{
		{0, 1 * mib, 0xab},
		{1 * mib, 64 * kib, 0},                       // write -z
		{1*mib + 64*kib, 1*mib - 64*kib, 0xee},       // untouched around it
		{2*mib + 64*kib, 1*mib - 64*kib, 0xee},       // after the discard
		{3 * mib, 64 * kib, 0},                       // write -z -u (may unmap)
		{3*mib + 64*kib, 1*mib - 64*kib, 0xee},       //
		{4 * mib, 64 * kib, 0xcd},                    // write -f (FUA)
		{4*mib + 64*kib, 1*mib - 64*kib, 0xee},       //
		{5 * mib, 64 * kib, 0},                       // write -f -z (FUA zeroes)
		{5*mib + 64*kib, 1*mib - 64*kib, 0xee},       //
		{6 * mib, 2 * mib, 0},                        // never written
		{8*mib + 4*kib, 8 * kib, 0x42},               // write -f across 4k blocks, unaligned end
		{8*mib + 12*kib, 16*mib - 8*mib - 12*kib, 0}, // never written
	}
	cmds := []qemuCmd{
		qWrite("", "0xab", 0, 1*mib),
		qRead("0xab", 0, 1*mib),
		{"flush", ""},
		qWrite("", "0xee", 1*mib, 5*mib),
		qWrite("-z", "", 1*mib, 64*kib),
		qRead("0", 1*mib, 64*kib),
		qRead("0xee", 1*mib+64*kib, 64*kib),
		qWrite("-z -u", "", 3*mib, 64*kib),
		qRead("0", 3*mib, 64*kib),
		qRead("0xee", 3*mib+64*kib, 64*kib),
		{fmt.Sprintf("discard %d %d", 2*mib, 64*kib), fmt.Sprintf("discard %d/%d bytes at offset %d", 64*kib, 64*kib, 2*mib)},
		qRead("0xee", 2*mib+64*kib, 64*kib),
		qWrite("-f", "0xcd", 4*mib, 64*kib),
		qRead("0xcd", 4*mib, 64*kib),
		qWrite("-f -z", "", 5*mib, 64*kib),
		qRead("0", 5*mib, 64*kib),
		qWrite("-f", "0x42", 8*mib+4*kib, 8*kib),
		qRead("0x42", 8*mib+4*kib, 8*kib),
		{"flush", ""},
	}

	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"buffered", nil},
		{"direct", []string{"--direct"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := makeDisk(t, 16*mib)
			s := startServe(t, disk, tc.extra...)
			out := runQemuIO(t, s.URI(), cmds)
			t.Logf("qemu-io:\n%s", out)

			// A second connection sees everything.
			var check []qemuCmd
			for _, r := range layout {
				check = append(check, qRead(fmt.Sprintf("%#x", r.b), r.off, r.size))
			}
			runQemuIO(t, s.URI(), check)

			// And it is all in the backing file.
			s.Stop(t)
			for _, r := range layout {
				requireRegion(t, disk, r.off, r.size, r.b)
			}
			fi, err := os.Stat(disk)
			require.NoError(t, err)
			assert.EqualValues(t, 16*mib, fi.Size(), "backing file size")
		})
	}

	t.Run("read-only", func(t *testing.T) {
		disk := makeDisk(t, 4*mib)
		f, err := os.OpenFile(disk, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt(bytes.Repeat([]byte{0x5a}, 64*kib), 0)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		s := startServe(t, disk, "--read-only")

		// qemu honours NBD_FLAG_READ_ONLY: it refuses a read-write open
		// with EPERM.
		out, err := run(t, clientTimeout, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 65536", s.URI())
		assert.Error(t, err, "qemu-io read-write open of a read-only export:\n%s", out)
		assert.Contains(t, out, "Permission denied", "qemu-io read-write open of a read-only export")

		// Opened read-only: the write fails, the read in the same
		// invocation (same connection) still works.
		out, err = run(t, clientTimeout, "qemu-io", "-r", "-f", "raw",
			"-c", "write -P 0xab 0 65536", "-c", "read -P 0x5a 0 65536", s.URI())
		t.Logf("qemu-io -r (exit %v):\n%s", err, out)
		assert.Contains(t, out, "read-only", "the write must fail")
		assert.NotContains(t, out, "wrote ")
		assert.Contains(t, out, "read 65536/65536 bytes at offset 0")
		assert.NotContains(t, out, "Pattern verification failed")

		// qemu never sends that write. libnbd with strict mode off does:
		// the server must answer EPERM and keep the connection.
		t.Run("nbdsh-unchecked", func(t *testing.T) {
			requireTools(t, "nbdsh")
			script := `
h.set_strict_mode(0)
def probe(name, f):
    try:
        f()
        print("OP", name, 0)
    except nbd.Error as e:
        print("OP", name, e.errnum)
probe("pwrite", lambda: h.pwrite(b"\xab" * 4096, 0))
probe("pwrite-fua", lambda: h.pwrite(b"\xab" * 4096, 4096, nbd.CMD_FLAG_FUA))
probe("zero", lambda: h.zero(65536, 0))
probe("trim", lambda: h.trim(65536, 0))
print("READ", h.pread(65536, 0) == b"\x5a" * 65536)
`
			out := mustRun(t, clientTimeout, "nbdsh", "-u", s.URI(), "-c", script)
			t.Logf("nbdsh:\n%s", out)
			got := map[string]string{}
			for _, l := range strings.Split(out, "\n") {
				f := strings.Fields(l)
				if len(f) == 3 && f[0] == "OP" {
					got[f[1]] = f[2]
				}
				if len(f) == 2 && f[0] == "READ" {
					got["read"] = f[1]
				}
			}
			const eperm = "1"
			for _, op := range []string{"pwrite", "pwrite-fua", "zero", "trim"} {
				assert.Equal(t, eperm, got[op], "%s on a read-only export: errno (1 = EPERM)", op)
			}
			assert.Equal(t, "True", got["read"], "read after the refused writes, same connection")
		})

		s.Stop(t)
		requireRegion(t, disk, 0, 64*kib, 0x5a)
		requireRegion(t, disk, 64*kib, 4*mib-64*kib, 0)
	})
}

// ---------------------------------------------------------------- nbdcopy

func TestNbdcopyRoundTrip(t *testing.T) {
	requireTools(t, "nbdcopy")
	const size = 32 * mib
	for _, tc := range []struct {
		name           string
		upArgs, dnArgs []string
	}{
		{"multi-conn-download", nil, []string{"--connections=4"}},
		{"multi-conn-upload", []string{"--connections=4", "--flush"}, []string{"--synchronous"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			local := filepath.Join(dir, "local.img")
			out := filepath.Join(dir, "out.img")
			// Random data with some zero runs, so nbdcopy's zero detection
			// sends zero requests; the server's disk starts as 0x77 so
			// dropped zeroes would show.
			data := randomBytes(uint64(len(tc.name)), size)
			for _, z := range []struct{ off, n int }{{3 * mib, 1 * mib}, {10*mib + 4*kib, 256 * kib}, {size - 2*mib, 2 * mib}} {
				clear(data[z.off : z.off+z.n])
			}
			require.NoError(t, os.WriteFile(local, data, 0o644))
			disk := filepath.Join(dir, "disk.img")
			fillFile(t, disk, 0x77, size)
			s := startServe(t, disk)

			start := time.Now()
			mustRun(t, clientTimeout, "nbdcopy", append(append([]string{}, tc.upArgs...), local, s.URI())...)
			up := time.Since(start)
			start = time.Now()
			mustRun(t, clientTimeout, "nbdcopy", append(append([]string{}, tc.dnArgs...), s.URI(), out)...)
			t.Logf("nbdcopy %d MiB: upload %v %v, download %v %v", size/mib, tc.upArgs, up.Round(time.Millisecond), tc.dnArgs, time.Since(start).Round(time.Millisecond))

			s.Stop(t)
			want := sha256File(t, local)
			assert.Equal(t, want, sha256File(t, out), "downloaded copy")
			assert.Equal(t, want, sha256File(t, disk), "server's backing file")
		})
	}
}

// ---------------------------------------------------------------- fio

// fioJob is the part of a job in fio's JSON output we look at.
type fioJob struct {
	JobName string `json:"jobname"`
	Error   int    `json:"error"`
	Read    fioDir `json:"read"`
	Write   fioDir `json:"write"`
	Sync    struct {
		TotalIOs int64 `json:"total_ios"`
	} `json:"sync"`
}

type fioDir struct {
	IOBytes int64   `json:"io_bytes"`
	IOPS    float64 `json:"iops"`
	BW      int64   `json:"bw"` // KiB/s
}

func TestFioVerify(t *testing.T) {
	requireTools(t, "fio")
	common := []string{"--size=32M", "--verify=crc32c", "--do_verify=1",
		"--verify_fatal=1", "--verify_state_save=0", "--output-format=json"}
	for _, tc := range []struct {
		name      string
		args      []string
		wantReads bool // reads beyond the verify pass
	}{
		{"randwrite-4k-qd32", []string{"--rw=randwrite", "--bs=4k", "--iodepth=32", "--fsync=32"}, false},
		{"randrw-4k-128k-qd16", []string{"--rw=randrw", "--bsrange=4k-128k", "--iodepth=16", "--fsync=16"}, true},
		{"randwrite-bssplit-qd8", []string{"--rw=randwrite", "--bssplit=4k/50:64k/30:1m/20", "--iodepth=8", "--fsync=8"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := makeDisk(t, 32*mib)
			s := startServe(t, disk)
			// --uri is an nbd engine option: it must follow --ioengine.
			args := append([]string{"--name=" + tc.name, "--ioengine=nbd", "--uri=" + s.URI()}, common...)
			args = append(args, tc.args...)
			start := time.Now()
			stdout, stderr, err := runSplit(t, clientTimeout, "fio", args...)
			elapsed := time.Since(start)
			require.NoError(t, err, "fio %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), stdout, stderr)
			// The nbd engine prints "fio: connected to NBD server" first.
			i := strings.Index(stdout, "\n{")
			if !strings.HasPrefix(stdout, "{") {
				require.GreaterOrEqual(t, i, 0, "no JSON in fio output:\n%s", stdout)
				stdout = stdout[i+1:]
			}
			var res struct {
				Jobs []fioJob `json:"jobs"`
			}
			require.NoError(t, json.Unmarshal([]byte(stdout), &res), "fio JSON:\n%s", stdout)
			require.NotEmpty(t, res.Jobs)
			for _, j := range res.Jobs {
				t.Logf("fio %s: write %.0f IOPS %d KiB/s, read %.0f IOPS %d KiB/s, %d syncs, %v",
					j.JobName, j.Write.IOPS, j.Write.BW, j.Read.IOPS, j.Read.BW, j.Sync.TotalIOs, elapsed.Round(time.Millisecond))
				assert.Zero(t, j.Error, "job %s error", j.JobName)
				assert.Positive(t, j.Write.IOPS, "job %s write IOPS", j.JobName)
				assert.Positive(t, j.Write.IOBytes, "job %s bytes written", j.JobName)
				assert.Positive(t, j.Read.IOBytes, "job %s bytes read (verify)", j.JobName)
				assert.Positive(t, j.Sync.TotalIOs, "job %s flushes (--fsync)", j.JobName)
				if tc.wantReads {
					assert.Positive(t, j.Read.IOPS, "job %s read IOPS", j.JobName)
				}
			}
			if strings.TrimSpace(stderr) != "" {
				t.Logf("fio stderr:\n%s", stderr)
			}
		})
	}
}

// ---------------------------------------------------------------- nbdfuse + ext4

// isMountPoint reports whether dir is a mount point (per /proc/self/mountinfo).
func isMountPoint(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.ReplaceAll(f[4], `\040`, " ") == dir {
			return true
		}
	}
	return false
}

// loopDevicesUnder lists loop devices whose backing file is under dir.
func loopDevicesUnder(t *testing.T, dir string) []string {
	out, err := run(t, 10*time.Second, "losetup", "-n", "-l", "-O", "NAME,BACK-FILE")
	if err != nil {
		t.Logf("losetup -l: %v\n%s", err, out)
		return nil
	}
	var devs []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && strings.HasPrefix(f[1], dir+"/") {
			devs = append(devs, f[0])
		}
	}
	return devs
}

func requireDevice(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("TWINBLOCK_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s is required here: %v", path, err)
		}
		t.Skipf("%s: %v", path, err)
	}
}

func TestNbdfuseExt4(t *testing.T) {
	requireRoot(t)
	requireTools(t, "nbdfuse", "fusermount3", "mkfs.ext4", "e2fsck", "mount", "umount", "losetup", "sha256sum")
	requireDevice(t, "/dev/fuse")
	requireDevice(t, "/dev/loop-control")

	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt") // nbdfuse's mount point; it holds mnt/nbd
	fsDir := filepath.Join(dir, "fs")
	fs2Dir := filepath.Join(dir, "fs2")
	stage := filepath.Join(dir, "stage")
	for _, d := range []string{mnt, fsDir, fs2Dir, stage} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	disk := filepath.Join(dir, "disk.img")
	require.NoError(t, os.WriteFile(disk, nil, 0o644))
	require.NoError(t, os.Truncate(disk, 128*mib))
	s := startServe(t, disk)

	var fuseLog lockedBuffer
	fuse := exec.Command("nbdfuse", mnt, s.URI())
	fuse.Stdout, fuse.Stderr = &fuseLog, &fuseLog
	fuseDone := make(chan struct{})

	// Registered after startServe, so it runs before the server stops.
	t.Cleanup(func() {
		for _, m := range []string{fsDir, fs2Dir} {
			if isMountPoint(m) {
				out, err := run(t, 30*time.Second, "umount", "-l", m)
				t.Logf("cleanup: umount -l %s: %v %s", m, err, out)
			}
		}
		for _, dev := range loopDevicesUnder(t, dir) {
			out, err := run(t, 30*time.Second, "losetup", "-d", dev)
			t.Logf("cleanup: losetup -d %s: %v %s", dev, err, out)
		}
		if isMountPoint(mnt) {
			out, err := run(t, 30*time.Second, "fusermount3", "-u", "-z", mnt)
			t.Logf("cleanup: fusermount3 -u -z %s: %v %s", mnt, err, out)
		}
		if fuse.Process != nil {
			select {
			case <-fuseDone:
			case <-time.After(5 * time.Second):
				t.Logf("cleanup: killing nbdfuse (pid %d)", fuse.Process.Pid)
				_ = fuse.Process.Kill()
				select {
				case <-fuseDone:
				case <-time.After(10 * time.Second):
					t.Errorf("cleanup: nbdfuse pid %d did not exit after SIGKILL", fuse.Process.Pid)
				}
			}
		}
		if t.Failed() {
			t.Logf("nbdfuse output:\n%s", fuseLog.String())
		}
	})

	step := func(name string, args ...string) string {
		t.Helper()
		start := time.Now()
		out := mustRun(t, nbdfuseTimeout, name, args...)
		t.Logf("%s %s: %v", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
		return out
	}

	start := time.Now()
	require.NoError(t, fuse.Start())
	go func() { _ = fuse.Wait(); close(fuseDone) }()
	nbdFile := filepath.Join(mnt, "nbd")
	deadline := time.Now().Add(nbdfuseTimeout)
	for {
		if fi, err := os.Stat(nbdFile); err == nil {
			require.EqualValues(t, 128*mib, fi.Size(), "size of %s", nbdFile)
			break
		}
		select {
		case <-fuseDone:
			t.Fatalf("nbdfuse exited before %s appeared:\n%s", nbdFile, fuseLog.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %v", nbdFile, nbdfuseTimeout)
		}
	}
	t.Logf("nbdfuse ready: %v", time.Since(start).Round(time.Millisecond))

	// Files to put on the filesystem, staged outside it.
	files := map[string][]byte{
		"big.bin":        randomBytes(1, 8*mib),
		"small.txt":      []byte("twinblock nbdfuse ext4 test\n"),
		"odd.bin":        randomBytes(2, 12345),
		"sub/a.bin":      randomBytes(3, 4096),
		"sub/b.bin":      randomBytes(4, 300*kib+7),
		"sub/empty.file": nil,
	}
	want := map[string]string{}
	for name, data := range files {
		p := filepath.Join(stage, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, data, 0o644))
		sum := sha256.Sum256(data)
		want[name] = hex.EncodeToString(sum[:])
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	// sha256sums of names, relative to dir d, as a map.
	sums := func(d string) map[string]string {
		t.Helper()
		out := step("sha256sum", prefixAll(d+"/", names)...)
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			sum, p, ok := strings.Cut(l, "  ")
			if ok {
				got[strings.TrimPrefix(p, d+"/")] = sum
			}
		}
		return got
	}

	step("mkfs.ext4", "-q", "-F", nbdFile)
	step("mount", "-o", "loop", nbdFile, fsDir)
	step("cp", "-a", stage+"/.", fsDir+"/")
	step("sync", "-f", fsDir)
	assert.Equal(t, want, sums(fsDir), "files read back through the loop mount")
	step("umount", fsDir)
	out := step("e2fsck", "-fn", nbdFile)
	t.Logf("e2fsck -fn %s:\n%s", nbdFile, out)
	step("fusermount3", "-u", mnt)
	select {
	case <-fuseDone:
		t.Logf("nbdfuse exited: %v (%v)", fuse.ProcessState, time.Since(start).Round(time.Millisecond))
	case <-time.After(nbdfuseTimeout):
		t.Fatalf("nbdfuse did not exit within %v of fusermount3 -u", nbdfuseTimeout)
	}

	// The data must be in the server's backing file.
	s.Stop(t)
	out = step("e2fsck", "-fn", disk)
	t.Logf("e2fsck -fn backing file:\n%s", out)
	step("mount", "-o", "loop,ro", disk, fs2Dir)
	assert.Equal(t, want, sums(fs2Dir), "files in the server's backing file")
	step("umount", fs2Dir)
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

func prefixAll(prefix string, names []string) []string {
	r := make([]string, len(names))
	for i, n := range names {
		r[i] = prefix + n
	}
	return r
}

// ---------------------------------------------------------------- serve errors

func TestServeErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no", "such", "disk.img")
	for _, tc := range []struct {
		name string
		args []string
		want string // the stderr line must contain this
	}{
		{"no-disk", []string{"serve", "--listen", "127.0.0.1:0"}, "--disk"},
		{"nonexistent", []string{"serve", "--disk", missing, "--listen", "127.0.0.1:0"}, missing},
		{"directory", []string{"serve", "--disk", dir, "--listen", "127.0.0.1:0"}, dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := runSplit(t, 10*time.Second, twinblockBin, tc.args...)
			t.Logf("twinblock %s: %v\nstderr: %s", strings.Join(tc.args, " "), err, stderr)
			var ee *exec.ExitError
			require.True(t, errors.As(err, &ee), "twinblock must exit with a non-zero status, got %v", err)
			assert.NotZero(t, ee.ExitCode())
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			assert.Len(t, lines, 1, "stderr must be one line:\n%s", stderr)
			assert.Contains(t, lines[0], tc.want)
			assert.NotContains(t, stderr+stdout, "listening on")
			assert.NotContains(t, stderr+stdout, "Usage:")
		})
	}
}
