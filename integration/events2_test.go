package integration

import (
	"bufio"
	"errors"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
)

// events2Line is drbdsetup events2's line shape, optionally after a
// --timestamps prefix: ACTION OBJECT KEY:VALUE… (drbd-utils'
// drbdsetup_events2.c; drbd-reactor's parse_events2_line reads the same).
var events2Line = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d )?(exists|create|change|destroy) (resource|connection|device|peer-device|path)( [a-z_-]+:[^ :]\S*)+$|^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d )?exists -$`)

// TestEvents2: `twinblock events2` against real daemons. --now prints the
// initial state (one exists line per object, then "exists -") and exits
// 0; the stream then reports a promotion, a lost peer and a down as
// change and destroy lines; an unknown resource exits 10; --poll answers
// "n" and ends at EOF.
func TestEvents2(t *testing.T) {
	a, b := syncedDaemons(t, harness.Options{DiskSize: 16 << 20})

	out, err := a.TB(10*time.Second, "events2", "--now", "--timestamps", "--statistics", "r0")
	require.NoError(t, err, out)
	t.Logf("events2 --now --timestamps --statistics:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		require.Regexp(t, events2Line, l)
	}
	require.Regexp(t, ` exists -$`, lines[len(lines)-1])
	for _, want := range []string{
		"exists resource name:r0 role:Primary suspended:no",
		"exists connection name:r0 peer-node-id:1 conn-name:b connection:Connected role:Secondary",
		"exists device name:r0 volume:0 minor:0 disk:UpToDate",
		"exists peer-device name:r0 peer-node-id:1 conn-name:b volume:0 replication:Established peer-disk:UpToDate",
		"established:yes",
		"ap-in-flight:0 rs-in-flight:0",
	} {
		require.Contains(t, out, want)
	}

	// The stream: b demotes to nothing (it is Secondary), a demotes,
	// b goes down.
	cmd := exec.Command(twinblockBin, "--config", a.Conf, "--node", "a", "--control", a.Control, "events2", "all")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	got := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			got <- sc.Text()
		}
		close(got)
	}()
	expect := func(want string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-got:
				require.True(t, ok, "events2 ended before %q", want)
				require.Regexp(t, events2Line, l)
				if strings.HasPrefix(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no events2 line %q within 30 s", want)
			}
		}
	}
	expect("exists -")
	out, err = a.TB(30*time.Second, "secondary", "r0")
	require.NoError(t, err, out)
	expect("change resource name:r0 role:Secondary")
	out, err = b.TB(30*time.Second, "down", "r0")
	require.NoError(t, err, out)
	expect("change connection name:r0 peer-node-id:1 conn-name:b connection:Connecting role:Unknown")
	expect("change path name:r0 peer-node-id:1 conn-name:b")
	out, err = a.TB(30*time.Second, "down", "r0")
	require.NoError(t, err, out)
	expect("destroy resource name:r0")
	out, err = a.TB(30*time.Second, "up", "r0")
	require.NoError(t, err, out)
	expect("create resource name:r0 role:Secondary")

	// An unknown resource: drbdsetup's exit code 10.
	c := exec.Command(twinblockBin, "--config", a.Conf, "--node", "a", "--control", a.Control, "events2", "nosuch")
	var stderr strings.Builder
	c.Stderr = &stderr
	err = c.Run()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "events2 nosuch: %v", err)
	require.Equal(t, 10, ee.ExitCode())
	require.Contains(t, stderr.String(), "nosuch")

	// --poll: "n" asks for the changes (none here but a fresh look), EOF ends.
	p := exec.Command(twinblockBin, "--config", a.Conf, "--node", "a", "--control", a.Control, "events2", "--now", "--poll", "r0")
	in, err := p.StdinPipe()
	require.NoError(t, err)
	pout, err := p.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, p.Start())
	br := bufio.NewReader(pout)
	readDump := func() {
		t.Helper()
		for {
			l, err := br.ReadString('\n')
			require.NoError(t, err)
			require.Regexp(t, events2Line, strings.TrimSuffix(l, "\n"))
			if l == "exists -\n" {
				return
			}
		}
	}
	readDump()
	_, err = io.WriteString(in, "n\n")
	require.NoError(t, err)
	readDump() // --now --poll: the whole state again
	require.NoError(t, in.Close())
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "events2 --poll at EOF")
	case <-time.After(10 * time.Second):
		_ = p.Process.Kill()
		t.Fatal("events2 --poll did not end at EOF of stdin")
	}
}
