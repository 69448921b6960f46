package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// twinblockBin is the binary under test, built once by TestMain.
var twinblockBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "twinblock-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	twinblockBin = filepath.Join(dir, "twinblock")
	build := exec.Command("go", "build", "-o", twinblockBin, "../cmd/twinblock")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building twinblock:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireTools skips the test when a tool is missing, or fails it where
// tools are required (CI=true or TWINBLOCK_REQUIRE_TOOLS=1).
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" || os.Getenv("TWINBLOCK_REQUIRE_TOOLS") == "1" {
				t.Fatalf("%s is required here but not installed (.ci/run installs it)", n)
			}
			t.Skipf("%s not installed", n)
		}
	}
}

// requireRoot is requireTools for tests that mount or use loop devices.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" || os.Getenv("TWINBLOCK_REQUIRE_TOOLS") == "1" {
			t.Fatal("this test needs root")
		}
		t.Skip("needs root")
	}
}

// makeDisk creates a sparse file of size bytes in the test's directory.
func makeDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// serveProc is a running `twinblock serve`.
type serveProc struct {
	Addr   string // host:port
	Export string
	Disk   string
	cmd    *exec.Cmd
	logMu  sync.Mutex
	log    bytes.Buffer
	done   chan struct{}
}

// URI is the nbd:// URI of the export.
func (s *serveProc) URI() string { return "nbd://" + s.Addr + "/" + s.Export }

// Log returns what the server wrote to stderr so far.
func (s *serveProc) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// startServe runs `twinblock serve --disk disk --listen 127.0.0.1:0
// --export test` plus extra flags, and waits until it listens. The process
// is stopped when the test ends.
func startServe(t *testing.T, disk string, extra ...string) *serveProc {
	t.Helper()
	args := append([]string{"serve", "--disk", disk, "--listen", "127.0.0.1:0", "--export", "test"}, extra...)
	s := &serveProc{Export: "test", Disk: disk, cmd: exec.Command(twinblockBin, args...), done: make(chan struct{})}
	pr, pw := io.Pipe()
	s.cmd.Stderr = pw
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			s.logMu.Lock()
			s.log.WriteString(line + "\n")
			s.logMu.Unlock()
			if rest, ok := strings.CutPrefix(line, "listening on "); ok {
				select {
				case addrc <- strings.Fields(rest)[0]:
				default:
				}
			}
		}
	}()
	go func() { _ = s.cmd.Wait(); pw.Close(); close(s.done) }()
	t.Cleanup(func() {
		s.Stop(t)
		if t.Failed() {
			t.Logf("twinblock serve log:\n%s", s.Log())
		}
	})
	select {
	case s.Addr = <-addrc:
		return s
	case <-s.done:
		t.Fatalf("twinblock serve exited early:\n%s", s.Log())
	case <-time.After(10 * time.Second):
		t.Fatalf("twinblock serve did not listen within 10 s:\n%s", s.Log())
	}
	return nil
}

// Stop sends SIGTERM and waits (SIGKILL after 20 s).
func (s *serveProc) Stop(t *testing.T) {
	select {
	case <-s.done:
		return
	default:
	}
	if !stopProcess(s.cmd.Process, s.done) {
		t.Errorf("twinblock serve ignored SIGTERM for 20 s")
	}
}

// stopProcess sends SIGTERM and waits for done; after 20 s it kills the
// process and reports false.
func stopProcess(p *os.Process, done <-chan struct{}) bool {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(20 * time.Second):
		_ = p.Kill()
		<-done
		return false
	}
}

// run runs a command with a timeout and returns its combined output.
func run(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/usr/sbin:/bin:/sbin:"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("%s timed out after %v: %w", name, timeout, ctx.Err())
	}
	return string(out), err
}

// mustRun is run that fails the test on error.
func mustRun(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := run(t, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}
