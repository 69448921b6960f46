package integration

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestREADMEListsTheDepsScriptPackages: the README's list of Debian
// packages is the one scripts/deps.sh installs, in the same order.
func TestREADMEListsTheDepsScriptPackages(t *testing.T) {
	out, err := exec.Command("bash", "../scripts/deps.sh", "--list").Output()
	require.NoError(t, err)
	script := strings.Fields(string(out))
	require.NotEmpty(t, script)

	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	m := regexp.MustCompile("Debian packages \\(`([^`]*)`\\)").FindSubmatch(readme)
	require.NotNil(t, m, "README.md: no \"Debian packages (`...`)\" list")
	assert.Equal(t, script, strings.Fields(string(m[1])), "README.md's package list differs from scripts/deps.sh --list")
}
