package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// builder gives the syntax tree its meaning: it expands includes, checks
// every keyword against the table, keeps what each level (global, common,
// resource, on HOST) sets, and finally resolves each resource.
type builder struct {
	fs       fileSystem
	files    []string
	reading  []openFile      // the include stack
	seen     map[string]bool // canonical names of every file read
	warnings []Warning

	global    level
	globalPos *Pos
	common    level
	commonPos *Pos
	resources []*resourceLevel
}

// level holds the sections one level of the configuration writes, by
// table section name ("resource" and "on" hold the statements written
// directly in that section).
type level struct {
	secs map[string]Section
}

func (l *level) sec(name string) Section {
	if s, ok := l.secs[name]; ok {
		return s
	}
	return newSection(name)
}

// openFile is a file on the include stack.
type openFile struct{ key, name string }

type resourceLevel struct {
	name  string
	pos   Pos
	level level
	hosts []*hostLevel
}

type hostLevel struct {
	name  string
	pos   Pos
	level level
}

func newBuilder(fs fileSystem) *builder {
	return &builder{fs: fs, seen: map[string]bool{}}
}

func (b *builder) warn(pos Pos, format string, args ...any) {
	b.warnings = append(b.warnings, Warning{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// file parses one file's text and walks its top level.
func (b *builder) file(name string, src []byte) error {
	key := b.fs.Canonical(name)
	b.files = append(b.files, name)
	b.seen[key] = true
	b.reading = append(b.reading, openFile{key, name})
	defer func() { b.reading = b.reading[:len(b.reading)-1] }()
	stmts, err := parseFile(name, src)
	if err != nil {
		return err
	}
	return b.each(stmts, b.topLevel)
}

// each runs fn on every statement of list, replacing `include "glob";`
// by the statements of the files it names.
func (b *builder) each(list []*stmt, fn func(*stmt) error) error {
	for _, s := range list {
		if s.name == "include" && !s.hasBlock {
			if err := b.include(s, fn); err != nil {
				return err
			}
			continue
		}
		if err := fn(s); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) include(s *stmt, fn func(*stmt) error) error {
	if len(s.args) != 1 {
		return errorf(s.pos, `include: expected one "file pattern"`)
	}
	pattern := s.args[0].text
	if pattern == "" {
		return errorf(s.pos, `include: expected one "file pattern"`)
	}
	if !filepath.IsAbs(pattern) {
		pattern = filepath.Join(filepath.Dir(s.pos.File), pattern)
	}
	matches, err := b.fs.Glob(pattern)
	if err != nil {
		return &Error{Pos: s.pos, Msg: fmt.Sprintf("include %q: %v", s.args[0].text, err), Err: err}
	}
	if len(matches) == 0 && !hasGlobMeta(pattern) {
		return errorf(s.pos, "include %q: no such file", s.args[0].text)
	}
	for _, m := range matches {
		key := b.fs.Canonical(m)
		if i := slices.IndexFunc(b.reading, func(f openFile) bool { return f.key == key }); i >= 0 {
			var chain []string
			for _, f := range b.reading[i:] {
				chain = append(chain, f.name)
			}
			return errorf(s.pos, "include cycle: %s -> %s", strings.Join(chain, " -> "), m)
		}
		if b.seen[key] {
			b.warn(s.pos, "include %q: %s was already read; skipped", s.args[0].text, m)
			continue
		}
		src, err := b.fs.ReadFile(m)
		if err != nil {
			return &Error{Pos: s.pos, Msg: fmt.Sprintf("include %q: %v", s.args[0].text, err), Err: err}
		}
		b.files = append(b.files, m)
		b.seen[key] = true
		b.reading = append(b.reading, openFile{key, m})
		stmts, err := parseFile(m, src)
		if err == nil {
			err = b.each(stmts, fn)
		}
		b.reading = b.reading[:len(b.reading)-1]
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) topLevel(s *stmt) error {
	switch s.name {
	case "global":
		if err := needBlock(s, 0); err != nil {
			return err
		}
		if b.globalPos != nil {
			return errorf(s.pos, "the global section is already defined at %s", b.globalPos)
		}
		b.globalPos = &s.pos
		return b.settings(&b.global, secGlobal, "global", s.block)
	case "common":
		if err := needBlock(s, 0); err != nil {
			return err
		}
		if b.commonPos != nil {
			return errorf(s.pos, "the common section is already defined at %s", b.commonPos)
		}
		b.commonPos = &s.pos
		return b.resourceBody(&b.common, nil, "common", s.block)
	case "resource":
		return b.resource(s)
	case "skip":
		// drbdadm's block comment: skip [anything] { ... }.
		if !s.hasBlock {
			return errorf(s.pos, `skip: expected "{"`)
		}
		return nil
	}
	if s.hasBlock {
		return errorf(s.pos, "unknown section %q at the top level (expected global, common, resource or skip)", s.name)
	}
	return errorf(s.pos, "unknown keyword %q at the top level (expected global, common, resource, include or skip)", s.name)
}

// needBlock checks that s is a section with nargs arguments.
func needBlock(s *stmt, nargs int) error {
	if !s.hasBlock {
		return errorf(s.pos, `%s: expected "{"`, s.head())
	}
	if len(s.args) != nargs {
		switch nargs {
		case 0:
			return errorf(s.pos, `%s: expected "{" after %q`, s.head(), s.name)
		default:
			return errorf(s.pos, `%s: expected one name before "{"`, s.head())
		}
	}
	return nil
}

func (b *builder) resource(s *stmt) error {
	if !s.hasBlock || len(s.args) != 1 {
		return errorf(s.pos, `%s: expected resource NAME { ... }`, s.head())
	}
	name := s.args[0].text
	switch {
	case name == "all":
		return errorf(s.pos, `resource name "all" is reserved (it means every resource on the command line)`)
	case !validName(name):
		return errorf(s.pos, "resource name %q: use letters, digits, '.', '_', '+' and '-'", name)
	}
	for _, r := range b.resources {
		if r.name == name {
			return errorf(s.pos, "resource %s is already defined at %s", name, r.pos)
		}
	}
	r := &resourceLevel{name: name, pos: s.pos}
	b.resources = append(b.resources, r)
	return b.resourceBody(&r.level, r, "resource", s.block)
}

// optionSections are the sections of options a resource (or common) has.
var optionSections = []string{secNet, secDisk, secSyncer, secStartup, secHandlers, secOptions}

// resourceBody walks a resource section (r != nil) or the common section.
func (b *builder) resourceBody(lv *level, r *resourceLevel, where string, list []*stmt) error {
	return b.each(list, func(s *stmt) error {
		if !s.hasBlock {
			if (slices.Contains(optionSections, s.name) && s.name != secDisk) || s.name == "on" || s.name == "volume" {
				return errorf(s.pos, `%s: expected "{"`, s.head())
			}
			return b.setting(lv, secResource, where, s)
		}
		switch s.name {
		case secNet, secDisk, secSyncer, secStartup, secHandlers, secOptions:
			if err := needBlock(s, 0); err != nil {
				return err
			}
			return b.settings(lv, s.name, s.name, s.block)
		case "volume":
			return b.volume(lv, secResource, s)
		case "on":
			if r == nil {
				return errorf(s.pos, "%s: the common section has no host sections", s.head())
			}
			return b.host(r, s)
		case "proxy":
			b.warn(s.pos, `section "proxy" is not implemented by twinblock; ignored`)
			return nil
		case "floating", "stacked-on-top-of", "_this_host", "_remote_host":
			return errorf(s.pos, `%s: twinblock supports only "on HOST" sections`, s.head())
		}
		if hint, ok := drbd9Constructs[s.name]; ok {
			return errorf(s.pos, "%s: %s", s.head(), hint)
		}
		return b.unknownSection(s, where, []string{"net", "disk", "syncer", "startup", "handlers", "options", "volume", "on"})
	})
}

// drbd9Constructs names the DRBD 9 constructs a DRBD 8.4 file does not
// have, each with what to write for twinblock instead: a file written
// for DRBD 9 gets that, not "unknown keyword".
var drbd9Constructs = map[string]string{
	"node-id": "DRBD 9's node-id: twinblock has no node ids (a host is its on section; " +
		"status --json's node-id is the section's place); remove the line",
	"connection": "DRBD 9's connection section: twinblock replicates between the two hosts of the resource " +
		"over one link; write each host's address in its \"on HOST { address ADDR:PORT; }\" section " +
		"and the link's options in the resource's net section",
	"connection-mesh": "DRBD 9's connection-mesh: twinblock replicates between exactly two hosts " +
		"(a third, with disk none and options { quorum majority; }, is a diskless witness); " +
		"write one \"on HOST { address ADDR:PORT; }\" section per host",
	"path": "DRBD 9's path (in a connection section): write each host's address in its on section",
	"quorum-minimum-redundancy": "DRBD 9's quorum-minimum-redundancy: twinblock's quorum is the majority " +
		"of two data hosts and a witness (quorum majority); remove the line",
	"on-suspended-primary-outdated": "DRBD 9's on-suspended-primary-outdated: a twinblock Primary replaced " +
		"by the quorum always demotes (force-secondary); remove the line",
}

func (b *builder) unknownSection(s *stmt, where string, known []string) error {
	msg := fmt.Sprintf("unknown section %q in section %s", s.name, where)
	if best := closest(s.name, known); best != "" {
		msg += fmt.Sprintf(`; did you mean %q?`, best)
	}
	return errorf(s.pos, "%s", msg)
}

func (b *builder) host(r *resourceLevel, s *stmt) error {
	switch {
	case len(s.args) == 0:
		return errorf(s.pos, `on: expected a host name before "{"`)
	case len(s.args) > 1:
		return errorf(s.pos, `%s: one host name per "on" section (twinblock has exactly one host per node)`, s.head())
	}
	name := s.args[0].text
	if !validHostName(name) {
		return errorf(s.pos, "on %q: not a host name", name)
	}
	for _, h := range r.hosts {
		if h.name == name {
			return errorf(s.pos, "resource %s: \"on %s\" is already defined at %s", r.name, name, h.pos)
		}
	}
	if len(r.hosts) == 3 {
		return errorf(s.pos, `resource %s: a fourth host section "on %s": twinblock replicates between two hosts, with at most a diskless witness beside them (%s, %s, %s)`, r.name, name, r.hosts[0].name, r.hosts[1].name, r.hosts[2].name)
	}
	h := &hostLevel{name: name, pos: s.pos}
	r.hosts = append(r.hosts, h)
	return b.each(s.block, func(st *stmt) error {
		if !st.hasBlock {
			return b.setting(&h.level, secOn, "on", st)
		}
		switch st.name {
		case "volume":
			return b.volume(&h.level, secOn, st)
		case "options":
			if err := needBlock(st, 0); err != nil {
				return err
			}
			return b.settings(&h.level, secOptions, "options", st.block)
		case "disk":
			return errorf(st.pos, `disk { } inside "on %s" is not supported by twinblock; set disk options for the whole resource`, name)
		case "proxy":
			b.warn(st.pos, `section "proxy" is not implemented by twinblock; ignored`)
			return nil
		}
		return b.unknownSection(st, "on", []string{"volume", "options"})
	})
}

// volume flattens `volume 0 { }` into the level it is written in.
func (b *builder) volume(lv *level, parent string, s *stmt) error {
	if len(s.args) != 1 || !allDigits(s.args[0].text) {
		return errorf(s.pos, `%s: expected volume NUMBER { ... }`, s.head())
	}
	if n, err := strconv.Atoi(s.args[0].text); err != nil || n != 0 {
		return errorf(s.pos, "volume %s: twinblock supports one volume per resource (volume 0)", s.args[0].text)
	}
	return b.each(s.block, func(st *stmt) error {
		if st.hasBlock {
			if st.name == "disk" && parent == secResource {
				if err := needBlock(st, 0); err != nil {
					return err
				}
				return b.settings(lv, secDisk, "disk", st.block)
			}
			if st.name == "disk" {
				return errorf(st.pos, `disk { } inside "on HOST" is not supported by twinblock; set disk options for the whole resource`)
			}
			return b.unknownSection(st, "volume", nil)
		}
		kw := keywords.lookup(secVolume, st.name)
		if kw == nil {
			return b.unknownKeyword(st, secVolume, "volume")
		}
		return b.store(lv, parent, keywords.lookup(parent, st.name), st)
	})
}

// settings walks a section of plain keyword statements.
func (b *builder) settings(lv *level, sec, where string, list []*stmt) error {
	return b.each(list, func(s *stmt) error {
		if s.hasBlock {
			return errorf(s.pos, "%s: unexpected section inside section %s", s.head(), where)
		}
		return b.setting(lv, sec, where, s)
	})
}

// setting checks one keyword statement of table section sec and stores it.
func (b *builder) setting(lv *level, sec, where string, s *stmt) error {
	kw := keywords.lookup(sec, s.name)
	if kw == nil {
		return b.unknownKeyword(s, sec, where)
	}
	return b.store(lv, sec, kw, s)
}

// store parses s's value for kw (following an alias), warns about what
// twinblock ignores, and records the value in lv.
func (b *builder) store(lv *level, sec string, kw *keyword, s *stmt) error {
	target := keywords.resolve(kw)
	args := s.args
	if kw.negate {
		if len(args) != 0 {
			return errorf(s.pos, "%s: takes no value", s.head())
		}
		args = []token{{kind: tokWord, text: "no", line: s.pos.Line}}
	}
	v, err := parseValue(target, args)
	if err != nil {
		head := s.head()
		if target.name == "shared-secret" {
			head = s.name + " (value not shown)" // keep secrets out of logs
		}
		return errorf(s.pos, "%s: %v", head, err)
	}
	if kw.name == "flexible-meta-disk" && v.num >= 0 {
		return errorf(s.pos, "%s: flexible-meta-disk takes no index (write meta-disk PATH[INDEX])", s.head())
	}
	if !target.implemented {
		b.warn(s.pos, "keyword %q in section %s is not implemented by twinblock; ignored", s.name, kw.section)
	}
	if target.ignored != "" {
		// The loader is the consumer of an unsupported value.
		noteRead(target)
		if strings.Join(v.words, " ") == target.ignored {
			b.warn(s.pos, "%s %s is not supported by twinblock (%s); ignored", target.name, target.ignored, target.ignoredWhy)
		}
	}
	if lv.secs == nil {
		lv.secs = map[string]Section{}
	}
	into := lv.sec(target.section)
	if prev, ok := into.find(target); ok {
		if kw.name != target.name {
			return errorf(s.pos, "%q sets %s, which is already set at %s", s.name, target.name, prev.pos)
		}
		return errorf(s.pos, "%q is already set at %s", s.name, prev.pos)
	}
	lv.secs[target.section] = into.with(setting{kw: target, val: v, pos: s.pos})
	return nil
}

func (b *builder) unknownKeyword(s *stmt, sec, where string) error {
	if hint, ok := drbd9Constructs[s.name]; ok {
		return errorf(s.pos, "%s (in section %s): %s", s.name, where, hint)
	}
	msg := fmt.Sprintf("unknown keyword %q in section %s", s.name, where)
	var elsewhere []string
	for _, other := range sectionOrder {
		if other != sec && keywords.lookup(other, s.name) != nil {
			elsewhere = append(elsewhere, other)
		}
	}
	var names []string
	for _, k := range keywords.list {
		if k.section == sec {
			names = append(names, k.name)
		}
	}
	switch best := closest(s.name, names); {
	case len(elsewhere) > 0:
		msg += fmt.Sprintf("; %q belongs in section %s", s.name, strings.Join(elsewhere, " or "))
	case best != "":
		msg += fmt.Sprintf("; did you mean %q?", best)
	}
	return errorf(s.pos, "%s", msg)
}

// closest returns the candidate within edit distance 2 of s, the nearest
// first; "" if there is none.
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c, bestD); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, or limit when it is
// at least limit.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d >= limit || -d >= limit {
		return limit
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], limit)
}

// resolve turns the levels into the Config: common merged into every
// resource, resource-level placement inherited by the hosts, and the
// checks that need the whole picture.
func (b *builder) resolve() (*Config, error) {
	cfg := &Config{Files: b.files, Global: b.global.sec(secGlobal), Warnings: b.warnings}
	type use struct {
		res, host string
		pos       Pos
	}
	addresses := map[string]use{}
	minors := map[string]use{}      // host + "/" + minor
	quorumAddrs := map[string]use{} // host + "/" + quorum-address
	for i, rl := range b.resources {
		r := &Resource{Name: rl.name, Pos: rl.pos, Protocol: "C"}
		r.Net = merged(b.common.sec(secNet), rl.level.sec(secNet))
		r.Disk = merged(b.common.sec(secDisk), rl.level.sec(secDisk))
		r.Startup = merged(b.common.sec(secStartup), rl.level.sec(secStartup))
		r.Handlers = merged(b.common.sec(secHandlers), rl.level.sec(secHandlers))
		r.Options = merged(b.common.sec(secOptions), rl.level.sec(secOptions))
		place := merged(b.common.sec(secResource), rl.level.sec(secResource))
		if place.Has("protocol") {
			r.Protocol = place.String("protocol")
		}
		if len(rl.hosts) < 2 {
			return nil, errorf(rl.pos, `resource %s needs two "on HOST" sections (twinblock replicates between two hosts), found %d`, rl.name, len(rl.hosts))
		}
		quorum := r.Options.String("quorum") == "majority"
		_ = r.Options.String("on-no-quorum") // read: pkg/node holds (suspend-io) or fails (io-error) I/O without quorum
		if r.Handlers.String("quorum-lost") != "" && !quorum {
			p, _ := r.Handlers.Pos("quorum-lost")
			b.warn(p, "handler quorum-lost of resource %s without options { quorum majority; }: it never runs", rl.name)
		}
		if r.Options.Bool("auto-failover") && !quorum {
			p, _ := r.Options.Pos("auto-failover")
			return nil, errorf(p, `resource %s: auto-failover yes needs options { quorum majority; } and a witness (without one, a promotion could not tell a dead Primary from a cut link)`, rl.name)
		}
		switch {
		case len(rl.hosts) == 3 && !quorum:
			return nil, errorf(rl.hosts[2].pos, `resource %s: a third host section "on %s" needs options { quorum majority; } (it is then the diskless witness)`, rl.name, rl.hosts[2].name)
		case len(rl.hosts) == 2 && quorum:
			p, _ := r.Options.Pos("quorum")
			return nil, errorf(p, `resource %s: quorum majority needs a third host section, a diskless witness (on NAME { address ...; disk none; })`, rl.name)
		}
		hosts := make([]*Host, len(rl.hosts))
		for j, hl := range rl.hosts {
			h, err := b.resolveHost(i, rl, hl)
			if err != nil {
				return nil, err
			}
			hosts[j] = h
		}
		if !quorum {
			for j, h := range hosts {
				if h.QuorumAddress != "" {
					p, _ := rl.hosts[j].level.sec(secOn).Pos("quorum-address")
					b.warn(p, "quorum-address of on %s without options { quorum majority; }: ignored", h.Name)
					h.QuorumAddress = ""
				}
			}
		}
		if quorum {
			for _, h := range hosts {
				if host, _, err := net.SplitHostPort(h.Address); err == nil && h.QuorumAddress == "" {
					h.QuorumAddress = net.JoinHostPort(host, defaultQuorumPort)
				}
			}
			var data []*Host
			for j, h := range hosts {
				switch {
				case h.Disk != "":
					data = append(data, h)
				case r.Witness == nil:
					r.Witness = h
				default:
					return nil, errorf(rl.hosts[j].pos, `resource %s: two diskless hosts (%s and %s): a quorum resource has two data hosts and one witness`, rl.name, r.Witness.Name, h.Name)
				}
			}
			if r.Witness == nil {
				return nil, errorf(rl.hosts[2].pos, `resource %s: no diskless host: the witness of a quorum resource has "disk none;"`, rl.name)
			}
			hosts = data
			for j, h := range append(append([]*Host{}, data...), r.Witness) {
				for _, o := range append(append([]*Host{}, data...), r.Witness)[:j] {
					if h.QuorumAddress == o.QuorumAddress {
						return nil, errorf(h.Pos, "resource %s: on %s has the same quorum-address as on %s (%s)", rl.name, h.Name, o.Name, h.QuorumAddress)
					}
				}
				key := h.Name + "/" + h.QuorumAddress
				if u, dup := quorumAddrs[key]; dup {
					return nil, errorf(h.Pos, "resource %s: quorum-address %s of on %s is already used by resource %s (%s): each quorum resource has its own group, on its own port", r.Name, h.QuorumAddress, h.Name, u.res, u.pos)
				}
				quorumAddrs[key] = use{r.Name, h.Name, h.Pos}
				if h.QuorumAddress == h.Address {
					return nil, errorf(h.Pos, "resource %s: on %s: quorum-address %s is its address too: give the quorum group its own port", r.Name, h.Name, h.Address)
				}
			}
		}
		r.Hosts[0], r.Hosts[1] = hosts[0], hosts[1]
		if err := checkHostNames(r); err != nil {
			return nil, err
		}
		if r.Hosts[0].Address == r.Hosts[1].Address {
			p, _ := rl.hosts[1].level.sec(secOn).Pos("address")
			return nil, errorf(p, "resource %s: on %s has the same address as on %s (%s)", rl.name, rl.hosts[1].name, rl.hosts[0].name, r.Hosts[0].Address)
		}
		all := []*Host{r.Hosts[0], r.Hosts[1]}
		if r.Witness != nil {
			all = append(all, r.Witness)
		}
		for _, h := range all {
			var hl *hostLevel
			for _, x := range rl.hosts {
				if x.name == h.Name {
					hl = x
				}
			}
			p, _ := hl.level.sec(secOn).Pos("address")
			key := h.Address
			if ip, err := netip.ParseAddrPort(h.Address); err == nil && (ip.Addr().IsLoopback() || ip.Addr().IsLinkLocalUnicast()) {
				key = h.Name + "/" + key // a local address is per host (drbdadm)
			}
			if u, dup := addresses[key]; dup {
				return nil, errorf(p, "resource %s: address %s of on %s is already used by resource %s, on %s (%s)", r.Name, h.Address, h.Name, u.res, u.host, u.pos)
			}
			addresses[key] = use{r.Name, h.Name, p}
			if h == r.Witness {
				continue // no device
			}
			mkey := h.Name + "/" + strconv.Itoa(h.Minor)
			if u, dup := minors[mkey]; dup {
				return nil, errorf(hl.pos, "resource %s: minor %d on %s is already used by resource %s (%s); give each resource its own device", r.Name, h.Minor, h.Name, u.res, u.pos)
			}
			minors[mkey] = use{r.Name, h.Name, hl.pos}
		}
		cfg.Resources = append(cfg.Resources, r)
	}
	cfg.Warnings = b.warnings // with resolve's own
	return cfg, nil
}

// checkHostNames checks the options that name hosts against the
// resource's two hosts.
// It only validates: what it looks at is not read (ReadLog).
func checkHostNames(r *Resource) error {
	isHost := func(n string) bool { return n == r.Hosts[0].Name || n == r.Hosts[1].Name }
	hosts := r.Hosts[0].Name + ", " + r.Hosts[1].Name
	peek := func(s Section, k string) (value, Pos) {
		st, _ := s.find(s.keywordNoRead(k))
		return s.get(s.keywordNoRead(k)), st.pos
	}
	if v, p := peek(r.Net, "after-sb-0pri"); strings.HasPrefix(v.words[0], "discard-node-") {
		if n := strings.TrimPrefix(v.words[0], "discard-node-"); !isHost(n) {
			return errorf(p, "resource %s: after-sb-0pri %s: %q is not a host of the resource (hosts: %s)", r.Name, v.words[0], n, hosts)
		}
	}
	v, p := peek(r.Startup, "become-primary-on")
	for _, n := range v.words {
		if n != "both" && !isHost(n) {
			return errorf(p, "resource %s: become-primary-on %s: not a host of the resource (hosts: %s) nor both", r.Name, n, hosts)
		}
	}
	return nil
}

// resolveHost computes a host's effective placement: the most specific of
// on HOST, resource, common and global wins.
func (b *builder) resolveHost(index int, rl *resourceLevel, hl *hostLevel) (*Host, error) {
	on := hl.level.sec(secOn)
	chain := []Section{on, rl.level.sec(secResource), b.common.sec(secResource), b.global.sec(secGlobal)}
	// pick reads placement keyword k: every level it may come from is
	// consulted (ReadLog), a volume 0 statement included (stored at the
	// level the volume is written in).
	pick := func(k string, levels []Section) (setting, bool) {
		noteRead(keywords.lookup(secVolume, k))
		for _, s := range levels {
			noteRead(keywords.lookup(s.name, k))
		}
		for _, s := range levels {
			kw := keywords.lookup(s.name, k)
			if kw == nil {
				continue
			}
			if st, ok := s.find(kw); ok {
				return st, true
			}
		}
		return setting{}, false
	}
	h := &Host{Name: hl.name, Pos: hl.pos, Minor: index, MetaDisk: internalMetaDisk, NBDListen: defaultNBDListen}
	st, ok := on.find(keywords.lookup(secOn, "address"))
	noteRead(keywords.lookup(secOn, "address"))
	if !ok {
		return nil, errorf(hl.pos, `resource %s, on %s: "address" keyword missing`, rl.name, hl.name)
	}
	h.Address = st.val.words[len(st.val.words)-1]
	st, ok = pick("disk", chain[:3])
	if !ok {
		return nil, errorf(hl.pos, `resource %s, on %s: "disk" keyword missing (write "disk none;" for a diskless host)`, rl.name, hl.name)
	}
	if d := st.val.words[0]; d != "none" {
		h.Disk = d
	}
	if st, ok := pick("device", chain); ok {
		d, err := parseDevice(st.val.words)
		if err != nil { // validated when stored
			panic(fmt.Sprintf("config: stored device %q: %v", st.val.words, err))
		}
		h.Device, h.NBDDevice, h.Minor = d.path, d.nbd, d.minor
	}
	if st, ok := pick("meta-disk", chain); ok {
		md, err := parseMetaDisk(st.val.words[0])
		if err != nil {
			panic(fmt.Sprintf("config: stored meta-disk %q: %v", st.val.words, err))
		}
		h.MetaDisk = md
	}
	if st, ok := pick("nbd-listen", chain); ok {
		h.NBDListen = st.val.words[0]
	}
	if st, ok := pick("quorum-address", chain[:1]); ok {
		h.QuorumAddress = st.val.words[len(st.val.words)-1]
	}
	return h, nil
}

// defaultQuorumPort is the port of a host's quorum-address when the
// configuration gives none (on the host of its address).
const defaultQuorumPort = "7800"
