package cli

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// completionConf has two resources, one of them with a witness.
const completionConf = `resource r0 {
	on alice { address 127.0.0.1:7789; disk a.img; }
	on bob   { address 127.0.0.2:7789; disk b.img; }
}
resource web {
	options { quorum majority; }
	on alice { address 127.0.0.1:7790; disk a2.img; quorum-address 127.0.0.1:7800; }
	on bob   { address 127.0.0.2:7790; disk b2.img; quorum-address 127.0.0.2:7800; }
	on carol { address 127.0.0.3:7790; disk none; quorum-address 127.0.0.3:7800; }
}
`

// complete runs cobra's hidden __complete verb as the shell scripts do,
// and returns the completions and the directive line (":4" is
// ShellCompDirectiveNoFileComp, ":0" the default, files).
func complete(t *testing.T, args ...string) (words []string, directive string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Execute(context.Background(), append([]string{cobra.ShellCompRequestCmd}, args...), &out, &errb)
	require.Equal(t, 0, code, "stderr: %s", errb.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.NotEmpty(t, lines)
	directive = lines[len(lines)-1]
	require.True(t, strings.HasPrefix(directive, ":"), "the last line is the directive: %q", out.String())
	if len(lines) > 1 {
		words = lines[:len(lines)-1]
	}
	return words, directive
}

func TestCompleteResourceNames(t *testing.T) {
	conf := writeConf(t, completionConf)
	for _, tc := range []struct {
		name      string
		args      []string
		want      []string
		directive string
	}{
		{"state verb", []string{"-c", conf, "up", ""}, []string{"r0", "web", "all"}, ":4"},
		{"config after the verb", []string{"primary", "--config", conf, ""}, []string{"r0", "web", "all"}, ":4"},
		{"prefix", []string{"-c", conf, "status", "w"}, []string{"web"}, ":4"},
		{"prefix of all", []string{"-c", conf, "cstate", "a"}, []string{"all"}, ":4"},
		{"wait verb", []string{"-c", conf, "wait-connect", ""}, []string{"r0", "web", "all"}, ":4"},
		{"metadata verb", []string{"-c", conf, "create-md", ""}, []string{"r0", "web", "all"}, ":4"},
		{"dump-config", []string{"-c", conf, "dump-config", ""}, []string{"r0", "web", "all"}, ":4"},
		// One resource, then a file: no `all`, and the file completes as files.
		{"resource then file", []string{"-c", conf, "restore-discarded", ""}, []string{"r0", "web"}, ":4"},
		{"the file", []string{"-c", conf, "restore-discarded", "r0", ""}, nil, ":0"},
		{"one resource only", []string{"-c", conf, "down", "r0", ""}, nil, ":0"},
		{"node", []string{"-c", conf, "--node", ""}, []string{"alice", "bob", "carol"}, ":4"},
		{"node prefix", []string{"-c", conf, "up", "--node", "c"}, []string{"carol"}, ":4"},
		{"no config", []string{"-c", conf + ".missing", "up", ""}, nil, ":4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			words, directive := complete(t, tc.args...)
			assert.Equal(t, tc.want, words)
			assert.Equal(t, tc.directive, directive)
		})
	}
}

// TestEveryResourceVerbCompletes: the walk reaches every verb that takes
// a resource, those added later in any file included, and no other.
func TestEveryResourceVerbCompletes(t *testing.T) {
	root := newRoot(io.Discard, io.Discard)
	var withRes []string
	for _, c := range root.Commands() {
		takesResource := strings.Contains(c.Use, " RES") || strings.Contains(c.Use, " [RES")
		if takesResource {
			withRes = append(withRes, c.Name())
		}
		assert.Equal(t, takesResource, c.ValidArgsFunction != nil, "%s (%q)", c.Name(), c.Use)
	}
	assert.Subset(t, withRes, []string{"up", "down", "primary", "role", "status", "wait-connect", "wait-sync",
		"create-md", "dump-md", "dump-config", "restore-discarded", "explain"})
}

func TestResourceArg(t *testing.T) {
	for _, tc := range []struct {
		use              string
		isResource, more bool
	}{
		{"up RESOURCE|all", true, false},
		{"status [RESOURCE|all]", true, false},
		{"events2 [RES|all] [--now]", true, false},
		{"create-md RES [--force]", true, false},
		{"restore-discarded RESOURCE FILE.img [--force]", true, true},
		{"serve --disk PATH [--listen ADDR] [--export NAME] [--read-only]", false, false},
		{"daemon", false, false},
		{"adjust --dry-run RESOURCE|all", true, false},
		{"resize [--size SIZE] RES", true, false},
		{"copy FILE RESOURCE", false, true},
	} {
		isResource, more := resourceArg(tc.use)
		assert.Equal(t, tc.isResource, isResource, tc.use)
		assert.Equal(t, tc.more, more, tc.use)
	}
}

// TestCompletionScripts: cobra's completion verb is there for each shell
// make install writes, and its scripts call __complete.
func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "__start_twinblock",
		"zsh":  "#compdef twinblock",
		"fish": "complete -c twinblock",
	} {
		var out, errb bytes.Buffer
		code := Execute(context.Background(), []string{"completion", shell}, &out, &errb)
		require.Equal(t, 0, code, "%s: %s", shell, errb.String())
		assert.Contains(t, out.String(), want, shell)
		assert.Contains(t, out.String(), cobra.ShellCompRequestCmd, shell)
	}
}
