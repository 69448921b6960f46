package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mustLoad(t *testing.T, path string) *Config {
	t.Helper()
	c, err := Load(path)
	require.NoError(t, err)
	return c
}

func warningStrings(c *Config) []string {
	var out []string
	for _, w := range c.Warnings {
		out = append(out, w.String())
	}
	return out
}

// TestSeed loads the real drbd.conf from reference/seed-drbd.conf.
func TestSeed(t *testing.T) {
	c := mustLoad(t, "testdata/seed-drbd.conf")
	assert.Empty(t, warningStrings(c), "every keyword of the seed is implemented")
	assert.Equal(t, []string{"testdata/seed-drbd.conf"}, c.Files)
	assert.Equal(t, "no", c.Global.String("usage-count"))
	assert.False(t, c.Global.Bool("disable-ip-verification"), "commented out in the seed")

	require.Len(t, c.Resources, 1)
	r, err := c.Resource("r0")
	require.NoError(t, err)
	assert.Equal(t, Pos{"testdata/seed-drbd.conf", 13}, r.Pos)
	assert.Equal(t, "C", r.Protocol)
	assert.Equal(t, int64(10<<20), r.Disk.Size("resync-rate"), "common's syncer rate 10M")
	p, ok := r.Disk.Pos("resync-rate")
	assert.True(t, ok)
	assert.Equal(t, "testdata/seed-drbd.conf:11", p.String(), "set in common")
	assert.Equal(t, "detach", r.Disk.String("on-io-error"))
	assert.Equal(t, int64(0), r.Startup.Int("wfc-timeout"))
	assert.Equal(t, int64(120), r.Startup.Int("degr-wfc-timeout"))
	assert.Equal(t, 120*time.Second, r.Startup.Duration("degr-wfc-timeout"))

	want := []Host{
		{Name: "l0", Pos: Pos{"testdata/seed-drbd.conf", 20}, Address: "127.0.0.1:7791"},
		{Name: "l1", Pos: Pos{"testdata/seed-drbd.conf", 25}, Address: "127.0.0.2:7791"},
	}
	for i, w := range want {
		w.Disk, w.Device, w.NBDDevice, w.Minor = "/dev/sda7", "/dev/drbd0", "/dev/nbd0", 0
		w.MetaDisk = MetaDisk{Internal: true, Index: -1}
		w.NBDListen = "127.0.0.1:10809"
		assert.Equal(t, w, *r.Hosts[i])
	}
	self, peer, err := r.Host("l1")
	require.NoError(t, err)
	assert.Equal(t, "l1", self.Name)
	assert.Equal(t, "l0", peer.Name)
	assert.Equal(t, "internal", self.MetaDisk.String())
}

// TestDefaults: what is not written comes from DRBD's defaults.
func TestDefaults(t *testing.T) {
	r := mustLoad(t, "testdata/seed-drbd.conf").Resources[0]
	for _, tc := range []struct {
		sec  Section
		k    string
		want int64
	}{
		{r.Net, "timeout", 60}, {r.Net, "connect-int", 10}, {r.Net, "ping-int", 10},
		{r.Net, "ping-timeout", 5}, {r.Net, "ko-count", 7}, {r.Net, "max-buffers", 2048},
		{r.Disk, "al-extents", 1237}, {r.Disk, "c-plan-ahead", 20}, {r.Disk, "c-delay-target", 10},
		{r.Disk, "c-fill-target", 100 * 512}, {r.Disk, "c-max-rate", 102400 << 10},
		{r.Disk, "c-min-rate", 250 << 10}, {r.Startup, "outdated-wfc-timeout", 0},
	} {
		assert.False(t, tc.sec.Has(tc.k), tc.k)
		assert.Equal(t, tc.want, tc.sec.Int(tc.k), tc.k)
		_, ok := tc.sec.Pos(tc.k)
		assert.False(t, ok)
	}
	assert.Equal(t, 6*time.Second, r.Net.Duration("timeout"))
	assert.Equal(t, 500*time.Millisecond, r.Net.Duration("ping-timeout"))
	assert.Equal(t, "disconnect", r.Net.String("after-sb-0pri"))
	assert.Equal(t, "disconnect", r.Net.String("rr-conflict"))
	assert.Equal(t, "none", r.Net.String("compression"))
	assert.Equal(t, "", r.Net.String("cram-hmac-alg"))
	assert.True(t, r.Net.Bool("use-rle"))
	assert.False(t, r.Net.Bool("allow-two-primaries"))
	assert.True(t, r.Disk.Bool("disk-flushes"))
	assert.True(t, r.Disk.Bool("md-flushes"))
	assert.True(t, r.Disk.Bool("al-updates"))
	assert.Equal(t, "250K", r.Disk.String("c-min-rate"), "defaults print normalized too")
	assert.Equal(t, "", r.Handlers.String("split-brain"))
	assert.Nil(t, r.Startup.Words("become-primary-on"))
	assert.Equal(t, "ask", newSection(secGlobal).String("usage-count"))
	assert.Equal(t, int64(32), newSection(secGlobal).Int("minor-count"))
}

func TestAccessorsPanicOnProgrammingErrors(t *testing.T) {
	r := mustLoad(t, "testdata/seed-drbd.conf").Resources[0]
	assert.PanicsWithValue(t, `config: no keyword "timout" in section "net"`, func() { r.Net.Has("timout") })
	assert.Panics(t, func() { r.Disk.Int("timeout") }, "timeout is a net keyword")
	assert.Panics(t, func() { r.Disk.Size("on-io-error") })
	assert.Panics(t, func() { r.Net.Bool("timeout") })
	assert.Panics(t, func() { r.Net.Duration("max-buffers") })
	assert.Equal(t, int64(10<<20), r.Disk.Size("rate"), "an alias in the same section reads its keyword")
}

// TestFull checks a configuration that uses most of the language.
func TestFull(t *testing.T) {
	c := mustLoad(t, "testdata/full.conf")
	assert.Equal(t, []string{
		`testdata/full.conf:5: keyword "disable-ip-verification" in section global is not implemented by twinblock; ignored`,
		`testdata/full.conf:6: keyword "dialog-refresh" in section global is not implemented by twinblock; ignored`,
		`testdata/full.conf:7: keyword "minor-count" in section global is not implemented by twinblock; ignored`,
		`testdata/full.conf:8: keyword "udev-always-use-vnr" in section global is not implemented by twinblock; ignored`,
		`testdata/full.conf:21: keyword "sndbuf-size" in section net is not implemented by twinblock; ignored`,
		`testdata/full.conf:29: keyword "outdate-peer" in section handlers is not implemented by twinblock; ignored`,
		`testdata/full.conf:42: keyword "no-tcp-cork" in section net is not implemented by twinblock; ignored`,
		`testdata/full.conf:50: use-rle no is not supported by twinblock (the bitmap exchange is always run-length encoded); ignored`,
		`testdata/full.conf:55: keyword "fencing" in section disk is not implemented by twinblock; ignored`,
		`testdata/full.conf:58: keyword "become-primary-on" in section startup is not implemented by twinblock; ignored`,
		`testdata/full.conf:61: keyword "on-no-data-accessible" in section options is not implemented by twinblock; ignored`,
	}, warningStrings(c))
	assert.True(t, c.Global.Bool("disable-ip-verification"))
	assert.Equal(t, int64(64), c.Global.Int("minor-count"))
	require.Len(t, c.Resources, 2, "the skip block is not a resource")

	r0, r1 := c.Resources[0], c.Resources[1]
	assert.Equal(t, "C", r0.Protocol, "net { protocol c; } overrides common's protocol B")
	assert.Equal(t, "B", r1.Protocol, "inherited from common")
	assert.Panics(t, func() { r0.Net.Has("protocol") }, "the protocol lives in Resource.Protocol")

	// net: per-keyword merge of common and resource.
	assert.Equal(t, int64(60), r0.Net.Int("timeout"))
	assert.Equal(t, int64(50), r1.Net.Int("timeout"))
	assert.Equal(t, "sha1", r0.Net.String("cram-hmac-alg"))
	assert.Equal(t, `Foo "Fun" Factory`, r0.Net.String("shared-secret"))
	assert.Equal(t, int64(8192), r0.Net.Int("max-buffers"))
	assert.Equal(t, int64(512<<10), r0.Net.Size("sndbuf-size"))
	assert.True(t, r0.Net.Bool("always-asbp"))
	assert.False(t, r0.Net.Bool("tcp-cork"), "no-tcp-cork")
	assert.Equal(t, "zstd", r0.Net.String("compression"))

	// syncer { } lands where 8.4 keeps it.
	assert.Equal(t, int64(33<<20), r0.Disk.Size("resync-rate"))
	assert.Equal(t, int64(1<<20), r0.Disk.Size("c-fill-target"))
	assert.Equal(t, "sha1", r0.Net.String("verify-alg"))
	assert.Equal(t, "md5", r0.Net.String("csums-alg"))
	assert.False(t, r0.Net.Bool("use-rle"))
	assert.Equal(t, int64(250<<10), r1.Disk.Size("resync-rate"), "default")
	assert.Equal(t, int64(3389), r1.Disk.Int("al-extents"), "from common")
	assert.Equal(t, int64(0), r1.Disk.Int("c-plan-ahead"))

	assert.Equal(t, "pass_on", r0.Disk.String("on-io-error"))
	assert.False(t, r0.Disk.Bool("disk-flushes"), "no-disk-flushes")
	assert.Equal(t, "/usr/lib/drbd/crm-fence-peer.sh", r1.Handlers.String("fence-peer"), "outdate-peer")
	assert.Equal(t, "/usr/lib/drbd/notify-split-brain.sh root", r1.Handlers.String("split-brain"))
	assert.Equal(t, []string{"alice"}, r0.Startup.Words("become-primary-on"))
	assert.Equal(t, int64(120), r1.Startup.Int("wfc-timeout"))

	alice, bob, err := r0.Host("alice")
	require.NoError(t, err)
	assert.Equal(t, Host{Name: "alice", Pos: Pos{"testdata/full.conf", 64}, Address: "10.1.1.31:7789", Disk: "/dev/sda7",
		NBDDevice: "/dev/nbd1", Minor: 1, MetaDisk: MetaDisk{Path: "/dev/sdb1", Index: 0}, NBDListen: "127.0.0.1:10900"}, *alice)
	assert.Equal(t, MetaDisk{Path: "/dev/sdb1", Index: 1}, bob.MetaDisk, "PATH [IDX] with a space")
	assert.Equal(t, "/dev/sdb1[1]", bob.MetaDisk.String())
	assert.Equal(t, "unix:/run/twinblock/r0.sock", bob.NBDListen)

	assert.Equal(t, "[fd01:2345:6789:abcd::1]:7790", r1.Hosts[0].Address)
	assert.Equal(t, "[fd01:2345:6789:abcd::2]:7790", r1.Hosts[1].Address, "brackets without the ipv6 family")
	assert.Equal(t, "/dev/nbd5", r1.Hosts[0].Device)
	assert.Equal(t, "/dev/nbd5", r1.Hosts[0].NBDDevice)
	assert.Equal(t, 5, r1.Hosts[0].Minor)
	assert.Equal(t, "/dev/vg/r1", r1.Hosts[0].Disk)
	assert.Equal(t, "", r1.Hosts[1].Disk, "disk none")
	assert.Equal(t, MetaDisk{Path: "/dev/vg/r1-md", Index: -1}, r1.Hosts[1].MetaDisk, "flexible-meta-disk")
	assert.Equal(t, "/dev/vg/r1-md", r1.Hosts[1].MetaDisk.String())
}

// TestInheritance: global < common < resource < on HOST, per field.
func TestInheritance(t *testing.T) {
	c := mustLoad(t, "testdata/inherit.conf")
	g, r := c.Resources[0], c.Resources[1]
	for _, tc := range []struct {
		name            string
		h               *Host
		listen, md, dev string
		disk            string
		minor           int
	}{
		{"g/a: common's listen, global's meta-disk, index minor", g.Hosts[0], "127.0.0.1:12000", "/dev/md-global", "", "/dev/g", 0},
		{"g/b", g.Hosts[1], "127.0.0.1:12000", "/dev/md-global", "", "/dev/g", 0},
		{"r/a: on's listen and meta-disk, resource's device", r.Hosts[0], "0.0.0.0:14000", "/dev/md-a[2]", "/dev/drbd3", "/dev/r", 3},
		{"r/b: resource's listen and meta-disk, on's device and disk", r.Hosts[1], "127.0.0.1:13000", "internal", "/dev/nbd4", "/dev/r-on-b", 4},
	} {
		assert.Equal(t, tc.listen, tc.h.NBDListen, tc.name)
		assert.Equal(t, tc.md, tc.h.MetaDisk.String(), tc.name)
		assert.Equal(t, tc.dev, tc.h.Device, tc.name)
		assert.Equal(t, tc.disk, tc.h.Disk, tc.name)
		assert.Equal(t, tc.minor, tc.h.Minor, tc.name)
	}
	assert.Equal(t, int64(40), g.Net.Int("timeout"))
	assert.Equal(t, int64(20), r.Net.Int("timeout"), "resource's net overrides common's net")
	assert.Equal(t, int64(3), r.Net.Int("ko-count"), "and keeps common's other keywords")
	p, _ := r.Net.Pos("ko-count")
	assert.Equal(t, 8, p.Line)
	assert.Equal(t, int64(20<<20), r.Disk.Size("resync-rate"))
}

func TestInclude(t *testing.T) {
	c := mustLoad(t, "testdata/include/drbd.conf")
	assert.Equal(t, []string{
		"testdata/include/drbd.conf",
		"testdata/include/drbd.d/global_common.conf",
		"testdata/include/net.inc",
		"testdata/include/conf.d/r0.res",
		"testdata/include/conf.d/r1.res",
	}, c.Files)
	assert.Empty(t, c.Warnings)
	require.Len(t, c.Resources, 2)
	for _, r := range c.Resources {
		assert.Equal(t, "sha256", r.Net.String("cram-hmac-alg"), "include inside net { }")
		p, _ := r.Net.Pos("shared-secret")
		assert.Equal(t, "testdata/include/net.inc:2", p.String())
	}
	assert.Equal(t, int64(40<<20), c.Resources[0].Disk.Size("resync-rate"))
	assert.Equal(t, int64(1<<30), c.Resources[1].Disk.Size("resync-rate"))
	assert.Equal(t, "testdata/include/conf.d/r1.res:1", c.Resources[1].Pos.String())
}

func TestIncludeAbsoluteAndTwice(t *testing.T) {
	dir := t.TempDir()
	res := filepath.Join(dir, "r.res")
	require.NoError(t, os.WriteFile(res, []byte(`resource r { disk /d; on a { address 10.0.0.1:1; } on b { address 10.0.0.2:1; } }`), 0o600))
	main := filepath.Join(dir, "main.conf")
	src := "include \"" + res + "\";\ninclude \"*.res\";\n"
	require.NoError(t, os.WriteFile(main, []byte(src), 0o600))
	c, err := Load(main)
	require.NoError(t, err)
	assert.Len(t, c.Resources, 1)
	require.Len(t, c.Warnings, 1)
	assert.Equal(t, main+`:2: include "*.res": `+res+` was already read; skipped`, c.Warnings[0].String())
}

func TestIncludeCycle(t *testing.T) {
	_, err := Load("testdata/cycle/a.conf")
	require.Error(t, err)
	assert.Equal(t, "testdata/cycle/b.conf:2: include cycle: testdata/cycle/a.conf -> testdata/cycle/b.conf -> testdata/cycle/a.conf", err.Error())
	var ce *Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, Pos{"testdata/cycle/b.conf", 2}, ce.Pos)
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/no-such.conf")
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Equal(t, "config: open testdata/no-such.conf: no such file or directory", err.Error())

	_, err = Parse("testdata/x.conf", []byte(`include "no-such.conf";`))
	assert.EqualError(t, err, `testdata/x.conf:1: include "no-such.conf": no such file`)
}

func TestResourceLookup(t *testing.T) {
	c := mustLoad(t, "testdata/full.conf")
	_, err := c.Resource("r9")
	assert.EqualError(t, err, `config: resource "r9" is not defined in testdata/full.conf (resources: r0, r1)`)
	_, _, err = c.Resources[0].Host("carol")
	assert.EqualError(t, err, `resource r0 has no "on carol" section (hosts: alice, bob)`)
}

func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		kw, in string
		want   int64
		norm   string
	}{
		{"resync-rate", "250", 250 << 10, "250K"},
		{"resync-rate", "10M", 10 << 20, "10M"},
		{"resync-rate", "10m", 10 << 20, "10M"},
		{"resync-rate", "1g", 1 << 30, "1G"},
		{"resync-rate", "1024", 1 << 20, "1M"},
		{"resync-rate", "1536K", 1536 << 10, "1536K"},
		{"resync-rate", "3s", 2 << 10, "2K"}, // rounded up to whole KiB, as drbdadm
		{"c-fill-target", "100", 100 * 512, "50K"},
		{"c-fill-target", "1s", 512, "1"}, // one sector: a bare number is in sectors
		{"c-fill-target", "3", 3 * 512, "3"},
		{"c-max-rate", "100M", 100 << 20, "100M"},
		{"size", "10G", 10 << 30, "10G"},
		{"size", "2097152", 1 << 30, "1G"},
	} {
		kw := keywords.lookup(secDisk, tc.kw)
		v, err := parseValue(kw, []token{{kind: tokWord, text: tc.in}})
		require.NoError(t, err, "%s %s", tc.kw, tc.in)
		assert.Equal(t, tc.want, v.num, "%s %s", tc.kw, tc.in)
		assert.Equal(t, []string{tc.norm}, v.words, "%s %s", tc.kw, tc.in)
	}
	kw := keywords.lookup(secNet, "rs-discard-granularity")
	assert.Nil(t, kw)
	kw = keywords.lookup(secDisk, "rs-discard-granularity")
	v, err := parseValue(kw, []token{{kind: tokWord, text: "4097"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"4097"}, v.words, "bytes")
}

func TestParseUsesNameForPositions(t *testing.T) {
	c, err := Parse("mem.conf", []byte("resource r {\n disk /d;\n on a { address 10.0.0.1:1; }\n on b { address 10.0.0.2:1; }\n}\n"))
	require.NoError(t, err)
	assert.Equal(t, "mem.conf:3", c.Resources[0].Hosts[0].Pos.String())
	assert.Equal(t, []string{"mem.conf"}, c.Files)
}

func TestTwoPrimariesWarns(t *testing.T) {
	c, err := Parse("w.conf", []byte("resource r {\n net { allow-two-primaries; }\n disk /d;\n on a { address 10.0.0.1:1; }\n on b { address 10.0.0.2:1; }\n}\n"))
	require.NoError(t, err)
	assert.Equal(t, []string{"w.conf:2: allow-two-primaries yes is not supported by twinblock (one Primary at a time); ignored"}, warningStrings(c))
	c, err = Parse("w.conf", []byte("resource r {\n net { allow-two-primaries no; }\n disk /d;\n on a { address 10.0.0.1:1; }\n on b { address 10.0.0.2:1; }\n}\n"))
	require.NoError(t, err)
	assert.Empty(t, c.Warnings)
}
