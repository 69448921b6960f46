package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// flakyListener fails its first fails Accept calls with EMFILE, as a
// process out of file descriptors does, then accepts from the listener it
// wraps.
type flakyListener struct {
	net.Listener
	fails  atomic.Int64 // Accept calls left to fail
	failed atomic.Int64 // Accept calls that failed
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		l.failed.Add(1)
		return nil, &net.OpError{Op: "accept", Net: "unix", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// lockedBuffer is a bytes.Buffer the serve loop logs to.
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

// TestServeBacksOffAndStopsOnlyWhenClosing: the control socket's accept
// loop survives failing Accepts (logged, retried with a backoff that
// doubles from 5 ms) and still answers the admin verbs; it ends when the
// daemon closes: ctx ended, or the listener closed.
func TestServeBacksOffAndStopsOnlyWhenClosing(t *testing.T) {
	const failForever = 1 << 40
	for _, tc := range []struct {
		name  string
		fails int64 // Accept calls that fail before the listener works
		// call: a request is answered before stop (it needs every
		// failure consumed, so the log holds exactly fails lines).
		call bool
		stop func(cancel context.CancelFunc, ln net.Listener)
	}{
		{"three EMFILEs, then a request, then Run's shutdown", 3, true,
			func(cancel context.CancelFunc, ln net.Listener) { cancel(); _ = ln.Close() }},
		{"no failure, the listener closed", 0, true,
			func(_ context.CancelFunc, ln net.Listener) { _ = ln.Close() }},
		{"failing forever, ctx ends during a backoff", failForever, false,
			func(cancel context.CancelFunc, _ net.Listener) { cancel() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "tbd") // short: a unix socket path has 108 bytes
			require.NoError(t, err)
			t.Cleanup(func() { _ = os.RemoveAll(dir) })
			path := filepath.Join(dir, "c.sock")
			inner, err := net.Listen("unix", path)
			require.NoError(t, err)
			t.Cleanup(func() { _ = inner.Close() })
			ln := &flakyListener{Listener: inner}
			ln.fails.Store(tc.fails)

			var logs lockedBuffer
			// No resource: a status request answers with the version only.
			d := &Daemon{log: slog.New(slog.NewTextHandler(&logs, nil)), ln: ln, opts: Options{Node: "a"}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() { defer close(done); d.serve(ctx) }()

			if tc.call {
				resp, err := Call(path, Request{Verb: "status"}, 5*time.Second)
				require.NoError(t, err, "the loop stopped serving:\n%s", logs.String())
				assert.Empty(t, resp.Error)
				assert.Equal(t, Version, resp.Version)
				assert.Equal(t, tc.fails, ln.failed.Load())
				assert.Equal(t, int(tc.fails), strings.Count(logs.String(), "control socket: accept failed; retrying"), logs.String())
				for i, want := range []string{"in=5ms", "in=10ms", "in=20ms"}[:tc.fails] {
					assert.Contains(t, logs.String(), want, "backoff %d", i)
				}
			} else {
				require.Eventually(t, func() bool { return ln.failed.Load() >= 3 }, 5*time.Second, time.Millisecond,
					"the loop stopped retrying:\n%s", logs.String())
				select {
				case <-done:
					t.Fatalf("the loop ended before the daemon closed:\n%s", logs.String())
				default:
				}
			}

			tc.stop(cancel, ln)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("the loop did not end when the daemon closed:\n%s", logs.String())
			}
			d.wg.Wait()
			if tc.fails > 0 {
				assert.Contains(t, logs.String(), "accept4: too many open files", "the log names the error")
			}
		})
	}
}
