package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// twoHosts completes a resource.
const twoHosts = "disk /dev/x; on a { address 10.0.0.1:7789; } on b { address 10.0.0.2:7789; }"

// badCases are configurations that must not load. The error must be at
// the line marked "# <-" of bad.conf and contain msg.
var badCases = []struct {
	name, src, msg string
}{
	{"unknown keyword", `resource r { net {
		timout 5;  # <-
	} ` + twoHosts + ` }`, `unknown keyword "timout" in section net; did you mean "timeout"?`},
	{"keyword in the wrong section", `resource r { disk {
		timeout 5;  # <-
	} ` + twoHosts + ` }`, `unknown keyword "timeout" in section disk; "timeout" belongs in section net`},
	{"unknown top-level keyword", `resourec r { }  # <-`, `unknown section "resourec" at the top level`},
	{"unknown top-level statement", `usage-count no;  # <-`, `unknown keyword "usage-count" at the top level`},
	{"unknown section", `resource r {
		nett { }  # <-
	` + twoHosts + ` }`, `unknown section "nett" in section resource; did you mean "net"?`},
	{"unterminated string", `resource r { handlers {
		split-brain "/bin/notify root;  # <-
	} ` + twoHosts + ` }`, `unterminated string`},
	{"unterminated string at eof", `global { usage-count "no  # <-`, `unterminated string`},
	{"missing semicolon", `global {
		usage-count no  # <-
	}`, `missing ";" after "usage-count no"`},
	{"missing semicolon at eof", "global {\nusage-count no  # <-", `missing ";" after "usage-count no"`},
	{"missing closing brace", `resource r {  # <-
		` + twoHosts, `missing "}": section "resource r {" is not closed before the end of the file`},
	{"extra closing brace", `global { usage-count no; }
	}  # <-`, `unexpected "}"`},
	{"stray semicolon", `global { ; }  # <-`, `unexpected ";"`},
	{"quoted keyword", `"global" { }  # <-`, `expected a keyword, found string "global"`},
	{"bad size", `resource r { disk {
		resync-rate 10X;  # <-
	} ` + twoHosts + ` }`, `resync-rate 10X: unknown size suffix "X" (expected K, M, G or s)`},
	{"not a size", `resource r { disk {
		resync-rate fast;  # <-
	} ` + twoHosts + ` }`, `resync-rate fast: expected a size`},
	{"size out of range", `resource r { disk {
		resync-rate 0;  # <-
	} ` + twoHosts + ` }`, `resync-rate 0: out of range 1K..4G`},
	{"size overflow", `resource r { disk {
		c-max-rate 99999999999999999999;  # <-
	} ` + twoHosts + ` }`, `out of range 250K..4G`},
	{"out of range", `resource r { disk {
		al-extents 20;  # <-
	} ` + twoHosts + ` }`, `al-extents 20: out of range 67..65534`},
	{"time with a suffix", `resource r { net {
		timeout 6s;  # <-
	} ` + twoHosts + ` }`, `timeout 6s: expected a number (in 0.1 s, no suffix)`},
	{"negative", `resource r { net {
		ko-count -1;  # <-
	} ` + twoHosts + ` }`, `ko-count -1: expected a number`},
	{"two values", `resource r { net {
		ko-count 1 2;  # <-
	} ` + twoHosts + ` }`, `ko-count 1 2: expected one value (a number), got 2`},
	{"no value", `resource r { net {
		ko-count;  # <-
	} ` + twoHosts + ` }`, `ko-count: expected a number`},
	{"bad enum", `resource r { disk {
		on-io-error explode;  # <-
	} ` + twoHosts + ` }`, `on-io-error explode: expected one of pass_on, call-local-io-error, detach`},
	{"DRBD 9 node-id", `resource r {
		on a { address 127.0.0.1:7789; disk /a;
			node-id 0;  # <-
		}
		on b { address 127.0.0.2:7789; disk /b; }
	}`, `node-id (in section on): DRBD 9's node-id: twinblock has no node ids`},
	{"DRBD 9 connection", `resource r { ` + twoHosts + `
		connection {  # <-
			host a address 127.0.0.1:7789;
			host b address 127.0.0.2:7789;
		}
	}`, `connection: DRBD 9's connection section: twinblock replicates between the two hosts`},
	{"DRBD 9 connection-mesh", `resource r { ` + twoHosts + `
		connection-mesh {  # <-
			hosts a b;
		}
	}`, `connection-mesh: DRBD 9's connection-mesh: twinblock replicates between exactly two hosts`},
	{"DRBD 9 quorum-minimum-redundancy", `resource r { options {
		quorum-minimum-redundancy 1;  # <-
	} ` + twoHosts + ` }`, `quorum-minimum-redundancy (in section options): DRBD 9's quorum-minimum-redundancy`},
	{"bad protocol", `resource r {
		protocol D;  # <-
	` + twoHosts + ` }`, `protocol D: expected one of A, B, C`},
	{"bad bool", `resource r { net {
		always-asbp maybe;  # <-
	} ` + twoHosts + ` }`, `always-asbp maybe: expected yes or no`},
	{"flag with a value", `global {
		disable-ip-verification yes;  # <-
	}`, `disable-ip-verification yes: takes no value`},
	{"negated flag with a value", `resource r { net {
		no-tcp-cork yes;  # <-
	} ` + twoHosts + ` }`, `no-tcp-cork yes: takes no value`},
	{"secret too long", `resource r { net {
		shared-secret "` + strings.Repeat("x", 65) + `";  # <-
	} ` + twoHosts + ` }`, `shared-secret (value not shown): longer than 64 characters`},
	{"unquoted command", `resource r { handlers {
		split-brain /bin/notify root;  # <-
	} ` + twoHosts + ` }`, `split-brain /bin/notify root: expected one value, got 2 (quote a value that has spaces)`},
	{"keyword set twice", `resource r { net { timeout 50;
		timeout 60;  # <-
	} ` + twoHosts + ` }`, `"timeout" is already set at bad.conf:1`},
	{"syncer and disk set the same keyword", `resource r { disk { resync-rate 10M; }
		syncer { rate 20M; }  # <-
	` + twoHosts + ` }`, `"rate" sets resync-rate, which is already set at bad.conf:1`},
	{"protocol twice", `resource r { protocol C;
		net { protocol A; }  # <-
	` + twoHosts + ` }`, `"protocol" is already set at bad.conf:1`},
	{"section without braces", `resource r {
		net;  # <-
	` + twoHosts + ` }`, `net: expected "{"`},
	{"one host", `resource r {  # <-
		disk /d; on a { address 10.0.0.1:1; }
	}`, `resource r needs two "on HOST" sections (twinblock replicates between two hosts), found 1`},
	{"three hosts", `resource r { ` + twoHosts + `
		on c { address 10.0.0.3:7789; }  # <-
	}`, `resource r: a third host section "on c" needs options { quorum majority; } (it is then the diskless witness)`},
	{"auto-failover without quorum", `resource r { options { auto-failover yes; }  # <-
		` + twoHosts + ` }`, `resource r: auto-failover yes needs options { quorum majority; }`},
	{"quorum without a witness", `resource r { options { quorum majority; }  # <-
		` + twoHosts + ` }`, `resource r: quorum majority needs a third host section, a diskless witness`},
	{"a witness with a disk", `resource r { options { quorum majority; } ` + twoHosts + `
		on c { address 10.0.0.3:7789; disk /d; }  # <-
	}`, `resource r: no diskless host: the witness of a quorum resource has "disk none;"`},
	{"two witnesses", `resource r { options { quorum majority; } disk /d;
		on a { address 10.0.0.1:7789; }
		on b { address 10.0.0.2:7789; disk none; }
		on c { address 10.0.0.3:7789; disk none; }  # <-
	}`, `resource r: two diskless hosts (b and c): a quorum resource has two data hosts and one witness`},
	{"a fourth host", `resource r { options { quorum majority; } ` + twoHosts + `
		on c { address 10.0.0.3:7789; disk none; }
		on d { address 10.0.0.4:7789; disk none; }  # <-
	}`, `resource r: a fourth host section "on d"`},
	{"quorum-address on the peer port", `resource r { options { quorum majority; } ` + twoHosts + `
		on c { address 10.0.0.3:7789; disk none; quorum-address 10.0.0.3:7789; }  # <-
	}`, `resource r: on c: quorum-address 10.0.0.3:7789 is its address too`},
	{"two names in one on", `resource r { disk /d;
		on a b { address 10.0.0.1:1; }  # <-
	}`, `on a b: one host name per "on" section`},
	{"same host twice", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on a { address 10.0.0.2:1; }  # <-
	}`, `resource r: "on a" is already defined at bad.conf:1`},
	{"duplicate resource", twoResources("r", "r"), `resource r is already defined at bad.conf:1`},
	{"resource all", `resource all {  # <-
	` + twoHosts + ` }`, `resource name "all" is reserved`},
	{"bad resource name", `resource "r 0" {  # <-
	` + twoHosts + ` }`, `resource name "r 0": use letters, digits`},
	{"missing address", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { }  # <-
	}`, `resource r, on b: "address" keyword missing`},
	{"missing disk", `resource r { on a { address 10.0.0.1:1; disk /d; }
		on b { address 10.0.0.2:1; }  # <-
	}`, `resource r, on b: "disk" keyword missing (write "disk none;" for a diskless host)`},
	{"same address", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { address 10.0.0.1:1; }  # <-
	}`, `resource r: on b has the same address as on a (10.0.0.1:1)`},
	{"same loopback address", `resource r { disk /d; on a { address 127.0.0.1:1; }
		on b { address 127.0.0.1:1; }  # <-
	}`, `resource r: on b has the same address as on a (127.0.0.1:1)`},
	{"address used by another resource", `resource r { disk /d; on a { address 10.0.0.1:1; } on b { address 10.0.0.2:1; } }
	resource s { disk /d; device minor 5; on a { address 10.0.0.1:2; }
		on b { address 10.0.0.2:1; }  # <-
	}`, `resource s: address 10.0.0.2:1 of on b is already used by resource r, on b (bad.conf:1)`},
	{"minor used by another resource", `resource r { disk /d; device /dev/drbd1; on a { address 10.0.0.1:1; } on b { address 10.0.0.2:1; } }
	resource s { disk /d;
		on a { address 10.0.0.1:2; device /dev/nbd1; }  # <-
		on b { address 10.0.0.2:2; }
	}`, `resource s: minor 1 on a is already used by resource r (bad.conf:1); give each resource its own device`},
	{"ipv6 without brackets", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { address ipv6 fd00::1:7789; }  # <-
	}`, `address ipv6 fd00::1:7789: expected [ipv4|ipv6] ADDRESS:PORT`},
	{"ipv4 family with an ipv6 address", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { address ipv4 [fd00::1]:7789; }  # <-
	}`, `fd00::1 is not an ipv4 address`},
	{"unsupported family", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { address sdp 10.0.0.2:7789; }  # <-
	}`, `address family sdp is not supported by twinblock`},
	{"host name as address", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { address bob:7789; }  # <-
	}`, `"bob" is not an IP address`},
	{"odd IPv6 zone", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { address ipv6 "[fe80::1%a b]:1"; }  # <-
	}`, `zone "a b": expected an interface name`},
	{"bad port", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { address 10.0.0.2:77890; }  # <-
	}`, `port "77890": expected 1..65535`},
	{"bad device", `resource r {
		device /dev/sda;  # <-
	` + twoHosts + ` }`, `device /dev/sda: expected /dev/drbdN, /dev/nbdN, or minor N`},
	{"device and minor disagree", `resource r {
		device /dev/drbd1 minor 2;  # <-
	` + twoHosts + ` }`, `minor 2 does not match the device name`},
	{"bad meta-disk index", `resource r {
		meta-disk /dev/md[x];  # <-
	` + twoHosts + ` }`, `meta-disk /dev/md[x]: index "x": expected a number`},
	{"flexible-meta-disk with an index", `resource r {
		flexible-meta-disk /dev/md[1];  # <-
	` + twoHosts + ` }`, `flexible-meta-disk takes no index`},
	{"volume 1", `resource r {
		volume 1 { disk /d; }  # <-
	` + twoHosts + ` }`, `volume 1: twinblock supports one volume per resource`},
	{"volume 1 in on", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { address 10.0.0.2:1; volume 1 { disk /e; } }  # <-
	}`, `volume 1: twinblock supports one volume per resource`},
	{"keyword twice through volume 0", `resource r { disk /d;
		volume 0 { disk /e; }  # <-
	on a { address 10.0.0.1:1; } on b { address 10.0.0.2:1; } }`, `"disk" is already set at bad.conf:1`},
	{"address in a volume", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { volume 0 { address 10.0.0.2:1; } }  # <-
	}`, `unknown keyword "address" in section volume; "address" belongs in section on`},
	{"disk options per host", `resource r { disk /d; on a { address 10.0.0.1:1; }
		on b { address 10.0.0.2:1; disk { al-extents 100; } }  # <-
	}`, `disk { } inside "on b" is not supported by twinblock`},
	{"host section in common", `common {
		on a { }  # <-
	}`, `on a: the common section has no host sections`},
	{"floating", `resource r { ` + twoHosts + `
		floating 10.0.0.3:1 { }  # <-
	}`, `twinblock supports only "on HOST" sections`},
	{"discard-node of a stranger", `resource r { ` + twoHosts + ` net {
		after-sb-0pri discard-node-zed;  # <-
	} }`, `after-sb-0pri discard-node-zed: "zed" is not a host of the resource (hosts: a, b)`},
	{"become-primary-on a stranger", `resource r { ` + twoHosts + ` startup {
		become-primary-on zed;  # <-
	} }`, `become-primary-on zed: not a host of the resource`},
	{"bad nbd-listen", `resource r {
		nbd-listen localhost;  # <-
	` + twoHosts + ` }`, `nbd-listen localhost: expected HOST:PORT or unix:PATH`},
	{"global twice", `global { }
	global { }  # <-`, `the global section is already defined at bad.conf:1`},
	{"include without pattern", `include;  # <-`, `include: expected one "file pattern"`},
	{"include of a missing file", `include "nothere.conf";  # <-`, `include "nothere.conf": no such file`},
	{"include with a bad pattern", `include "[";  # <-`, `include "[": syntax error in pattern`},
}

func twoResources(a, b string) string {
	return fmt.Sprintf("resource %s { %s }\nresource %s { # <-\n %s }", a, twoHosts, b, twoHosts)
}

// markedLine returns the line of src that has the "# <-" marker.
func markedLine(t *testing.T, src string) int {
	t.Helper()
	for i, l := range strings.Split(src, "\n") {
		if strings.Contains(l, "# <-") {
			return i + 1
		}
	}
	t.Fatalf("no # <- marker in %q", src)
	return 0
}

func TestBadConfigs(t *testing.T) {
	for _, tc := range badCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(mapFS{}, "bad.conf", []byte(tc.src))
			require.Error(t, err)
			var ce *Error
			require.True(t, errors.As(err, &ce), "%T is not an *Error", err)
			prefix := fmt.Sprintf("bad.conf:%d: ", markedLine(t, tc.src))
			assert.True(t, strings.HasPrefix(err.Error(), prefix), "%q does not start with %q", err.Error(), prefix)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

// TestQuorumSettingsWithoutQuorumWarn: the quorum's settings on a
// resource without quorum warn that they do nothing.
func TestQuorumSettingsWithoutQuorumWarn(t *testing.T) {
	c, err := load(mapFS{}, "q.conf", []byte(`resource r {
  handlers { quorum-lost "/bin/true"; }
  disk /d;
  on a { address 10.0.0.1:7789; quorum-address 10.0.0.1:7800; }
  on b { address 10.0.0.2:7789; }
}
`))
	require.NoError(t, err)
	require.Equal(t, []string{
		"q.conf:2: handler quorum-lost of resource r without options { quorum majority; }: it never runs",
		"q.conf:4: quorum-address of on a without options { quorum majority; }: ignored",
	}, warningStrings(c))
	require.Empty(t, c.Resources[0].Hosts[0].QuorumAddress)
	require.False(t, c.Resources[0].Quorum())
}
