package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/config"
)

// runDumpConfig runs the verb with --config path and returns its output.
func runDumpConfig(t *testing.T, path string) (stdout, stderr string, err error) {
	t.Helper()
	g := globals{config: path}
	cmd := newDumpConfigCmd(&g)
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

func writeConf(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "r0.conf")
	require.NoError(t, os.WriteFile(p, []byte(src), 0o600))
	return p
}

func TestDumpConfig(t *testing.T) {
	stdout, stderr, err := runDumpConfig(t, "../config/testdata/seed-drbd.conf")
	require.NoError(t, err)
	assert.Empty(t, stderr, "every keyword of the seed is implemented")
	assert.Contains(t, stdout, "resource r0 {\n\tprotocol C;\n\tdisk {\n\t\ton-io-error detach;\n\t\tresync-rate 10M;\n")
	assert.Contains(t, stdout, "\ton l1 {\n\t\taddress 127.0.0.2:7791;\n\t\tdevice /dev/drbd0;\n")

	// The output is a configuration that loads to the same dump.
	again, _, err := runDumpConfig(t, writeConf(t, stdout))
	require.NoError(t, err)
	_, body1, _ := strings.Cut(stdout, "\n")
	_, body2, _ := strings.Cut(again, "\n")
	assert.Equal(t, body1, body2)
}

func TestDumpConfigWarnings(t *testing.T) {
	path := writeConf(t, `resource r0 {
	net { sndbuf-size 512k; }
	disk { fencing resource-only; }
	disk /dev/vdb;
	on a { address 10.0.0.1:7789; }
	on b { address 10.0.0.2:7789; }
}
`)
	stdout, stderr, err := runDumpConfig(t, path)
	require.NoError(t, err)
	assert.Equal(t,
		"warning: "+path+`:2: keyword "sndbuf-size" in section net is not implemented by twinblock; ignored`+"\n"+
			"warning: "+path+`:3: keyword "fencing" in section disk is not implemented by twinblock; ignored`+"\n",
		stderr)
	assert.Contains(t, stdout, "\t\tsndbuf-size 512K;\n", "ignored keywords are still printed")
}

func TestDumpConfigErrors(t *testing.T) {
	path := writeConf(t, "resource r0 {\n\tdisk {\n\t\tal-extents 20;\n\t}\n}\n")
	stdout, _, err := runDumpConfig(t, path)
	require.Error(t, err)
	assert.Empty(t, stdout)
	assert.Equal(t, path+":3: al-extents 20: out of range 67..65534", err.Error())
	var ce *config.Error
	require.True(t, errors.As(err, &ce))
	assert.Equal(t, 3, ce.Pos.Line)

	_, _, err = runDumpConfig(t, filepath.Join(t.TempDir(), "missing.conf"))
	require.ErrorIs(t, err, os.ErrNotExist)

	_, _, err = runDumpConfig(t, writeConf(t, "global { usage-count no }\n"))
	require.Error(t, err)
	assert.True(t, strings.HasSuffix(err.Error(), `r0.conf:1: missing ";" after "usage-count no"`), err.Error())
}

// TestDumpOneResource: drbdadm's dump name, with a resource argument:
// only that resource is printed; an unknown one is an error.
func TestDumpOneResource(t *testing.T) {
	p := writeConf(t, `resource r0 { on a { address 127.0.0.1:7789; disk /a; } on b { address 127.0.0.2:7789; disk /b; } }
resource r1 { on a { address 127.0.0.1:7790; disk /c; } on b { address 127.0.0.2:7790; disk /d; } }
`)
	var stdout, stderr bytes.Buffer
	code := Execute(context.Background(), []string{"--config", p, "dump", "r1"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Contains(t, stdout.String(), "resource r1 {")
	assert.NotContains(t, stdout.String(), "resource r0 {")
	stdout.Reset()
	stderr.Reset()
	code = Execute(context.Background(), []string{"--config", p, "dump", "r9"}, &stdout, &stderr)
	require.NotEqual(t, 0, code)
	assert.Contains(t, stderr.String(), "r9")
}
