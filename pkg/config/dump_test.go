package config

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// goodFiles are the configurations in testdata that must load.
var goodFiles = []string{
	"testdata/seed-drbd.conf",
	"testdata/full.conf",
	"testdata/inherit.conf",
	"testdata/include/drbd.conf",
}

// goodSources are small configurations that must load, for corners the
// files do not reach.
var goodSources = map[string]string{
	"quoting": `resource "a+b" {
		handlers {
			split-brain "echo \"split\" # not a comment \\ {};";
			local-io-error "";
		}
		disk "/dev/disk/by-id/with space";
		on n-1 { address 10.0.0.1:1; meta-disk "/dev/md #1" [3]; nbd-listen "unix:/run/x y.sock"; }
		on n_2 { address 10.0.0.2:1; }
	}`,
	"diskless and minor forms": `global { device minor 7; }
	resource r {
		on a { address 10.0.0.1:1; disk none; }
		on b { address 10.0.0.2:1; disk /d; device drbd8 minor 8; }
	}`,
	"all the flags": `global { disable-ip-verification; udev-always-use-vnr; }
	resource r {
		startup { stacked-timeouts; wait-after-sb; become-primary-on both; }
		net { allow-two-primaries; after-sb-0pri discard-node-b; }
		syncer { after r0; delay-probe-volume 16M; cpu-mask 0f; }
		disk /d;
		on a { address 10.0.0.1:1; options { cpu-mask ff; } proxy on a { inside 127.0.0.1:1; } }
		on b { address ipv6 [fe80::1%eth0]:1; }
	}`,
	"sizes": `resource r {
		disk { c-fill-target 1s; rs-discard-granularity 4097; size 3s; c-min-rate 0; }
		net { sndbuf-size 1000; congestion-fill 1G; max-buffers 128k; }
		disk /d;
		on a { address 127.0.0.1:1; }
		on b { address 127.0.0.2:1; }
	}
	resource r2 {
		disk /d;
		on a { address 127.0.0.1:2; }
		on b { address 127.0.0.2:2; }
	}`,
}

// normalized strips what a round trip through Dump changes: positions,
// the files read and the warnings.
func normalized(c *Config) *Config {
	strip := func(s Section) Section {
		out := Section{name: s.name}
		for _, st := range s.set {
			st.pos = Pos{}
			out.set = append(out.set, st)
		}
		return out
	}
	out := &Config{Global: strip(c.Global)}
	for _, r := range c.Resources {
		nr := *r
		nr.Pos = Pos{}
		nr.Net, nr.Disk, nr.Startup, nr.Handlers, nr.Options = strip(r.Net), strip(r.Disk), strip(r.Startup), strip(r.Handlers), strip(r.Options)
		for i, h := range r.Hosts {
			nh := *h
			nh.Pos = Pos{}
			nr.Hosts[i] = &nh
		}
		if r.Witness != nil {
			nw := *r.Witness
			nw.Pos = Pos{}
			nr.Witness = &nw
		}
		out.Resources = append(out.Resources, &nr)
	}
	return out
}

// dumpBody is Dump's text without its first line, which names the files.
func dumpBody(t testing.TB, c *Config) string {
	var b bytes.Buffer
	require.NoError(t, c.Dump(&b))
	_, body, _ := strings.Cut(b.String(), "\n")
	return body
}

// checkRoundTrip parses c's Dump and checks the result equals c.
func checkRoundTrip(t testing.TB, fs fileSystem, c *Config) {
	var b bytes.Buffer
	require.NoError(t, c.Dump(&b))
	c2, err := load(fs, "dump.conf", b.Bytes())
	require.NoError(t, err, "the dump does not parse:\n%s", b.String())
	assert.Equal(t, normalized(c), normalized(c2), "dump:\n%s", b.String())
	assert.Equal(t, dumpBody(t, c), dumpBody(t, c2), "the dump of the dump differs")
}

func TestDumpRoundTrip(t *testing.T) {
	for _, f := range goodFiles {
		t.Run(f, func(t *testing.T) {
			checkRoundTrip(t, mapFS{}, mustLoad(t, f))
		})
	}
	for name, src := range goodSources {
		t.Run(name, func(t *testing.T) {
			c, err := load(mapFS{}, "good.conf", []byte(src))
			require.NoError(t, err)
			checkRoundTrip(t, mapFS{}, c)
		})
	}
}

func TestGoodSources(t *testing.T) {
	c, err := load(mapFS{}, "good.conf", []byte(goodSources["quoting"]))
	require.NoError(t, err)
	r := c.Resources[0]
	assert.Equal(t, "a+b", r.Name)
	assert.Equal(t, `echo "split" # not a comment \ {};`, r.Handlers.String("split-brain"))
	assert.True(t, r.Handlers.Has("local-io-error"))
	assert.Equal(t, "", r.Handlers.String("local-io-error"))
	assert.Equal(t, "/dev/disk/by-id/with space", r.Hosts[0].Disk)
	assert.Equal(t, MetaDisk{Path: "/dev/md #1", Index: 3}, r.Hosts[0].MetaDisk)
	assert.Equal(t, "unix:/run/x y.sock", r.Hosts[0].NBDListen)

	c, err = load(mapFS{}, "good.conf", []byte(goodSources["diskless and minor forms"]))
	require.NoError(t, err)
	a, b := c.Resources[0].Hosts[0], c.Resources[0].Hosts[1]
	assert.Equal(t, Host{Name: "a", Pos: a.Pos, Address: "10.0.0.1:1", NBDDevice: "/dev/nbd7", Minor: 7,
		MetaDisk: MetaDisk{Internal: true, Index: -1}, NBDListen: "127.0.0.1:10809"}, *a, "device minor N from global")
	assert.Equal(t, "/dev/drbd8", b.Device, "drbdadm's /dev/ completion")
	assert.Equal(t, "/dev/nbd8", b.NBDDevice)
	assert.Equal(t, 8, b.Minor)

	c, err = load(mapFS{}, "good.conf", []byte(goodSources["all the flags"]))
	require.NoError(t, err)
	assert.Len(t, c.Warnings, 11)
	assert.Equal(t, `good.conf:7: section "proxy" is not implemented by twinblock; ignored`, c.Warnings[10].String())
	r = c.Resources[0]
	assert.Equal(t, "[fe80::1%eth0]:1", r.Hosts[1].Address)
	assert.Equal(t, "16M", r.Disk.String("delay-probe-volume"), "deprecated 8.3 syncer options land in disk")
	assert.Equal(t, "0f", r.Options.String("cpu-mask"))
	assert.Equal(t, "r0", r.Disk.String("resync-after"))
	assert.True(t, r.Startup.Bool("stacked-timeouts"))

	c, err = load(mapFS{}, "good.conf", []byte(goodSources["sizes"]))
	require.NoError(t, err)
	r = c.Resources[0]
	assert.Equal(t, int64(512), r.Disk.Size("c-fill-target"))
	assert.Equal(t, int64(1536), r.Disk.Size("size"))
	assert.Equal(t, int64(0), r.Disk.Size("c-min-rate"))
	assert.Equal(t, int64(1<<30), r.Net.Size("congestion-fill"))
	assert.Equal(t, int64(128<<10), r.Net.Int("max-buffers"))
	assert.Equal(t, 1, c.Resources[1].Hosts[0].Minor, "no device: the resource's index")
}

func TestDumpSeed(t *testing.T) {
	want := `
global {
	usage-count no;
}

resource r0 {
	protocol C;
	disk {
		on-io-error detach;
		resync-rate 10M;
	}
	startup {
		wfc-timeout 0;
		degr-wfc-timeout 120;
	}
	on l0 {
		address 127.0.0.1:7791;
		device /dev/drbd0;
		disk /dev/sda7;
		meta-disk internal;
		nbd-listen 127.0.0.1:10809;
	}
	on l1 {
		address 127.0.0.2:7791;
		device /dev/drbd0;
		disk /dev/sda7;
		meta-disk internal;
		nbd-listen 127.0.0.1:10809;
	}
}
`
	c := mustLoad(t, "testdata/seed-drbd.conf")
	var b bytes.Buffer
	require.NoError(t, c.Dump(&b))
	assert.Equal(t, "# twinblock dump-config: testdata/seed-drbd.conf, normalized; common is merged into each resource.\n"+want, b.String())
}
