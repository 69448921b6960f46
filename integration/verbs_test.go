package integration

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
)

// TestNotUpExitCode10: as drbdadm, status, role, cstate and dstate of a
// resource the daemon has not brought up exit with code 10 and say
// "r0: No such resource" on stderr (nothing on stdout); once it is up
// they exit 0.
func TestNotUpExitCode10(t *testing.T) {
	c, err := harness.New(harness.Options{Dir: t.TempDir(), Bin: twinblockBin, DiskSize: 16 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	a := c.Node("a")
	require.NoError(t, a.Start())
	for _, verb := range []string{"status", "role", "cstate", "dstate"} {
		cmd := exec.Command(twinblockBin, "--config", a.Conf, "--node", "a", "--control", a.Control, verb, "r0")
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "%s: %v", verb, err)
		require.Equal(t, 10, ee.ExitCode(), "%s of a resource that is not up", verb)
		require.Contains(t, stderr.String(), "r0: No such resource", verb)
		require.Empty(t, stdout.String(), verb)
	}
	out, err := a.TB(30*time.Second, "up", "r0")
	require.NoError(t, err, out)
	for _, verb := range []string{"status", "role", "cstate", "dstate"} {
		out, err := a.TB(10*time.Second, verb, "r0")
		require.NoError(t, err, "%s once up: %s", verb, out)
	}
}
