package config

import (
	"fmt"
	"time"
)

// valueKind is how a keyword's value is written and checked.
type valueKind int

const (
	// kindFlag takes no value; writing it means yes (disable-ip-verification;).
	kindFlag valueKind = iota
	// kindBool is yes or no; the bare keyword means yes (always-asbp;).
	kindBool
	// kindInt is a number in the keyword's unit within [min, max]. Counts
	// accept K/M/G (×1024) as drbdadm does; times do not.
	kindInt
	// kindSize is a number with an optional K, M, G (powers of 1024) or s
	// (512-byte sectors) suffix; a bare number is in the keyword's unit.
	// It is stored in bytes, rounded up to a whole unit as drbdadm does.
	kindSize
	// kindEnum is one of the keyword's values.
	kindEnum
	// kindString is one word or one "quoted string".
	kindString
	// kindNames is one or more host names (become-primary-on).
	kindNames
	// kindAddress is [ipv4|ipv6] ADDR:PORT, IPv6 in brackets.
	kindAddress
	// kindDevice is /dev/drbdN or /dev/nbdN, optionally followed by minor N,
	// or minor N alone.
	kindDevice
	// kindDisk is a path, or none for a diskless node.
	kindDisk
	// kindMetaDisk is internal, PATH or PATH[IDX].
	kindMetaDisk
	// kindListen is HOST:PORT or unix:PATH (twinblock's nbd-listen).
	kindListen
)

func (k valueKind) String() string {
	switch k {
	case kindFlag:
		return "flag"
	case kindBool:
		return "bool"
	case kindInt:
		return "int"
	case kindSize:
		return "size"
	case kindEnum:
		return "enum"
	case kindString:
		return "string"
	case kindNames:
		return "names"
	case kindAddress:
		return "address"
	case kindDevice:
		return "device"
	case kindDisk:
		return "disk"
	case kindMetaDisk:
		return "meta-disk"
	case kindListen:
		return "listen"
	}
	return fmt.Sprintf("valueKind(%d)", int(k))
}

// Section names of the keyword table. "resource" holds the statements
// written directly in a resource (or common) section, "on" those of an
// `on HOST` section, "volume" those of a `volume 0` section.
const (
	secGlobal   = "global"
	secResource = "resource"
	secOn       = "on"
	secVolume   = "volume"
	secNet      = "net"
	secDisk     = "disk"
	secSyncer   = "syncer"
	secStartup  = "startup"
	secHandlers = "handlers"
	secOptions  = "options"
)

// sectionOrder is the order of the table and of the docs.
var sectionOrder = []string{secGlobal, secResource, secOn, secVolume, secNet, secDisk, secSyncer, secStartup, secHandlers, secOptions}

// keyword describes one drbd.conf keyword of DRBD 8.4 (or a twinblock
// addition): how its value is written, DRBD's range and default, and
// whether twinblock acts on it. The facts come from drbd-utils
// documentation/v84/drbd.conf.xml and user/v84/linux/drbd_limits.h.
type keyword struct {
	section string
	name    string
	kind    valueKind
	// min, max: the range in units of unit (kindInt, kindSize), as DRBD
	// states it.
	min, max int64
	// unit: the bytes a bare number stands for (kindSize).
	unit int64
	// unitName: the unit for humans and the docs ("0.1 s", "KiB/s").
	unitName string
	// tick: for time-valued kindInt keywords, the duration of one unit.
	// Such values take no K/M/G suffix.
	tick   time.Duration
	values []string // kindEnum
	// def: DRBD's default as written in drbd.conf ("" = none).
	def         string
	implemented bool
	twinblock   bool // a twinblock addition, not a DRBD keyword
	// alias: the keyword this one is another name for, in section target
	// (target "" = the same section). An alias has no kind of its own.
	alias, target string
	negate        bool // "no-X;" means "X no;"
	maxLen        int  // kindString: longest value
	note          string
	// ignored is a value of an implemented keyword that twinblock does
	// not support: it is accepted with a warning that gives ignoredWhy
	// (allow-two-primaries yes: "one Primary at a time"). The builder
	// is that value's consumer.
	ignored, ignoredWhy string

	// Filled in by newTable from def.
	defVal value
}

// value is a parsed, validated setting.
type value struct {
	words []string // normalized, as Dump writes them
	num   int64    // kindInt: the number; kindSize: bytes; bools: 0/1
}

// deprecated83 are 8.3 syncer options that 8.4's drbdadm still accepts
// and ignores.
var deprecated83 = []string{"delay-probe-volume", "delay-probe-interval", "throttle-threshold", "hold-off-threshold"}

const (
	tenthSecond = 100 * time.Millisecond
	kib         = 1024
	sector      = 512
)

func keywordList() []keyword {
	yesNo := func(sec, name, def string, impl bool, note string) keyword {
		return keyword{section: sec, name: name, kind: kindBool, def: def, implemented: impl, note: note}
	}
	integer := func(sec, name string, min, max int64, def, unitName string, tick time.Duration, impl bool) keyword {
		return keyword{section: sec, name: name, kind: kindInt, min: min, max: max, def: def, unitName: unitName, tick: tick, implemented: impl}
	}
	size := func(sec, name string, min, max, unit int64, def, unitName string, impl bool) keyword {
		return keyword{section: sec, name: name, kind: kindSize, min: min, max: max, unit: unit, def: def, unitName: unitName, implemented: impl}
	}
	enum := func(sec, name, def string, impl bool, values ...string) keyword {
		return keyword{section: sec, name: name, kind: kindEnum, def: def, values: values, implemented: impl}
	}
	str := func(sec, name string, impl bool, note string) keyword {
		return keyword{section: sec, name: name, kind: kindString, implemented: impl, note: note}
	}
	alias := func(sec, name, target, to string) keyword {
		return keyword{section: sec, name: name, alias: to, target: target}
	}
	negation := func(sec, name, to string) keyword {
		return keyword{section: sec, name: name, alias: to, negate: true}
	}
	flag := func(sec, name string, impl bool, note string) keyword {
		return keyword{section: sec, name: name, kind: kindFlag, implemented: impl, note: note}
	}
	withNote := func(k keyword, note string) keyword {
		k.note = note
		return k
	}
	const (
		defListen = "127.0.0.1:10809"
		secs      = "s"
		tenths    = "0.1 s"
	)
	// The volume-level statements, shared by resource, on and volume.
	placement := func(sec string) []keyword {
		return []keyword{
			{section: sec, name: "device", kind: kindDevice, implemented: true, note: "/dev/drbdN is served as /dev/nbdN"},
			{section: sec, name: "disk", kind: kindDisk, implemented: true, note: "none: diskless"},
			{section: sec, name: "meta-disk", kind: kindMetaDisk, def: "internal", implemented: true},
			alias(sec, "flexible-meta-disk", "", "meta-disk"),
		}
	}
	listen := func(sec string) keyword {
		return keyword{section: sec, name: "nbd-listen", kind: kindListen, def: defListen, implemented: true, twinblock: true, note: "where this node serves the resource over NBD"}
	}

	var ks []keyword
	// global
	ks = append(ks,
		func() keyword {
			k := enum(secGlobal, "usage-count", "ask", true, "yes", "no", "ask")
			k.ignored, k.ignoredWhy = "yes", "it reports to no usage counter"
			k.note = "twinblock never reports usage: yes is accepted with a warning"
			return k
		}(),
		flag(secGlobal, "disable-ip-verification", false, "twinblock does not check the addresses against the local interfaces, so there is nothing to disable"),
		withNote(integer(secGlobal, "dialog-refresh", 0, 600, "1", secs, time.Second, false), "wait-connect's dialog: twinblock's wait-connect prints no dialog"),
		withNote(integer(secGlobal, "minor-count", 1, 255, "32", "", 0, false), "a kernel module parameter: twinblock has no table of minors to size"),
		flag(secGlobal, "udev-always-use-vnr", false, ""),
		integer(secGlobal, "cmd-timeout-short", 0, 900, "5", secs, time.Second, false),
		integer(secGlobal, "cmd-timeout-medium", 0, 900, "121", secs, time.Second, false),
		integer(secGlobal, "cmd-timeout-long", 0, 900, "600", secs, time.Second, false),
		listen(secGlobal),
		keyword{section: secGlobal, name: "device", kind: kindDevice, implemented: true, twinblock: true},
		keyword{section: secGlobal, name: "meta-disk", kind: kindMetaDisk, def: "internal", implemented: true, twinblock: true},
	)
	// resource (and common)
	ks = append(ks, enum(secResource, "protocol", "C", true, "A", "B", "C"))
	ks = append(ks, placement(secResource)...)
	ks = append(ks, listen(secResource))
	// on HOST
	ks = append(ks, keyword{section: secOn, name: "address", kind: kindAddress, implemented: true, note: "ipv4 or ipv6; ssocks and sdp are not supported"})
	ks = append(ks, placement(secOn)...)
	ks = append(ks, listen(secOn))
	ks = append(ks, keyword{section: secOn, name: "alternate-link-address", kind: kindAddress})
	ks = append(ks, keyword{section: secOn, name: "quorum-address", kind: kindAddress, implemented: true, twinblock: true,
		note: "where this host's member of the quorum group listens (options { quorum majority; }); default: the host of address, port 7800"})
	// volume 0
	ks = append(ks, placement(secVolume)...)
	// net
	afterSB0 := []string{"disconnect", "discard-younger-primary", "discard-older-primary", "discard-zero-changes", "discard-least-changes", "discard-local", "discard-remote"}
	ks = append(ks,
		alias(secNet, "protocol", secResource, "protocol"),
		integer(secNet, "timeout", 1, 600, "60", tenths, tenthSecond, true),
		integer(secNet, "max-epoch-size", 1, 20000, "2048", "", 0, false),
		integer(secNet, "max-buffers", 32, 131072, "2048", "pages", 0, true),
		integer(secNet, "unplug-watermark", 1, 131072, "128", "", 0, false),
		integer(secNet, "connect-int", 1, 120, "10", secs, time.Second, true),
		integer(secNet, "ping-int", 1, 120, "10", secs, time.Second, true),
		size(secNet, "sndbuf-size", 0, 10<<20, 1, "0", "bytes", false),
		size(secNet, "rcvbuf-size", 0, 10<<20, 1, "0", "bytes", false),
		integer(secNet, "ko-count", 0, 200, "7", "", 0, true),
		func() keyword {
			k := yesNo(secNet, "allow-two-primaries", "no", true, "yes is accepted with a warning and ignored: one Primary at a time")
			k.ignored, k.ignoredWhy = "yes", "one Primary at a time"
			return k
		}(),
		str(secNet, "cram-hmac-alg", true, ""),
		keyword{section: secNet, name: "shared-secret", kind: kindString, maxLen: 64, implemented: true},
		enum(secNet, "after-sb-0pri", "disconnect", true, append(afterSB0, "discard-node-NODENAME")...),
		enum(secNet, "after-sb-1pri", "disconnect", true, "disconnect", "consensus", "violently-as0p", "discard-secondary", "call-pri-lost-after-sb"),
		enum(secNet, "after-sb-2pri", "disconnect", true, "disconnect", "violently-as0p", "call-pri-lost-after-sb"),
		yesNo(secNet, "always-asbp", "no", true, ""),
		enum(secNet, "rr-conflict", "disconnect", true, "disconnect", "violently", "call-pri-lost"),
		integer(secNet, "ping-timeout", 1, 300, "5", tenths, tenthSecond, true),
		str(secNet, "data-integrity-alg", false, ""),
		yesNo(secNet, "tcp-cork", "yes", false, ""),
		negation(secNet, "no-tcp-cork", "tcp-cork"),
		enum(secNet, "on-congestion", "block", false, "block", "pull-ahead", "disconnect"),
		size(secNet, "congestion-fill", 0, 10<<21, sector, "0", "sectors", false),
		integer(secNet, "congestion-extents", 67, 65534, "1237", "", 0, false),
		str(secNet, "csums-alg", true, ""),
		yesNo(secNet, "csums-after-crash-only", "no", false, ""),
		str(secNet, "verify-alg", true, ""),
		func() keyword {
			k := yesNo(secNet, "use-rle", "yes", true, "the bitmap exchange is always run-length encoded: no is accepted with a warning")
			k.ignored, k.ignoredWhy = "no", "the bitmap exchange is always run-length encoded"
			return k
		}(),
		integer(secNet, "socket-check-timeout", 0, 300, "0", tenths, tenthSecond, false),
		keyword{section: secNet, name: "compression", kind: kindEnum, def: "none", values: []string{"none", "s2", "zstd"}, implemented: true, twinblock: true, note: "compression of resync data (and of replicated writes with compress-replication)"},
		func() keyword {
			k := yesNo(secNet, "compress-replication", "no", true, "compress replicated application writes too, not only resync")
			k.twinblock = true
			return k
		}(),
		func() keyword {
			k := yesNo(secNet, "backup-discarded", "no", true, "a split brain's victim saves every block its resync overwrites to RES-discarded-TIME.img (+ .blocks index) in the metadata directory; twinblock restore-discarded writes them back")
			k.twinblock = true
			return k
		}(),
	)
	// disk
	ks = append(ks,
		func() keyword {
			k := enum(secDisk, "on-io-error", "detach", true, "pass_on", "call-local-io-error", "detach")
			k.note = "call-local-io-error: detach, then run the local-io-error handler"
			return k
		}(),
		enum(secDisk, "fencing", "dont-care", false, "dont-care", "resource-only", "resource-and-stonith"),
		yesNo(secDisk, "disk-barrier", "no", false, ""),
		negation(secDisk, "no-disk-barrier", "disk-barrier"),
		yesNo(secDisk, "disk-flushes", "yes", true, "no: the data disk is never flushed (no fdatasync): see docs/configuration.md before using it"),
		negation(secDisk, "no-disk-flushes", "disk-flushes"),
		yesNo(secDisk, "disk-drain", "yes", false, ""),
		negation(secDisk, "no-disk-drain", "disk-drain"),
		yesNo(secDisk, "md-flushes", "yes", true, "no: the metadata is never flushed: see docs/configuration.md before using it"),
		negation(secDisk, "no-md-flushes", "md-flushes"),
		size(secDisk, "resync-rate", 1, 4<<20, kib, "250", "KiB/s", true),
		alias(secDisk, "rate", "", "resync-rate"),
		str(secDisk, "resync-after", false, "a resource name"),
		alias(secDisk, "after", "", "resync-after"),
		integer(secDisk, "al-extents", 67, 65534, "1237", "extents", 0, true),
		yesNo(secDisk, "al-updates", "yes", true, "no: no activity-log writes; a crash while Primary costs a full resync"),
		yesNo(secDisk, "discard-zeroes-if-aligned", "yes", false, ""),
		yesNo(secDisk, "disable-write-same", "no", false, ""),
		integer(secDisk, "c-plan-ahead", 0, 300, "20", tenths, tenthSecond, true),
		integer(secDisk, "c-delay-target", 1, 100, "10", tenths, tenthSecond, true),
		size(secDisk, "c-fill-target", 0, 1<<20, sector, "100", "sectors", true),
		size(secDisk, "c-max-rate", 250, 4<<20, kib, "102400", "KiB/s", true),
		size(secDisk, "c-min-rate", 0, 4<<20, kib, "250", "KiB/s", true),
		integer(secDisk, "disk-timeout", 0, 6000, "0", tenths, tenthSecond, false),
		enum(secDisk, "read-balancing", "prefer-local", false, "prefer-local", "prefer-remote", "round-robin", "least-pending", "when-congested-remote", "32K-striping", "64K-striping", "128K-striping", "256K-striping", "512K-striping", "1M-striping"),
		size(secDisk, "rs-discard-granularity", 0, 1<<20, 1, "0", "bytes", false),
		size(secDisk, "size", 0, 2<<40, sector, "0", "sectors", false),
		integer(secDisk, "max-bio-bvecs", 0, 128, "0", "", 0, false),
		yesNo(secDisk, "use-bmbv", "no", false, "obsolete"),
	)
	for _, d := range deprecated83 {
		ks = append(ks, str(secDisk, d, false, "deprecated since 8.3.9"))
	}
	// syncer: DRBD 8.3's section; 8.4 distributes its options to disk, net
	// and options.
	ks = append(ks,
		alias(secSyncer, "rate", secDisk, "resync-rate"),
		alias(secSyncer, "after", secDisk, "resync-after"),
		alias(secSyncer, "al-extents", secDisk, "al-extents"),
		alias(secSyncer, "csums-alg", secNet, "csums-alg"),
		alias(secSyncer, "verify-alg", secNet, "verify-alg"),
		alias(secSyncer, "use-rle", secNet, "use-rle"),
		alias(secSyncer, "cpu-mask", secOptions, "cpu-mask"),
		alias(secSyncer, "on-no-data-accessible", secOptions, "on-no-data-accessible"),
		alias(secSyncer, "c-plan-ahead", secDisk, "c-plan-ahead"),
		alias(secSyncer, "c-delay-target", secDisk, "c-delay-target"),
		alias(secSyncer, "c-fill-target", secDisk, "c-fill-target"),
		alias(secSyncer, "c-max-rate", secDisk, "c-max-rate"),
		alias(secSyncer, "c-min-rate", secDisk, "c-min-rate"),
	)
	for _, d := range deprecated83 {
		ks = append(ks, alias(secSyncer, d, secDisk, d))
	}
	// startup
	ks = append(ks,
		withNote(integer(secStartup, "wfc-timeout", 0, 300000, "0", secs, time.Second, true),
			"wait-connect's and wait-sync's timeout (0: forever)"),
		withNote(integer(secStartup, "degr-wfc-timeout", 0, 300000, "0", secs, time.Second, true),
			"instead of wfc-timeout when this node went on without its peer (its bitmap marks blocks)"),
		withNote(integer(secStartup, "outdated-wfc-timeout", 0, 300000, "0", secs, time.Second, true),
			"instead of wfc-timeout when this node's disk is Outdated"),
		yesNo(secStartup, "wait-after-sb", "no", false, ""),
		flag(secStartup, "stacked-timeouts", false, ""),
		keyword{section: secStartup, name: "become-primary-on", kind: kindNames, note: "a host of the resource, or both (checked); nothing promotes at startup yet"},
	)
	// handlers
	for _, h := range []struct {
		name string
		impl bool
		note string
	}{
		{"pri-on-incon-degr", false, ""}, {"pri-lost-after-sb", true, ""}, {"pri-lost", true, ""},
		{"fence-peer", false, "not run: with quorum majority the group outdates the peer (docs/quorum.md); without, as DRBD's fencing dont-care"}, {"unfence-peer", false, ""},
		{"local-io-error", true, "with on-io-error call-local-io-error"},
		{"initial-split-brain", true, ""}, {"split-brain", true, ""},
		{"before-resync-target", true, ""}, {"after-resync-target", true, ""},
		{"before-resync-source", false, ""}, {"out-of-sync", true, ""},
		{"quorum-lost", true, "DRBD 9's: a Primary of a quorum resource lost its group's majority"},
	} {
		ks = append(ks, str(secHandlers, h.name, h.impl, h.note))
	}
	// twinblock's handlers around the role, for the service on top (a
	// floating IP, a database): DRBD has none of these names.
	for _, h := range []struct{ name, note string }{
		{"before-promote", "runs before a promotion (by hand or auto-failover); a failure refuses the promotion"},
		{"after-promote", "runs once this node is Primary"},
		{"before-demote", "runs before a demotion; a failure refuses a secondary (not a forced demotion)"},
		{"after-demote", "runs once this node is Secondary"},
	} {
		k := str(secHandlers, h.name, true, h.note)
		k.twinblock = true
		ks = append(ks, k)
	}
	ks = append(ks, alias(secHandlers, "outdate-peer", "", "fence-peer"))
	// options (resource options)
	ks = append(ks,
		str(secOptions, "cpu-mask", false, "hexadecimal"),
		func() keyword {
			k := enum(secOptions, "quorum", "off", true, "off", "majority")
			k.note = "majority: the two data hosts and a diskless witness (a third on section with disk none) agree who may be Primary (docs/quorum.md); DRBD 9's all and N are not supported"
			return k
		}(),
		func() keyword {
			k := enum(secOptions, "on-no-quorum", "suspend-io", true, "io-error", "suspend-io")
			k.note = "a Primary out of its group's majority holds every request (suspend-io, status suspended:quorum) or fails it with EIO (io-error) until quorum returns (docs/quorum.md)"
			return k
		}(),
		func() keyword {
			k := yesNo(secOptions, "auto-promote", "no", true, "")
			k.note = "an NBD client's connection promotes a Secondary (the quorum's grant on a quorum resource), which demotes 1 s after its last client left; twinblock's default is no (DRBD 9's is yes): a DRBD 8.4 file behaves as before"
			return k
		}(),
		func() keyword {
			k := yesNo(secOptions, "auto-failover", "no", true, "")
			k.twinblock = true
			k.note = "with quorum majority: a Secondary that lost its Primary promotes itself once the group grants it (docs/quorum.md)"
			return k
		}(),
		func() keyword {
			k := enum(secOptions, "on-no-data-accessible", "io-error", false, "io-error", "suspend-io")
			k.note = "twinblock always fails the I/O (io-error) when no UpToDate data is reachable; suspend-io is not implemented"
			return k
		}(),
	)
	return ks
}

// table is the read-only keyword table, indexed by section and name.
type table struct {
	list  []*keyword
	index map[string]map[string]*keyword
	order map[*keyword]int // position in list: the order Dump writes keywords in
}

// keywords is built once; nothing writes to it afterwards.
var keywords = newTable(keywordList())

func newTable(ks []keyword) *table {
	t := &table{index: map[string]map[string]*keyword{}, order: map[*keyword]int{}}
	for i := range ks {
		k := &ks[i]
		if t.index[k.section] == nil {
			t.index[k.section] = map[string]*keyword{}
		}
		if _, dup := t.index[k.section][k.name]; dup {
			panic(fmt.Sprintf("config: keyword %s/%s twice in the table", k.section, k.name))
		}
		t.index[k.section][k.name] = k
		t.order[k] = i
		t.list = append(t.list, k)
	}
	for _, k := range t.list {
		if k.alias != "" {
			if t.resolve(k) == nil {
				panic(fmt.Sprintf("config: alias %s/%s names no keyword", k.section, k.name))
			}
			continue
		}
		if k.def == "" {
			continue
		}
		v, err := parseValue(k, []token{{kind: tokWord, text: k.def}})
		if err != nil {
			panic(fmt.Sprintf("config: default of %s/%s: %v", k.section, k.name, err))
		}
		k.defVal = v
	}
	return t
}

func (t *table) lookup(section, name string) *keyword {
	return t.index[section][name]
}

// resolve follows an alias to the keyword it sets.
func (t *table) resolve(k *keyword) *keyword {
	if k.alias == "" {
		return k
	}
	sec := k.target
	if sec == "" {
		sec = k.section
	}
	return t.lookup(sec, k.alias)
}
