package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sampleValues gives values of k to try: its extremes and its choices.
func sampleValues(k *keyword) []string {
	switch k.kind {
	case kindFlag:
		return []string{""}
	case kindBool:
		return []string{"", "yes", "no"}
	case kindInt:
		return []string{fmt.Sprint(k.min), fmt.Sprint(k.max)}
	case kindSize:
		return []string{fmt.Sprint(k.min), fmt.Sprint(k.max), formatSize(k.max*k.unit, 1)}
	case kindEnum:
		var out []string
		for _, v := range k.values {
			out = append(out, strings.Replace(v, "NODENAME", "b", 1))
		}
		return out
	case kindString:
		return []string{"plain", `"two words; {#}"`, `""`}
	case kindNames:
		return []string{"a", "a b", "both"}
	}
	return nil
}

// TestEveryKeywordRoundTrips sets every option keyword of the table to
// each of its sample values and checks the configuration loads, keeps the
// value, and survives Dump and Parse.
func TestEveryKeywordRoundTrips(t *testing.T) {
	for _, k := range keywords.list {
		if k.alias != "" {
			continue
		}
		for _, v := range sampleValues(k) {
			var src string
			hosts := `disk /d; on a { address 10.0.0.1:1; } on b { address 10.0.0.2:1; }`
			if (k.name == "quorum" && v == "majority") || (k.name == "auto-failover" && v != "no") {
				hosts += ` on w { address 10.0.0.3:1; disk none; }`
				if k.name == "auto-failover" {
					hosts = `options { quorum majority; } ` + hosts
				}
			}
			stmt := strings.TrimSpace(k.name + " " + v)
			switch k.section {
			case secGlobal:
				src = "global { " + stmt + "; }\nresource r { " + hosts + " }"
			case secNet, secDisk, secStartup, secHandlers, secOptions:
				src = "resource r { " + k.section + " { " + stmt + "; } " + hosts + " }"
			default:
				continue // placement keywords have their own tests
			}
			t.Run(stmt, func(t *testing.T) {
				c, err := load(mapFS{}, "k.conf", []byte(src))
				require.NoError(t, err, src)
				s := c.Global
				if k.section != secGlobal {
					s = map[string]Section{secNet: c.Resources[0].Net, secDisk: c.Resources[0].Disk,
						secStartup: c.Resources[0].Startup, secHandlers: c.Resources[0].Handlers,
						secOptions: c.Resources[0].Options}[k.section]
				}
				assert.True(t, s.Has(k.name))
				checkRoundTrip(t, mapFS{}, c)
			})
		}
	}
}

func TestPlacementForms(t *testing.T) {
	for _, tc := range []struct {
		stmt string
		want func(h *Host) any
		val  any
	}{
		{"device /dev/drbd1048575", func(h *Host) any { return h.Minor }, 1048575},
		{"device nbd3", func(h *Host) any { return h.Device }, "/dev/nbd3"},
		{"device /dev/nbd3 minor 3", func(h *Host) any { return h.NBDDevice }, "/dev/nbd3"},
		{"device minor 0", func(h *Host) any { return h.NBDDevice }, "/dev/nbd0"},
		{"meta-disk /dev/md [ 7 ]", func(h *Host) any { return h.MetaDisk }, MetaDisk{Path: "/dev/md", Index: 7}},
		{"meta-disk \"/dev/md\"[7]", func(h *Host) any { return h.MetaDisk }, MetaDisk{Path: "/dev/md", Index: 7}},
		{"flexible-meta-disk internal", func(h *Host) any { return h.MetaDisk }, internalMetaDisk},
		{"nbd-listen :0", func(h *Host) any { return h.NBDListen }, ":0"},
		{"nbd-listen [::1]:10809", func(h *Host) any { return h.NBDListen }, "[::1]:10809"},
		{"nbd-listen localhost:10809", func(h *Host) any { return h.NBDListen }, "localhost:10809"},
	} {
		t.Run(tc.stmt, func(t *testing.T) {
			src := "resource r { " + tc.stmt + "; disk /d; on a { address 10.0.0.1:1; } on b { address 10.0.0.2:1; } }"
			c, err := load(mapFS{}, "p.conf", []byte(src))
			require.NoError(t, err)
			for _, h := range c.Resources[0].Hosts {
				assert.Equal(t, tc.val, tc.want(h))
			}
			checkRoundTrip(t, mapFS{}, c)
		})
	}
}

// placementSample is a value for a placement keyword (kinds sampleValues
// does not cover).
func placementSample(k *keyword) string {
	switch k.kind {
	case kindAddress:
		return "10.0.0.9:1"
	case kindDevice:
		return "/dev/drbd3"
	case kindDisk:
		return "/d2"
	case kindMetaDisk:
		return "/md"
	case kindListen:
		return "127.0.0.1:10900"
	}
	return ""
}

// TestNoKeywordIsAcceptedSilently walks the keyword table: setting a
// keyword twinblock does not implement warns that it is ignored, naming
// it; setting one it implements does not, except for a value it
// declares unsupported (allow-two-primaries yes), which warns with its
// reason. That an implemented keyword is really read is the other half:
// pkg/node's TestEveryKeywordIsReadOrWarned.
func TestNoKeywordIsAcceptedSilently(t *testing.T) {
	const hostA, hostB = "on a { address 10.0.0.1:1; }", "on b { address 10.0.0.2:1; }"
	for _, k := range keywords.list {
		target := keywords.resolve(k)
		values := sampleValues(target)
		if v := placementSample(target); v != "" {
			values = []string{v}
		}
		if k.negate {
			values = []string{""}
		}
		for _, v := range values {
			stmt := strings.TrimSpace(k.name + " " + v)
			var src string
			switch k.section {
			case secGlobal:
				src = "global { " + stmt + "; }\nresource r { disk /d; " + hostA + " " + hostB + " }"
			case secResource:
				disk := "disk /d; "
				if target.name == "disk" {
					disk = ""
				}
				src = "resource r { " + stmt + "; " + disk + hostA + " " + hostB + " }"
			case secOn:
				a := "address 10.0.0.1:1; "
				if target.name == "address" {
					a = ""
				}
				src = "resource r { disk /d; on a { " + a + stmt + "; } " + hostB + " }"
				if target.name == "quorum-address" { // meaningful with a quorum only
					src = "resource r { options { quorum majority; } disk /d; on a { " + a + stmt + "; } " + hostB + " on w { address 10.0.0.3:1; disk none; } }"
				}
			case secVolume:
				src = "resource r { volume 0 { " + stmt + "; } on a { address 10.0.0.1:1; disk /d; } on b { address 10.0.0.2:1; disk /d; } }"
			default:
				src = "resource r { " + k.section + " { " + stmt + "; } disk /d; " + hostA + " " + hostB + " }"
				switch {
				case target.name == "quorum" && v == "majority":
					src = "resource r { " + k.section + " { " + stmt + "; } disk /d; " + hostA + " " + hostB + " on w { address 10.0.0.3:1; disk none; } }"
				case target.name == "quorum-lost": // meaningful with a quorum only
					src = "resource r { options { quorum majority; } " + k.section + " { " + stmt + "; } disk /d; " + hostA + " " + hostB + " on w { address 10.0.0.3:1; disk none; } }"
				case target.name == "auto-failover" && v != "no":
					src = "resource r { " + k.section + " { quorum majority; " + stmt + "; } disk /d; " + hostA + " " + hostB + " on w { address 10.0.0.3:1; disk none; } }"
				}
			}
			t.Run(k.section+"/"+stmt, func(t *testing.T) {
				c, err := load(mapFS{}, "k.conf", []byte(src))
				require.NoError(t, err, src)
				notImpl := fmt.Sprintf("k.conf:1: keyword %q in section %s is not implemented by twinblock; ignored", k.name, k.section)
				warnings := warningStrings(c)
				if !target.implemented {
					assert.Equal(t, []string{notImpl}, warnings)
					return
				}
				normalized := ""
				if s, ok := sectionOf(c, target.section); ok {
					normalized = s.String(target.name)
				}
				if target.ignored != "" && normalized == target.ignored {
					assert.Equal(t, []string{fmt.Sprintf("k.conf:1: %s %s is not supported by twinblock (%s); ignored",
						target.name, target.ignored, target.ignoredWhy)}, warnings)
					return
				}
				assert.Empty(t, warnings)
			})
		}
	}
}

// sectionOf is the option section sec of c's first resource (or
// global); false for a placement section.
func sectionOf(c *Config, sec string) (Section, bool) {
	r := c.Resources[0]
	s, ok := map[string]Section{secGlobal: c.Global, secNet: r.Net, secDisk: r.Disk, secStartup: r.Startup,
		secHandlers: r.Handlers, secOptions: r.Options}[sec]
	return s, ok
}
