package integration

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
)

// The OCF exit codes the agent returns.
const (
	ocfSuccess       = 0
	ocfErrGeneric    = 1
	ocfErrArgs       = 2
	ocfUnimplemented = 3
	ocfErrInstalled  = 5
	ocfErrConfigured = 6
	ocfNotRunning    = 7
	ocfRunningMaster = 8
	ocfFailedMaster  = 9
)

// ocfAgent runs scripts/ocf/twinblock for one node of a cluster, with
// the environment Pacemaker gives it.
type ocfAgent struct {
	path string
	env  []string
}

// newOCFAgent is the agent for node n: OCF_RESKEY_resource=r0 and the
// node's config, name, control socket and binary, plus env.
func newOCFAgent(t *testing.T, n *harness.Node, env ...string) *ocfAgent {
	t.Helper()
	return &ocfAgent{path: scriptPath(t, "ocf/twinblock"), env: append([]string{
		"OCF_ROOT=/usr/lib/ocf",
		"OCF_RESOURCE_INSTANCE=tb",
		"OCF_RESKEY_resource=r0",
		"OCF_RESKEY_config=" + n.Conf,
		"OCF_RESKEY_node=" + n.Name,
		"OCF_RESKEY_control=" + n.Control,
		"OCF_RESKEY_twinblock=" + twinblockBin,
		"OCF_RESKEY_CRM_meta_timeout=30000",
		"OCF_RESKEY_CRM_meta_interval=10000",
	}, env...)}
}

// run runs one action with extra environment (later entries win) and
// returns its exit code and output.
func (a *ocfAgent) run(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	return runScript(t, a.path, append(append([]string{}, a.env...), env...), args...)
}

// runScript runs a script with the environment env on top of the test's,
// and returns its exit code and combined output.
func runScript(t *testing.T, path string, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case ctx.Err() == nil && errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("%s %s: %v\n%s", path, strings.Join(args, " "), err, out)
	return -1, ""
}

// scriptPath is the absolute path of scripts/REL.
func scriptPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "scripts", rel))
	require.NoError(t, err)
	fi, err := os.Stat(p)
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&0o111, "%s is not executable", p)
	return p
}

// fakeScoreTools writes crm_master and crm_attribute scripts that log
// their arguments, one call a line, to the returned file, and returns
// the directory to put first in PATH.
func fakeScoreTools(t *testing.T) (dir, log string) {
	t.Helper()
	dir = t.TempDir()
	log = filepath.Join(dir, "scores.log")
	for _, tool := range []string{"crm_master", "crm_attribute"} {
		script := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >> %s\n", tool, log)
		require.NoError(t, os.WriteFile(filepath.Join(dir, tool), []byte(script), 0o755))
	}
	return dir, log
}

// scoreCalls reads the fake tools' log.
func scoreCalls(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// roleOf is `twinblock role r0` on n, or "not up" when it exits 10.
func roleOf(t *testing.T, n *harness.Node) string {
	t.Helper()
	out, err := n.TB(10*time.Second, "role", "r0")
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 10 {
		return "not up"
	}
	require.NoError(t, err, out)
	return out
}

// waitRole polls roleOf until it is want, for at most 10 s: the peer's
// role shows once the link is back.
func waitRole(t *testing.T, n *harness.Node, want string, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := roleOf(t, n)
		if got == want || time.Now().After(deadline) {
			require.Equal(t, want, got, msgAndArgs...)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// downOn takes r0 down on n (after syncedDaemons made it Primary), so
// that the agent or the Heartbeat script starts from a stopped resource.
func downOn(t *testing.T, n *harness.Node) {
	t.Helper()
	for _, verb := range []string{"secondary", "down"} {
		out, err := n.TB(30*time.Second, verb, "r0")
		require.NoError(t, err, out)
	}
	require.Equal(t, "not up", roleOf(t, n))
}

// TestOCFAgent drives the OCF agent ocf:twinblock:twinblock through
// Pacemaker's actions against a real pair of daemons, by their exit
// codes: monitor 7 before start, start, monitor 0 (Secondary), promote,
// monitor 8 (Primary), demote, stop, monitor 7 again, each action done
// twice where OCF requires that to succeed. The promotion scores the
// agent hands to a fake crm_master follow the disk state; notify,
// validate-all and meta-data answer as the OCF standard says, with and
// without ocf-shellfuncs; and resource-agents' ocf-tester passes the
// agent when it is installed.
func TestOCFAgent(t *testing.T) {
	a, b := syncedDaemons(t, harness.Options{DiskSize: 16 << 20})
	ctx := t.Context()
	downOn(t, a)
	toolsDir, scores := fakeScoreTools(t)
	ag := newOCFAgent(t, a, "PATH="+toolsDir+":"+os.Getenv("PATH"))
	probe := []string{"OCF_RESKEY_CRM_meta_interval=0"}

	t.Run("lifecycle", func(t *testing.T) {
		steps := []struct {
			action string
			env    []string
			want   int
			role   string // twinblock role r0 afterwards; "" unchecked
			score  string // the last score call afterwards; "" unchecked
			wait   bool   // wait for Connected before the step
		}{
			{action: "monitor", env: probe, want: ocfNotRunning, role: "not up"},
			{action: "monitor", want: ocfNotRunning, role: "not up", score: "crm_master -Q -l reboot -D"},
			{action: "promote", want: ocfErrGeneric, role: "not up"},
			{action: "demote", want: ocfNotRunning, role: "not up"},
			{action: "start", want: ocfSuccess},
			{action: "monitor", want: ocfSuccess, role: "Secondary/Secondary", score: "crm_master -Q -l reboot -v 10000", wait: true},
			{action: "monitor", env: probe, want: ocfSuccess},
			{action: "start", want: ocfSuccess, role: "Secondary/Secondary"},
			{action: "promote", want: ocfSuccess, role: "Primary/Secondary", score: "crm_master -Q -l reboot -v 10000"},
			{action: "monitor", want: ocfRunningMaster, role: "Primary/Secondary", score: "crm_master -Q -l reboot -v 10000"},
			{action: "monitor", env: probe, want: ocfRunningMaster},
			{action: "promote", want: ocfSuccess, role: "Primary/Secondary"},
			{action: "demote", want: ocfSuccess, role: "Secondary/Secondary"},
			{action: "monitor", want: ocfSuccess, role: "Secondary/Secondary"},
			{action: "demote", want: ocfSuccess, role: "Secondary/Secondary"},
			{action: "promote", want: ocfSuccess, role: "Primary/Secondary"},
			{action: "stop", want: ocfSuccess, role: "not up", score: "crm_master -Q -l reboot -D"},
			{action: "monitor", want: ocfNotRunning, role: "not up"},
			{action: "stop", want: ocfSuccess, role: "not up"},
			{action: "monitor", env: probe, want: ocfNotRunning, role: "not up"},
			{action: "start", want: ocfSuccess, role: ""},
			{action: "monitor", want: ocfSuccess, role: "Secondary/Secondary", wait: true},
		}
		for i, s := range steps {
			if s.wait {
				require.NoError(t, a.WaitFor(ctx, "cstate", "Connected", 30*time.Second))
			}
			start := time.Now()
			code, out := ag.run(t, s.env, s.action)
			t.Logf("step %d: %s %v: exit %d in %v", i, s.action, s.env, code, time.Since(start).Round(time.Millisecond))
			require.Equal(t, s.want, code, "step %d: %s %v:\n%s", i, s.action, s.env, out)
			if s.role != "" {
				waitRole(t, a, s.role, "step %d: %s", i, s.action)
			}
			if s.score != "" {
				calls := scoreCalls(t, scores)
				require.NotEmpty(t, calls, "step %d: %s set no score", i, s.action)
				require.Equal(t, s.score, calls[len(calls)-1], "step %d: %s", i, s.action)
			}
		}
		require.Equal(t, "Secondary/Secondary", roleOf(t, b))
	})

	t.Run("promotion scores follow the disk state", func(t *testing.T) {
		require.NoError(t, a.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 30*time.Second))
		tb := func(verb string) {
			out, err := a.TB(30*time.Second, verb, "r0")
			require.NoError(t, err, out)
		}
		steps := []struct {
			what   string
			before func()
			env    []string
			dstate string
			score  string
		}{
			{what: "connected, in sync", dstate: "UpToDate/UpToDate", score: "crm_master -Q -l reboot -v 10000"},
			{what: "Pacemaker 2.1 on: crm_attribute --promotion", env: []string{"OCF_RESKEY_crm_feature_set=3.16.2"},
				dstate: "UpToDate/UpToDate", score: "crm_attribute --promotion -v 10000"},
			{what: "disconnected: the peer's disk unknown", before: func() { tb("disconnect") },
				dstate: "UpToDate/DUnknown", score: "crm_master -Q -l reboot -v 1000"},
			{what: "Outdated", before: func() { tb("outdate") },
				dstate: "Outdated/DUnknown", score: "crm_master -Q -l reboot -D"},
			{what: "reconnected and resynced", before: func() {
				tb("connect")
				require.NoError(t, a.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 30*time.Second))
			}, dstate: "UpToDate/UpToDate", score: "crm_master -Q -l reboot -v 10000"},
		}
		for _, s := range steps {
			if s.before != nil {
				s.before()
			}
			out, err := a.TB(10*time.Second, "dstate", "r0")
			require.NoError(t, err, out)
			require.Equal(t, s.dstate, out, s.what)
			code, out := ag.run(t, s.env, "monitor")
			require.Equal(t, ocfSuccess, code, "%s:\n%s", s.what, out)
			calls := scoreCalls(t, scores)
			require.Equal(t, s.score, calls[len(calls)-1], s.what)
		}

		// Without Pacemaker's tools the agent sets no score, and fails
		// nothing for it.
		n := len(scoreCalls(t, scores))
		bare := newOCFAgent(t, a, "PATH=/usr/bin:/bin", "HA_SBIN_DIR="+t.TempDir())
		code, out := bare.run(t, nil, "monitor")
		require.Equal(t, ocfSuccess, code, out)
		require.Len(t, scoreCalls(t, scores), n)
	})

	t.Run("notify", func(t *testing.T) {
		for _, n := range []struct {
			typ, op string
			scored  bool // a post notification sets the score again
		}{
			{"pre", "start", false}, {"post", "start", true},
			{"pre", "promote", false}, {"post", "promote", true},
			{"pre", "demote", false}, {"post", "demote", true},
			{"pre", "stop", false}, {"post", "stop", true},
			{"", "", false},
		} {
			before := len(scoreCalls(t, scores))
			code, out := ag.run(t, []string{
				"OCF_RESKEY_CRM_meta_notify_type=" + n.typ,
				"OCF_RESKEY_CRM_meta_notify_operation=" + n.op,
				"OCF_RESKEY_CRM_meta_notify_promote_uname=b",
			}, "notify")
			assert.Equal(t, ocfSuccess, code, "%s-%s:\n%s", n.typ, n.op, out)
			grew := len(scoreCalls(t, scores)) > before
			assert.Equal(t, n.scored, grew, "%s-%s: score set", n.typ, n.op)
		}
		require.Equal(t, "Secondary/Secondary", roleOf(t, a), "a notification changed the role")
	})

	t.Run("a Primary without UpToDate data is a failed master", func(t *testing.T) {
		code, out := ag.run(t, nil, "promote")
		require.Equal(t, ocfSuccess, code, out)
		for _, verb := range []string{"detach", "disconnect"} {
			out, err := a.TB(30*time.Second, verb, "r0")
			require.NoError(t, err, out)
		}
		out, err := a.TB(10*time.Second, "dstate", "r0")
		require.NoError(t, err)
		require.Equal(t, "Diskless/DUnknown", out)
		code, out = ag.run(t, nil, "monitor")
		require.Equal(t, ocfFailedMaster, code, out)
		require.Equal(t, "crm_master -Q -l reboot -D", scoreCalls(t, scores)[len(scoreCalls(t, scores))-1])
		// Pacemaker's recovery: demote, stop (down), start again.
		for _, step := range []struct {
			action string
			want   int
		}{{"demote", ocfSuccess}, {"stop", ocfSuccess}, {"start", ocfSuccess}} {
			code, out := ag.run(t, nil, step.action)
			require.Equal(t, step.want, code, "%s:\n%s", step.action, out)
		}
		require.NoError(t, a.WaitFor(ctx, "dstate", "UpToDate/UpToDate", 30*time.Second))
	})

	t.Run("no daemon", func(t *testing.T) {
		gone := newOCFAgent(t, a, "OCF_RESKEY_control="+filepath.Join(t.TempDir(), "none.sock"), "OCF_RESKEY_CRM_meta_timeout=3000")
		for _, s := range []struct {
			action string
			env    []string
			want   int
			says   string
		}{
			{action: "monitor", env: probe, want: ocfNotRunning},
			{action: "monitor", want: ocfNotRunning},
			{action: "stop", want: ocfSuccess},
			{action: "start", want: ocfErrGeneric, says: "twinblock daemon does not run"},
		} {
			code, out := gone.run(t, s.env, s.action)
			assert.Equal(t, s.want, code, "%s %v:\n%s", s.action, s.env, out)
			assert.Contains(t, out, s.says, s.action)
		}
		require.Equal(t, "Secondary/Secondary", roleOf(t, a))
	})

	t.Run("validate-all", func(t *testing.T) {
		noFuncs := t.TempDir() // an OCF_ROOT without ocf-shellfuncs
		for _, funcs := range []struct {
			name string
			env  []string
		}{
			{"with ocf-shellfuncs if installed", nil},
			{"without ocf-shellfuncs", []string{"OCF_ROOT=" + noFuncs, "OCF_FUNCTIONS_DIR=" + noFuncs}},
		} {
			cases := []struct {
				what string
				env  []string
				args []string
				want int
			}{
				{what: "valid", want: ocfSuccess},
				{what: "no resource", env: []string{"OCF_RESKEY_resource="}, want: ocfErrConfigured},
				{what: "a resource name with a blank", env: []string{"OCF_RESKEY_resource=r0 r1"}, want: ocfErrConfigured},
				{what: "a resource the config lacks", env: []string{"OCF_RESKEY_resource=r9"}, want: ocfErrInstalled},
				{what: "no config file", env: []string{"OCF_RESKEY_config=/nonexistent/twinblock.conf"}, want: ocfErrInstalled},
				{what: "no binary", env: []string{"OCF_RESKEY_twinblock=/nonexistent/twinblock"}, want: ocfErrInstalled},
				{what: "promoted-max 2", env: []string{"OCF_RESKEY_CRM_meta_promoted_max=2"}, want: ocfErrConfigured},
				{what: "master-max 2", env: []string{"OCF_RESKEY_CRM_meta_master_max=2"}, want: ocfErrConfigured},
				{what: "clone-max 3", env: []string{"OCF_RESKEY_CRM_meta_clone_max=3"}, want: ocfErrConfigured},
				{what: "clone-node-max 2", env: []string{"OCF_RESKEY_CRM_meta_clone_node_max=2"}, want: ocfErrConfigured},
				{what: "a promotable clone as it should be", env: []string{"OCF_RESKEY_CRM_meta_clone_max=2", "OCF_RESKEY_CRM_meta_clone_node_max=1",
					"OCF_RESKEY_CRM_meta_promoted_max=1", "OCF_RESKEY_CRM_meta_promoted_node_max=1"}, want: ocfSuccess},
				{what: "a probe without the binary", env: []string{"OCF_RESKEY_twinblock=/nonexistent/twinblock", "OCF_RESKEY_CRM_meta_interval=0"},
					args: []string{"monitor"}, want: ocfNotRunning},
				{what: "no action", args: []string{}, want: ocfErrArgs},
				{what: "an action it does not have", args: []string{"migrate_to"}, want: ocfUnimplemented},
			}
			for _, c := range cases {
				args := c.args
				if args == nil {
					args = []string{"validate-all"}
				}
				code, out := ag.run(t, append(append([]string{}, funcs.env...), c.env...), args...)
				assert.Equal(t, c.want, code, "%s: %s:\n%s", funcs.name, c.what, out)
			}
		}
		require.Equal(t, "Secondary/Secondary", roleOf(t, a))
	})

	t.Run("meta-data", func(t *testing.T) {
		type content struct {
			Type    string `xml:"type,attr"`
			Default string `xml:"default,attr"`
		}
		type parameter struct {
			Name      string  `xml:"name,attr"`
			Required  string  `xml:"required,attr"`
			LongDesc  string  `xml:"longdesc"`
			ShortDesc string  `xml:"shortdesc"`
			Content   content `xml:"content"`
		}
		type action struct {
			Name     string `xml:"name,attr"`
			Timeout  string `xml:"timeout,attr"`
			Interval string `xml:"interval,attr"`
			Role     string `xml:"role,attr"`
		}
		var ra struct {
			XMLName    xml.Name    `xml:"resource-agent"`
			Name       string      `xml:"name,attr"`
			Version    string      `xml:"version"`
			ShortDesc  string      `xml:"shortdesc"`
			Parameters []parameter `xml:"parameters>parameter"`
			Actions    []action    `xml:"actions>action"`
		}
		// As Pacemaker asks for it: no instance parameters, and also
		// without ocf-shellfuncs.
		noFuncs := t.TempDir()
		for _, env := range [][]string{nil, {"OCF_ROOT=" + noFuncs, "OCF_FUNCTIONS_DIR=" + noFuncs}} {
			cmd := exec.Command(ag.path, "meta-data")
			cmd.Env = append(os.Environ(), env...)
			out, err := cmd.Output()
			require.NoError(t, err)
			require.NoError(t, xml.Unmarshal(out, &ra), "meta-data is not XML:\n%s", out)
		}
		assert.Equal(t, "twinblock", ra.Name)
		assert.Equal(t, "1.0", ra.Version)
		assert.NotEmpty(t, ra.ShortDesc)

		params := map[string]parameter{}
		for _, p := range ra.Parameters {
			params[p.Name] = p
			assert.NotEmpty(t, p.ShortDesc, p.Name)
			assert.NotEmpty(t, p.LongDesc, p.Name)
			assert.Equal(t, "string", p.Content.Type, p.Name)
		}
		for name, def := range map[string]string{
			"resource":  "",
			"config":    "/etc/twinblock/twinblock.conf",
			"node":      "",
			"control":   "/run/twinblock/control.sock",
			"twinblock": "twinblock",
		} {
			require.Contains(t, params, name)
			assert.Equal(t, def, params[name].Content.Default, name)
		}
		assert.Equal(t, "1", params["resource"].Required)

		actions := map[string]bool{}
		monitorRoles := map[string]bool{}
		for _, act := range ra.Actions {
			actions[act.Name] = true
			assert.NotEmpty(t, act.Timeout, act.Name)
			if act.Name == "monitor" {
				monitorRoles[act.Role] = true
				assert.NotEmpty(t, act.Interval, "monitor")
			}
		}
		for _, name := range []string{"start", "stop", "promote", "demote", "notify", "monitor", "meta-data", "validate-all"} {
			assert.True(t, actions[name], "no action %s", name)
		}
		// Two monitors with different intervals, as Pacemaker requires
		// for the two roles of a promotable clone.
		assert.Equal(t, map[string]bool{"Master": true, "Slave": true}, monitorRoles)
	})

	t.Run("ocf-tester", func(t *testing.T) {
		requireTools(t, "ocf-tester", "xmllint")
		// ocf-tester runs meta-data as nobody: a copy of the agent in a
		// directory anyone may read.
		dir, err := os.MkdirTemp("", "twinblock-ocf-")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(dir) })
		require.NoError(t, os.Chmod(dir, 0o755))
		src, err := os.ReadFile(ag.path)
		require.NoError(t, err)
		agent := filepath.Join(dir, "twinblock")
		require.NoError(t, os.WriteFile(agent, src, 0o755))

		start := time.Now()
		out, err := run(t, 5*time.Minute, "ocf-tester", "-n", "tb",
			"-o", "resource=r0", "-o", "config="+a.Conf, "-o", "node="+a.Name,
			"-o", "control="+a.Control, "-o", "twinblock="+twinblockBin, agent)
		t.Logf("ocf-tester took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
		require.NoError(t, err, out)
		require.Contains(t, out, "passed all tests")
		// It leaves the resource stopped.
		require.Equal(t, "not up", roleOf(t, a))
	})
}

// TestTwinblockdisk drives the Heartbeat v1 resource script
// scripts/heartbeat/twinblockdisk (as haresources' twinblockdisk::r0)
// on a real pair: status of a resource that is down, start (up and
// primary), status, a start refused while the peer is Primary, stop
// (secondary), a failover to the peer, and its usage errors.
func TestTwinblockdisk(t *testing.T) {
	a, b := syncedDaemons(t, harness.Options{DiskSize: 16 << 20})
	downOn(t, a)
	script := scriptPath(t, "heartbeat/twinblockdisk")

	// Its settings come from /etc/default/twinblock, here one file per
	// node that TWINBLOCK_DEFAULTS names.
	dir := t.TempDir()
	defaults := func(n *harness.Node, control string) string {
		p := filepath.Join(dir, n.Name+filepath.Base(control)+".defaults")
		body := fmt.Sprintf("TWINBLOCK=%s\nTWINBLOCK_CONFIG=%s\nTWINBLOCK_NODE=%s\nTWINBLOCK_CONTROL=%s\n",
			twinblockBin, n.Conf, n.Name, control)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return "TWINBLOCK_DEFAULTS=" + p
	}
	on := map[string][]string{
		"a": {defaults(a, a.Control)}, "b": {defaults(b, b.Control)},
		"a, no daemon": {defaults(a, filepath.Join(dir, "none.sock"))},
	}

	steps := []struct {
		on    string
		env   []string
		args  []string
		want  int
		says  string
		roleA string // twinblock role r0 on a afterwards; "" unchecked
	}{
		{on: "a", args: []string{"r0", "status"}, want: 3, says: "stopped (not up)", roleA: "not up"},
		{on: "a, no daemon", args: []string{"r0", "status"}, want: 3, says: "stopped (no daemon)"},
		{on: "a", args: []string{"r0", "start"}, want: 0, roleA: "Primary/Secondary"},
		{on: "a", args: []string{"r0", "status"}, want: 0, says: "running (Primary)"},
		{on: "a", args: []string{"r0", "start"}, want: 0, roleA: "Primary/Secondary"},
		{on: "b", args: []string{"r0", "status"}, want: 3, says: "stopped (Secondary)"},
		{on: "b", env: []string{"TWINBLOCK_START_TRIES=2"}, args: []string{"r0", "start"}, want: 1,
			says: "Multiple primaries", roleA: "Primary/Secondary"},
		{on: "a", args: []string{"r0", "stop"}, want: 0, roleA: "Secondary/Secondary"},
		{on: "a", args: []string{"r0", "status"}, want: 3, says: "stopped (Secondary)"},
		{on: "a", args: []string{"r0", "stop"}, want: 0, roleA: "Secondary/Secondary"},
		{on: "b", args: []string{"r0", "start"}, want: 0, roleA: "Secondary/Primary"},
		{on: "b", args: []string{"r0", "status"}, want: 0, says: "running (Primary)"},
		{on: "b", args: []string{"r0", "stop"}, want: 0, roleA: "Secondary/Secondary"},
		{on: "a", args: []string{"status"}, want: 10, says: "A resource name is required"},
		{on: "a", args: []string{"r0", "reload"}, want: 1, says: "Usage: twinblockdisk [resource] {start|stop|status}"},
	}
	for i, s := range steps {
		start := time.Now()
		code, out := runScript(t, script, append(append([]string{}, on[s.on]...), s.env...), s.args...)
		t.Logf("step %d: twinblockdisk %s on %s: exit %d in %v: %s", i, strings.Join(s.args, " "), s.on, code,
			time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		require.Equal(t, s.want, code, "step %d: twinblockdisk %s on %s:\n%s", i, strings.Join(s.args, " "), s.on, out)
		require.Contains(t, out, s.says, "step %d", i)
		if s.roleA != "" {
			waitRole(t, a, s.roleA, "step %d", i)
		}
	}
	require.Equal(t, "Secondary/Secondary", roleOf(t, b))
}
