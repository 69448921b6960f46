package node

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/netsim"
	"github.com/twinblock/twinblock/splitbrain"
)

// keywordTestOverrides replace DRBD's defaults where the scenario needs
// other values (a fast in-memory pair, checksums, the handler policy).
var keywordTestOverrides = map[string]string{
	"net/connect-int": "1", "net/ping-int": "1", "net/ping-timeout": "5", "net/timeout": "20", "net/ko-count": "3",
	"net/cram-hmac-alg": "sha1", "net/compression": "s2", "net/shared-secret": `"s3cret"`, "net/verify-alg": "crc32c", "net/csums-alg": "crc32c",
	"disk/on-io-error": "call-local-io-error", "disk/resync-rate": "4G", "disk/c-plan-ahead": "0",
}

// keywordTestConfig is a two-host resource that writes every
// implemented option keyword of the table explicitly (its default, or
// the override), and every handler as handler.sh NAME: so a consumer
// that exists only for an explicit setting (the loader's check of
// allow-two-primaries yes, use-rle no, usage-count yes) runs too. The
// placement keywords are the hosts' own.
func keywordTestConfig(script string) string {
	secs := map[string][]string{}
	placement := map[string]bool{}
	for _, k := range config.Keywords() {
		if k.Section == "on" {
			placement[k.Name] = true
		}
	}
	for _, k := range config.Keywords() {
		if k.Alias || !k.Implemented || (k.Section == "handlers" && k.Name == "quorum-lost") {
			continue // (quorum-lost warns without quorum; the loader reads it)
		}
		v, ok := keywordTestOverrides[k.Section+"/"+k.Name]
		switch {
		case k.Section == "handlers":
			v, ok = fmt.Sprintf(`"%s %s"`, script, k.Name), true
		case ok:
		case k.Default != "" && !placement[k.Name]:
			v, ok = k.Default, true
		}
		if ok {
			secs[k.Section] = append(secs[k.Section], k.Name+" "+v+";")
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "global { %s }\nresource r0 {\n  protocol C;\n", strings.Join(secs["global"], " "))
	for _, sec := range []string{"net", "disk", "startup", "handlers", "options"} {
		if len(secs[sec]) > 0 {
			fmt.Fprintf(&b, "  %s {\n    %s\n  }\n", sec, strings.Join(secs[sec], "\n    "))
		}
	}
	b.WriteString(`  meta-disk internal;
  on a { address 127.0.0.1:7789; disk a.img; device minor 0; nbd-listen 127.0.0.1:10809; }
  on b { address 127.0.0.2:7789; disk b.img; device minor 0; nbd-listen 127.0.0.2:10809; }
}
`)
	return b.String()
}

// TestEveryKeywordIsReadOrWarned walks the keyword table: every keyword
// it marks implemented must be read by the program, or else be one
// config warns about (pkg/config's TestNoKeywordIsAcceptedSilently
// checks that every other keyword warns). "Read" is recorded by
// config.ReadLog while two resources load the configuration and run the
// code paths that consume it: attach, connect (handshake, link), a
// forced promotion and the full resync it starts, online verify finding
// a block out of sync, and a disk failing with on-io-error
// call-local-io-error. The handlers the handshake may ask for
// (splitbrain.Handlers, checked against Negotiate in its package) are
// run as process runs a Ready's handlers. A keyword marked implemented
// that nothing reads fails the test: unmark it (and it warns), or give
// it a consumer.
func TestEveryKeywordIsReadOrWarned(t *testing.T) {
	dir := t.TempDir()
	script, log := handlerScript(t, dir)
	reads := config.RecordReads()
	defer reads.Stop()
	cfg, err := config.Parse(filepath.Join(dir, "r0.conf"), []byte(keywordTestConfig(script)))
	require.NoError(t, err)
	require.Empty(t, cfg.Warnings, "only implemented keywords, with supported values")

	const size = 4 << 20
	nw, clk := netsim.New(), clock.NewFake(time.Unix(1_800_000_000, 0))
	backing := [2]*disk.Crash{freshDisk(t, size), freshDisk(t, size)}
	faulty := [2]*disk.Faulty{disk.NewFaulty(backing[0], nil), disk.NewFaulty(backing[1], nil)}
	var r [2]*Resource
	ctx := context.Background()
	for i, name := range []string{"a", "b"} {
		r[i] = startNode(t, cfg.Resources[0], name, nw, clk, faulty[i])
		require.NoError(t, r[i].Do(ctx, fsm.AttachBegin{}))
		require.NoError(t, r[i].Do(ctx, fsm.Connect{}))
	}
	a, b := r[0], r[1]
	state := func() string {
		sa, sb := a.Status(), b.Status()
		return fmt.Sprintf("a %s %s/%s, b %s %s/%s", sa.Conn, sa.Disk, sa.PeerDisk, sb.Conn, sb.Disk, sb.PeerDisk)
	}
	const limit = 3000
	require.True(t, settle(clk, limit, func() bool { return a.Status().Conn == "Connected" }), state())

	// The forced promotion makes a the source of a full resync.
	require.NoError(t, a.Do(ctx, fsm.Promote{Force: true}))
	synced := "a Connected UpToDate/UpToDate, b Connected UpToDate/UpToDate"
	require.True(t, settle(clk, limit, func() bool { return state() == synced }), state())

	// Online verify finds the block changed behind b's back.
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = 0xA5
	}
	require.NoError(t, backing[1].WriteAt(garbage, 8192, false))
	require.NoError(t, a.Do(ctx, fsm.StartVerify{}))
	ran := func(h string) func() bool {
		return func() bool {
			return slices.ContainsFunc(handlerLines(t, log), func(l string) bool { return strings.HasPrefix(l, h+" ") })
		}
	}
	require.True(t, settle(clk, limit, ran("out-of-sync")), "%s; handlers %q", state(), handlerLines(t, log))

	// b's disk fails under a replicated write: detached, and its
	// local-io-error handler runs.
	faulty[1].SetInjector(disk.FailAll(disk.OpWrite))
	_ = a.dev.WriteAt(garbage, 0, false)
	require.True(t, settle(clk, limit, ran("local-io-error")), "%s; handlers %q", state(), handlerLines(t, log))
	assert.Equal(t, "Diskless", b.Status().Disk)

	// What the handshake may ask for, as process runs it.
	for _, h := range splitbrain.Handlers {
		a.runHandler(h)
	}
	for _, n := range r {
		require.NoError(t, n.Close())
	}
	// The startup timeouts' consumer is the CLI's wait-connect and
	// wait-sync, through this.
	for _, c := range [][2]bool{{false, false}, {false, true}, {true, false}} {
		_, _ = cfg.Resources[0].WaitTimeout(c[0], c[1])
	}
	reads.Stop()

	for _, h := range []string{"before-resync-target", "after-resync-target", "out-of-sync", "local-io-error"} {
		assert.True(t, ran(h)(), "the scenario runs the %s handler; ran %q", h, handlerLines(t, log))
	}
	for _, k := range config.Keywords() {
		if k.Alias || !k.Implemented {
			continue // an alias is read through its keyword; the others warn
		}
		assert.True(t, reads.Read(k.Section, k.Name),
			"keyword %s in section %s is marked implemented, but nothing read it: give it a consumer, or mark it not implemented (it then warns)", k.Name, k.Section)
	}
}
