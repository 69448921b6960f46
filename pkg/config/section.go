package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Section is the keywords set in one section (global, or a resource's
// net, disk, startup, handlers or options), in keyword-table order, each
// with its normalized, validated value and where it was written. The
// accessors answer the table's default for a keyword that is not set.
//
// Asking a Section for a keyword its table does not have, or of the wrong
// kind (Size of an enum), is a programming error and panics.
//
// A Section is a value; the configuration never changes it after Load.
type Section struct {
	name string
	set  []setting // sorted by keywords.order
}

type setting struct {
	kw  *keyword
	val value
	pos Pos
}

func newSection(name string) Section { return Section{name: name} }

// Name is the section's name ("net", "disk", ...).
func (s Section) Name() string { return s.name }

// Keys lists the keywords set, in table order.
func (s Section) Keys() []string {
	keys := make([]string, len(s.set))
	for i, st := range s.set {
		keys[i] = st.kw.name
	}
	return keys
}

// Has reports whether k is set.
func (s Section) Has(k string) bool {
	_, ok := s.find(s.keyword(k))
	return ok
}

// String is k's value as normalized text ("10M", "yes", "disconnect", the
// handler's command, several host names separated by spaces), or the
// default ("" when DRBD has none).
func (s Section) String(k string) string {
	return strings.Join(s.get(s.keyword(k)).words, " ")
}

// Words is k's value as words (become-primary-on's host names), or the
// default.
func (s Section) Words(k string) []string {
	return slices.Clone(s.get(s.keyword(k)).words)
}

// Int is the number k is set to, in k's unit (see docs/configuration.md:
// timeout is in 0.1 s, connect-int in s, ...); for a size, bytes.
func (s Section) Int(k string) int64 {
	kw := s.keyword(k)
	if kw.kind != kindInt && kw.kind != kindSize {
		panic(fmt.Sprintf("config: %s %s is a %s, not a number", s.name, k, kw.kind))
	}
	return s.get(kw).num
}

// Size is the size k is set to, in bytes (bytes per second for rates).
func (s Section) Size(k string) int64 {
	kw := s.keyword(k)
	if kw.kind != kindSize {
		panic(fmt.Sprintf("config: %s %s is a %s, not a size", s.name, k, kw.kind))
	}
	return s.get(kw).num
}

// Bool is a yes/no keyword or a flag.
func (s Section) Bool(k string) bool {
	kw := s.keyword(k)
	if kw.kind != kindBool && kw.kind != kindFlag {
		panic(fmt.Sprintf("config: %s %s is a %s, not a bool", s.name, k, kw.kind))
	}
	return s.get(kw).num != 0
}

// Duration is a time-valued keyword (timeout, connect-int, wfc-timeout,
// c-plan-ahead, ...) converted from its unit.
func (s Section) Duration(k string) time.Duration {
	kw := s.keyword(k)
	if kw.kind != kindInt || kw.tick == 0 {
		panic(fmt.Sprintf("config: %s %s is not a time", s.name, k))
	}
	return time.Duration(s.get(kw).num) * kw.tick
}

// Pos is where k was set; false if it was not.
func (s Section) Pos(k string) (Pos, bool) {
	st, ok := s.find(s.keyword(k))
	return st.pos, ok
}

// keyword is the table entry of k, which the caller is about to read
// (recorded in the active ReadLog).
func (s Section) keyword(k string) *keyword {
	kw := s.keywordNoRead(k)
	noteRead(kw)
	return kw
}

// keywordNoRead is keyword for a look that is not a read: validation.
func (s Section) keywordNoRead(k string) *keyword {
	kw := keywords.lookup(s.name, k)
	if kw != nil {
		kw = keywords.resolve(kw)
	}
	if kw == nil || kw.section != s.name {
		panic(fmt.Sprintf("config: no keyword %q in section %q", k, s.name))
	}
	return kw
}

func (s Section) find(kw *keyword) (setting, bool) {
	i, ok := s.search(kw)
	if !ok {
		return setting{}, false
	}
	return s.set[i], true
}

func (s Section) search(kw *keyword) (int, bool) {
	return slices.BinarySearchFunc(s.set, keywords.order[kw], func(st setting, o int) int {
		return keywords.order[st.kw] - o
	})
}

func (s Section) get(kw *keyword) value {
	if st, ok := s.find(kw); ok {
		return st.val
	}
	return kw.defVal
}

// with returns a copy of s with kw set (replacing an earlier setting).
// It never writes to s's backing array, so copies of a Section stay
// independent.
func (s Section) with(st setting) Section {
	i, found := s.search(st.kw)
	set := make([]setting, 0, len(s.set)+1)
	set = append(set, s.set[:i]...)
	set = append(set, st)
	if found {
		i++
	}
	set = append(set, s.set[i:]...)
	return Section{name: s.name, set: set}
}

// merged returns base overridden by over, keyword by keyword.
func merged(base, over Section) Section {
	out := base
	for _, st := range over.set {
		out = out.with(st)
	}
	return out
}

// Change is one keyword whose effective value differs between two
// versions of a section (adjust). Old or New is "" when the keyword is
// not set on that side (its default applies).
type Change struct {
	Section, Keyword string
	Old, New         string
}

func (c Change) String() string {
	show := func(v string) string {
		if v == "" {
			return "(default)"
		}
		return v
	}
	return fmt.Sprintf("%s { %s %s -> %s }", c.Section, c.Keyword, show(c.Old), show(c.New))
}

// Diff lists the keywords set in s or in o whose values differ, in table
// order. It is not a read (see ReadLog): it compares what was written.
func (s Section) Diff(o Section) []Change {
	val := func(sec Section, kw *keyword) string {
		st, ok := sec.find(kw)
		if !ok {
			return ""
		}
		return strings.Join(st.val.words, " ")
	}
	seen := map[*keyword]bool{}
	var kws []*keyword
	for _, st := range append(slices.Clone(s.set), o.set...) {
		if !seen[st.kw] {
			seen[st.kw] = true
			kws = append(kws, st.kw)
		}
	}
	slices.SortFunc(kws, func(a, b *keyword) int { return keywords.order[a] - keywords.order[b] })
	var out []Change
	for _, kw := range kws {
		if a, b := val(s, kw), val(o, kw); a != b {
			out = append(out, Change{Section: s.name, Keyword: kw.name, Old: a, New: b})
		}
	}
	return out
}
