package config

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the keyword table in docs/configuration.md")

const (
	docPath   = "../../docs/configuration.md"
	beginMark = "<!-- BEGIN KEYWORD TABLE: checked by TestDocKeywordTable in pkg/config; `go test ./pkg/config -run TestDocKeywordTable -update` rewrites it -->\n"
	endMark   = "<!-- END KEYWORD TABLE -->\n"
)

// keywordTable renders the keyword table as the docs show it.
func keywordTable() string {
	var b strings.Builder
	b.WriteString("| section | keyword | value | default | unit | twinblock | note |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, k := range keywords.list {
		t := keywords.resolve(k)
		var val, def, unit string
		switch {
		case k.negate:
			val = fmt.Sprintf("flag: `%s no`", t.name)
		case k.alias != "" && t.section != k.section:
			val = fmt.Sprintf("sets `%s` in %s", t.name, t.section)
		case k.alias != "":
			val = fmt.Sprintf("another name for `%s`", t.name)
		default:
			val = valueDoc(k)
			def = strings.Join(k.defVal.words, " ")
			if k.kind == kindSize && def != k.def {
				def = k.def + " (= " + def + ")"
			}
			if k.kind == kindFlag {
				def = "no"
			}
			unit = k.unitName
		}
		status := "ignored (warning)"
		if t.implemented {
			status = "yes"
		}
		if t.twinblock {
			status += ", twinblock addition"
		}
		note := k.note
		if k.alias != "" {
			note = ""
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s | %s | %s |\n", k.section, k.name, cell(val), cell(def), unit, status, cell(note))
	}
	return b.String()
}

func valueDoc(k *keyword) string {
	switch k.kind {
	case kindFlag:
		return "flag (no value)"
	case kindBool:
		return "yes | no (bare: yes)"
	case kindInt:
		return fmt.Sprintf("%d..%d", k.min, k.max)
	case kindSize:
		return fmt.Sprintf("size %s..%s", formatSize(k.min*k.unit, 1), formatSize(k.max*k.unit, 1))
	case kindEnum:
		return strings.Join(k.values, " | ")
	case kindString:
		if k.maxLen > 0 {
			return fmt.Sprintf("string, at most %d characters", k.maxLen)
		}
		return "string"
	case kindNames:
		return "host names | both"
	case kindAddress:
		return "[ipv4 | ipv6] ADDR:PORT"
	case kindDevice:
		return "/dev/drbdN | /dev/nbdN [minor N] | minor N"
	case kindDisk:
		return "PATH | none"
	case kindMetaDisk:
		return "internal | PATH | PATH[IDX]"
	case kindListen:
		return "HOST:PORT | unix:PATH"
	}
	return k.kind.String()
}

// TestDocKeywordTable: the table in docs/configuration.md is the Go table.
func TestDocKeywordTable(t *testing.T) {
	doc, err := os.ReadFile(docPath)
	require.NoError(t, err)
	text := string(doc)
	i := strings.Index(text, beginMark)
	j := strings.Index(text, endMark)
	require.True(t, i >= 0 && j > i, "docs/configuration.md lacks the keyword table markers")
	want := keywordTable()
	got := text[i+len(beginMark) : j]
	if *update {
		text = text[:i+len(beginMark)] + want + text[j:]
		require.NoError(t, os.WriteFile(docPath, []byte(text), 0o644))
		return
	}
	assert.Equal(t, want, got, "docs/configuration.md's keyword table is stale: go test ./pkg/config -run TestDocKeywordTable -update")
}

// TestKeywordTable checks the table's own consistency.
func TestKeywordTable(t *testing.T) {
	for _, k := range keywords.list {
		name := k.section + " " + k.name
		if k.alias != "" {
			assert.Zero(t, k.kind, name)
			assert.NotNil(t, keywords.resolve(k), name)
			continue
		}
		switch k.kind {
		case kindInt, kindSize:
			assert.NotEmpty(t, k.def, "%s: every number has DRBD's default", name)
			assert.LessOrEqual(t, k.min, k.max, name)
			if k.kind == kindSize {
				assert.Positive(t, k.unit, name)
				assert.NotEmpty(t, k.unitName, name)
			}
			assert.Equal(t, k.tick != 0, k.unitName == "s" || k.unitName == "0.1 s", "%s: a time has a tick", name)
		case kindBool, kindEnum:
			assert.NotEmpty(t, k.def, name)
		}
	}
	// The implemented set named in the brief of this package.
	implemented := map[string][]string{
		secNet: {"cram-hmac-alg", "shared-secret", "timeout", "connect-int", "ping-int", "ping-timeout", "ko-count",
			"max-buffers", "after-sb-0pri", "after-sb-1pri", "after-sb-2pri", "always-asbp", "rr-conflict", "csums-alg",
			"verify-alg", "use-rle", "allow-two-primaries", "compression", "compress-replication", "backup-discarded"},
		secDisk: {"on-io-error", "al-extents", "resync-rate", "c-plan-ahead", "c-fill-target", "c-delay-target",
			"c-max-rate", "c-min-rate", "disk-flushes", "md-flushes", "al-updates"},
		secHandlers: {"split-brain", "out-of-sync", "initial-split-brain", "pri-lost-after-sb", "pri-lost", "local-io-error", "before-resync-target", "after-resync-target",
			"quorum-lost", "before-promote", "after-promote", "before-demote", "after-demote"},
		secGlobal:   {"usage-count", "nbd-listen", "device", "meta-disk"},
		secResource: {"protocol", "device", "disk", "meta-disk", "nbd-listen"},
		secOn:       {"address", "device", "disk", "meta-disk", "nbd-listen", "quorum-address"},
		secVolume:   {"device", "disk", "meta-disk"},
		secOptions:  {"quorum", "on-no-quorum", "auto-promote", "auto-failover"},
		secStartup:  {"wfc-timeout", "degr-wfc-timeout", "outdated-wfc-timeout"},
	}
	for _, k := range keywords.list {
		if k.alias != "" || k.section == secSyncer {
			continue
		}
		assert.Equal(t, k.implemented, contains(implemented[k.section], k.name), "%s %s implemented", k.section, k.name)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
