package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// makeInstall runs `make install` from the repository with DESTDIR set,
// and the build in a directory of the test's (not the tree's bin/).
// It returns DESTDIR.
func makeInstall(t *testing.T, vars ...string) string {
	t.Helper()
	requireTools(t, "make")
	dest := t.TempDir()
	// A configuration of the admin's own is there before: install must
	// leave it alone.
	require.NoError(t, os.MkdirAll(filepath.Join(dest, "etc/twinblock"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dest, "etc/twinblock/twinblock.conf"), []byte("# mine\n"), 0o600))
	args := append([]string{"-C", "..", "install", "DESTDIR=" + dest, "BIN=" + filepath.Join(t.TempDir(), "twinblock")}, vars...)
	out, err := exec.Command("make", args...).CombinedOutput()
	require.NoError(t, err, "make %s:\n%s", strings.Join(args, " "), out)
	return dest
}

// TestInstall: make install DESTDIR=... puts the binary, the man pages, the
// completion scripts, the systemd units, the cluster scripts and the
// example configuration where DESIGN.md and the README say, and each of
// them works.
func TestInstall(t *testing.T) {
	dest := makeInstall(t)
	prefix := filepath.Join(dest, "usr/local")
	bin := filepath.Join(prefix, "sbin/twinblock")

	t.Run("binary", func(t *testing.T) {
		out, err := exec.Command(bin, "--version").CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Regexp(t, `^twinblock version \d+\.\d+\.\d+`, string(out))
		assertMode(t, bin, 0o755)
	})

	t.Run("man pages", func(t *testing.T) {
		dir := filepath.Join(prefix, "share/man/man8")
		for _, verb := range []string{"", "-daemon", "-up", "-down", "-primary", "-secondary", "-status",
			"-create-md", "-wait-connect", "-dump-config", "-completion"} {
			name := "twinblock" + verb
			src, err := os.ReadFile(filepath.Join(dir, name+".8"))
			require.NoError(t, err, "%s(8)", name)
			assert.Contains(t, string(src), `.TH "`+strings.ToUpper(name)+`" "8" `, name)
		}
		pages, err := filepath.Glob(filepath.Join(dir, "*.8"))
		require.NoError(t, err)
		// Every page that a SEE ALSO names is there.
		ref := regexp.MustCompile(`\\fB(twinblock[a-z0-9-]*)\(8\)\\fP`)
		for _, p := range pages {
			src, err := os.ReadFile(p)
			require.NoError(t, err)
			assert.True(t, bytes.HasPrefix(src, []byte(".nh\n.TH ")) || bytes.HasPrefix(src, []byte(".TH ")), "%s: no .TH", p)
			for _, m := range ref.FindAllSubmatch(src, -1) {
				assert.FileExists(t, filepath.Join(dir, string(m[1])+".8"), "named in %s", filepath.Base(p))
			}
			assertMode(t, p, 0o644)
		}
		if _, err := exec.LookPath("groff"); err != nil {
			t.Log("groff not installed (Debian groff-base): the pages' roff is not rendered")
			return
		}
		for _, p := range pages {
			// -k: preconv, as man runs it; -ww: every warning; -P-cbou:
			// plain text, no overstriking.
			cmd := exec.Command("groff", "-k", "-man", "-Tutf8", "-ww", "-P-cbou", p)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			require.NoError(t, cmd.Run(), "%s: %s", p, stderr.String())
			assert.Empty(t, stderr.String(), "groff's warnings on %s", filepath.Base(p))
			name := strings.TrimSuffix(filepath.Base(p), ".8")
			assert.Regexp(t, `\nNAME\n +`+regexp.QuoteMeta(name)+` +- `, stdout.String(), p)
			assert.Regexp(t, `\nSYNOPSIS\n +twinblock`, stdout.String(), p)
		}
	})

	t.Run("completion", func(t *testing.T) {
		scripts := map[string]string{
			"bash": filepath.Join(prefix, "share/bash-completion/completions/twinblock"),
			"zsh":  filepath.Join(prefix, "share/zsh/site-functions/_twinblock"),
			"fish": filepath.Join(prefix, "share/fish/vendor_completions.d/twinblock.fish"),
		}
		for shell, p := range scripts {
			src, err := os.ReadFile(p)
			require.NoError(t, err, shell)
			assert.Contains(t, string(src), "__complete", shell)
			assertMode(t, p, 0o644)
		}
		if _, err := exec.LookPath("bash"); err != nil {
			t.Log("bash not installed: the bash script is not run")
			return
		}
		// The installed script, run by bash against the installed binary,
		// completes `twinblock -c CONF up <TAB>` with the resources. The
		// stub stands in for the bash-completion package's helper.
		conf := filepath.Join(t.TempDir(), "r.conf")
		require.NoError(t, os.WriteFile(conf, []byte(`resource r0 {
	on a { address 127.0.0.1:7789; disk a.img; }
	on b { address 127.0.0.2:7789; disk b.img; }
}
resource web {
	on a { address 127.0.0.1:7790; disk a2.img; }
	on b { address 127.0.0.2:7790; disk b2.img; }
}
`), 0o600))
		script := `_get_comp_words_by_ref() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
source "$1"
COMP_WORDS=(twinblock -c "$2" up "")
COMP_CWORD=4
COMP_LINE="twinblock -c $2 up "
COMP_POINT=${#COMP_LINE}
__start_twinblock
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command("bash", "-c", script, "bash", scripts["bash"], conf)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
		out, err := cmd.Output()
		require.NoError(t, err)
		assert.Equal(t, []string{"r0", "web", "all"}, strings.Fields(string(out)))
	})

	t.Run("systemd units", func(t *testing.T) {
		dir := filepath.Join(prefix, "lib/systemd/system")
		units := []string{"twinblock.service", "twinblock@.service", "twinblock-configured.target"}
		for _, u := range units {
			src, err := os.ReadFile(filepath.Join(dir, u))
			require.NoError(t, err, u)
			assert.NotContains(t, string(src), "@SBINDIR@", u)
			assertMode(t, filepath.Join(dir, u), 0o644)
		}
		daemon, err := os.ReadFile(filepath.Join(dir, "twinblock.service"))
		require.NoError(t, err)
		assert.Contains(t, string(daemon), "\nExecStart=/usr/local/sbin/twinblock daemon\n", "the path without DESTDIR")
		assert.Contains(t, string(daemon), "\nExecReload=/bin/kill -HUP $MAINPID\n")
		res, err := os.ReadFile(filepath.Join(dir, "twinblock@.service"))
		require.NoError(t, err)
		for _, line := range []string{"ExecStart=/usr/local/sbin/twinblock up %i", "ExecStart=-/usr/local/sbin/twinblock wait-connect %i",
			"ExecStop=/usr/local/sbin/twinblock down %i", "Requires=twinblock.service", "Before=twinblock-configured.target"} {
			assert.Contains(t, string(res), "\n"+line+"\n")
		}
		verifyUnits(t, dest, dir, units)
	})

	t.Run("cluster scripts", func(t *testing.T) {
		for src, dst := range map[string]string{
			"../scripts/ocf/twinblock":           "usr/lib/ocf/resource.d/twinblock/twinblock",
			"../scripts/heartbeat/twinblockdisk": "etc/ha.d/resource.d/twinblockdisk",
		} {
			want, err := os.ReadFile(src)
			if os.IsNotExist(err) {
				assert.NoFileExists(t, filepath.Join(dest, dst), "%s is not in the tree", src)
				continue
			}
			require.NoError(t, err)
			got, err := os.ReadFile(filepath.Join(dest, dst))
			require.NoError(t, err, dst)
			assert.Equal(t, want, got, dst)
			assertMode(t, filepath.Join(dest, dst), 0o755)
		}
	})

	t.Run("example configuration", func(t *testing.T) {
		mine, err := os.ReadFile(filepath.Join(dest, "etc/twinblock/twinblock.conf"))
		require.NoError(t, err)
		assert.Equal(t, "# mine\n", string(mine), "install wrote over twinblock.conf")
		example := filepath.Join(dest, "etc/twinblock/twinblock.conf.example")
		assertMode(t, example, 0o644)
		cmd := exec.Command(bin, "-c", example, "dump-config")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Run(), "%s", stderr.String())
		assert.Empty(t, stderr.String(), "the example loads without a warning")
		assert.Contains(t, stdout.String(), "resource r0 {")
	})
}

// TestInstallPrefix: PREFIX moves the binary, and the units name it there.
func TestInstallPrefix(t *testing.T) {
	dest := makeInstall(t, "PREFIX=/usr")
	assert.FileExists(t, filepath.Join(dest, "usr/sbin/twinblock"))
	assert.FileExists(t, filepath.Join(dest, "usr/share/man/man8/twinblock.8"))
	unit, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/twinblock@.service"))
	require.NoError(t, err)
	assert.Contains(t, string(unit), "\nExecStart=/usr/sbin/twinblock up %i\n")
	assert.NoDirExists(t, filepath.Join(dest, "usr/local"))
}

// verifyUnits runs systemd-analyze verify on the installed units, with
// their paths moved under dest (the binary is not installed at its real
// path) and the installed man pages on MANPATH (it checks that each
// Documentation= page exists). systemd-analyze prints what it ignores
// (an unknown key, a bad value) and still exits 0: any output fails.
func verifyUnits(t *testing.T, dest, dir string, units []string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd): the units are not verified")
	}
	tmp := t.TempDir()
	for _, u := range units {
		src, err := os.ReadFile(filepath.Join(dir, u))
		require.NoError(t, err)
		src = bytes.ReplaceAll(src, []byte("=/usr/local/sbin/"), []byte("="+dest+"/usr/local/sbin/"))
		src = bytes.ReplaceAll(src, []byte("=-/usr/local/sbin/"), []byte("=-"+dest+"/usr/local/sbin/"))
		require.NoError(t, os.WriteFile(filepath.Join(tmp, u), src, 0o644))
	}
	args := []string{"verify"}
	for _, u := range units {
		args = append(args, "./"+strings.Replace(u, "@.", "@r0.", 1)) // a template is verified as an instance
	}
	sort.Strings(args[1:])
	cmd := exec.Command("systemd-analyze", args...)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(dest, "usr/local/share/man"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "systemd-analyze %s:\n%s", strings.Join(args, " "), out)
	assert.Empty(t, string(out), "systemd-analyze %s", strings.Join(args, " "))
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if assert.NoError(t, err) {
		assert.Equal(t, want, st.Mode().Perm(), path)
	}
}
