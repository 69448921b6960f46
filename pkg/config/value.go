package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// valueError is a problem with a keyword's value; the builder prefixes it
// with the position, the keyword and the value as written.
type valueError struct{ msg string }

func (e *valueError) Error() string { return e.msg }

func badValue(format string, args ...any) error {
	return &valueError{msg: fmt.Sprintf(format, args...)}
}

// parseValue checks the arguments of keyword k (never an alias) and
// returns the normalized value.
func parseValue(k *keyword, args []token) (value, error) {
	words := make([]string, len(args))
	for i, a := range args {
		words[i] = a.text
	}
	one := func(what string) (string, error) {
		if len(words) != 1 {
			if len(words) == 0 {
				return "", badValue("expected %s", what)
			}
			return "", badValue("expected one value (%s), got %d", what, len(words))
		}
		return words[0], nil
	}
	switch k.kind {
	case kindFlag:
		if len(words) != 0 {
			return value{}, badValue("takes no value")
		}
		return value{words: nil, num: 1}, nil
	case kindBool:
		switch {
		case len(words) == 0:
			return value{words: []string{"yes"}, num: 1}, nil
		case len(words) == 1 && words[0] == "yes":
			return value{words: []string{"yes"}, num: 1}, nil
		case len(words) == 1 && words[0] == "no":
			return value{words: []string{"no"}, num: 0}, nil
		}
		return value{}, badValue("expected yes or no")
	case kindInt:
		s, err := one("a number")
		if err != nil {
			return value{}, err
		}
		n, err := parseInt(k, s)
		if err != nil {
			return value{}, err
		}
		return value{words: []string{strconv.FormatInt(n, 10)}, num: n}, nil
	case kindSize:
		s, err := one("a size")
		if err != nil {
			return value{}, err
		}
		n, err := parseSize(k, s)
		if err != nil {
			return value{}, err
		}
		return value{words: []string{formatSize(n, k.unit)}, num: n}, nil
	case kindEnum:
		s, err := one("one of " + strings.Join(k.values, ", "))
		if err != nil {
			return value{}, err
		}
		if k.name == "protocol" {
			s = strings.ToUpper(s)
		}
		for _, v := range k.values {
			if prefix, ok := strings.CutSuffix(v, "NODENAME"); ok {
				if rest, ok := strings.CutPrefix(s, prefix); ok && validHostName(rest) {
					return value{words: []string{s}}, nil
				}
				continue
			}
			if s == v {
				return value{words: []string{s}}, nil
			}
		}
		return value{}, badValue("expected one of %s", strings.Join(k.values, ", "))
	case kindString:
		s, err := one("a word or a \"quoted string\"")
		if err != nil {
			if len(words) > 1 {
				return value{}, badValue("expected one value, got %d (quote a value that has spaces)", len(words))
			}
			return value{}, err
		}
		if k.maxLen > 0 && len(s) > k.maxLen {
			return value{}, badValue("longer than %d characters", k.maxLen)
		}
		return value{words: []string{s}}, nil
	case kindNames:
		if len(words) == 0 {
			return value{}, badValue("expected one or more host names")
		}
		for _, w := range words {
			if !validHostName(w) {
				return value{}, badValue("%q is not a host name", w)
			}
		}
		return value{words: words}, nil
	case kindDisk:
		s, err := one("a path or none")
		if err != nil {
			return value{}, err
		}
		if s == "" {
			return value{}, badValue("expected a path or none")
		}
		return value{words: []string{s}}, nil
	case kindDevice:
		d, err := parseDevice(words)
		if err != nil {
			return value{}, err
		}
		if d.path == "" {
			return value{words: []string{"minor", strconv.Itoa(d.minor)}}, nil
		}
		return value{words: []string{d.path}}, nil
	case kindMetaDisk:
		// PATH [IDX] may be written with spaces; nothing else may.
		if len(words) > 1 && !strings.HasPrefix(strings.Join(words[1:], ""), "[") {
			return value{}, badValue("expected internal, PATH or PATH[INDEX]")
		}
		md, err := parseMetaDisk(strings.Join(words, ""))
		if err != nil {
			return value{}, err
		}
		return value{words: []string{md.String()}, num: int64(md.Index)}, nil
	case kindAddress:
		a, v6, err := parseAddress(words)
		if err != nil {
			return value{}, err
		}
		if v6 {
			return value{words: []string{"ipv6", a}}, nil
		}
		return value{words: []string{a}}, nil
	case kindListen:
		s, err := one("HOST:PORT or unix:PATH")
		if err != nil {
			return value{}, err
		}
		if err := checkListen(s); err != nil {
			return value{}, err
		}
		return value{words: []string{s}}, nil
	}
	panic(fmt.Sprintf("config: keyword %s has no kind", k.name))
}

var (
	errNotNumber = errors.New("not a number")
	errTooLarge  = errors.New("too large")
)

// splitNumber splits "10M" into 10 and 'M'; suffix is 0 when there is none.
func splitNumber(s string) (n int64, suffix byte, err error) {
	if s == "" {
		return 0, 0, errNotNumber
	}
	digits := s
	if last := s[len(s)-1]; last < '0' || last > '9' {
		digits, suffix = s[:len(s)-1], last
	}
	if !allDigits(digits) {
		return 0, 0, errNotNumber
	}
	n, err = strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, 0, errTooLarge
	}
	return n, suffix, nil
}

func suffixShift(c byte) (uint, bool) {
	switch c {
	case 'K', 'k':
		return 10, true
	case 'M', 'm':
		return 20, true
	case 'G', 'g':
		return 30, true
	case 's':
		return 9, true
	}
	return 0, false
}

func parseInt(k *keyword, s string) (int64, error) {
	what := "a number"
	if k.tick != 0 {
		what = "a number (in " + k.unitName + ", no suffix)"
	}
	n, suffix, err := splitNumber(s)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return 0, badValue("out of range %d..%d", k.min, k.max)
		}
		return 0, badValue("expected %s", what)
	}
	if suffix != 0 {
		shift, ok := suffixShift(suffix)
		if !ok || suffix == 's' || k.tick != 0 {
			return 0, badValue("expected %s", what)
		}
		if n > math.MaxInt64>>shift {
			return 0, badValue("out of range %d..%d", k.min, k.max)
		}
		n <<= shift
	}
	if n < k.min || n > k.max {
		return 0, badValue("out of range %d..%d", k.min, k.max)
	}
	return n, nil
}

func parseSize(k *keyword, s string) (int64, error) {
	rangeErr := badValue("out of range %s..%s", formatSize(k.min*k.unit, 1), formatSize(k.max*k.unit, 1))
	n, suffix, err := splitNumber(s)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return 0, rangeErr
		}
		return 0, badValue("expected a size: a number with an optional K, M, G or s suffix (bare: %s)", k.unitName)
	}
	var bytes int64
	if suffix == 0 {
		if n > math.MaxInt64/k.unit {
			return 0, rangeErr
		}
		bytes = n * k.unit
	} else {
		shift, ok := suffixShift(suffix)
		if !ok {
			return 0, badValue("unknown size suffix %q (expected K, M, G or s)", string(suffix))
		}
		if n > math.MaxInt64>>shift {
			return 0, rangeErr
		}
		bytes = n << shift
	}
	// drbdadm converts to the default unit, rounding up.
	if r := bytes % k.unit; r != 0 {
		bytes += k.unit - r
	}
	if bytes < k.min*k.unit || bytes > k.max*k.unit {
		return 0, rangeErr
	}
	return bytes, nil
}

// formatSize writes bytes with the largest K/M/G suffix that divides it
// exactly, else as a bare number of unit-sized units.
func formatSize(bytes, unit int64) string {
	if bytes == 0 {
		return "0"
	}
	for _, s := range []struct {
		shift  uint
		suffix string
	}{{30, "G"}, {20, "M"}, {10, "K"}} {
		if bytes%(1<<s.shift) == 0 {
			return strconv.FormatInt(bytes>>s.shift, 10) + s.suffix
		}
	}
	if unit <= 0 || bytes%unit != 0 {
		unit = 1
	}
	return strconv.FormatInt(bytes/unit, 10)
}

// maxMinor is DRBD's largest minor number.
const maxMinor = 1<<20 - 1

type deviceVal struct {
	path  string // "/dev/drbdN" or "/dev/nbdN"; "" for `device minor N`
	nbd   string // the /dev/nbdN it maps to
	minor int
}

// parseDevice reads `/dev/drbdN`, `/dev/nbdN`, `PATH minor N` or `minor N`.
// As drbdadm, a name without /dev/ gets it.
func parseDevice(words []string) (deviceVal, error) {
	const want = "expected /dev/drbdN, /dev/nbdN, or minor N"
	minorOf := func(s string) (int, bool) {
		if s == "" || (len(s) > 1 && s[0] == '0') {
			return 0, false
		}
		if !allDigits(s) || len(s) > 7 {
			return 0, false
		}
		n, _ := strconv.Atoi(s)
		return n, n <= maxMinor
	}
	var d deviceVal
	switch {
	case len(words) == 2 && words[0] == "minor":
		m, ok := minorOf(words[1])
		if !ok {
			return d, badValue("minor %q: expected a number 0..%d", words[1], maxMinor)
		}
		return deviceVal{nbd: "/dev/nbd" + strconv.Itoa(m), minor: m}, nil
	case len(words) == 1 || (len(words) == 3 && words[1] == "minor"):
		path := words[0]
		if !strings.HasPrefix(path, "/") && (strings.HasPrefix(path, "drbd") || strings.HasPrefix(path, "nbd")) {
			path = "/dev/" + path
		}
		var num string
		if rest, ok := strings.CutPrefix(path, "/dev/drbd"); ok {
			num = rest
		} else if rest, ok := strings.CutPrefix(path, "/dev/nbd"); ok {
			num = rest
		} else {
			return d, badValue(want)
		}
		m, ok := minorOf(num)
		if !ok {
			return d, badValue(want)
		}
		if len(words) == 3 {
			explicit, ok := minorOf(words[2])
			if !ok {
				return d, badValue("minor %q: expected a number 0..%d", words[2], maxMinor)
			}
			if explicit != m {
				return d, badValue("minor %d does not match the device name (use %s minor %d, or leave one out)", explicit, path, m)
			}
		}
		return deviceVal{path: path, nbd: "/dev/nbd" + strconv.Itoa(m), minor: m}, nil
	}
	return d, badValue(want)
}

// MetaDisk is where a node keeps its metadata (generation identifiers,
// bitmap, activity log): at the end of the data disk (Internal), or on
// another device, as a whole (Index -1) or in DRBD's fixed 128 MiB slot
// number Index.
type MetaDisk struct {
	Internal bool
	Path     string
	Index    int
}

// String gives "internal", "PATH" or "PATH[IDX]", as written in drbd.conf.
func (m MetaDisk) String() string {
	switch {
	case m.Internal:
		return "internal"
	case m.Index >= 0:
		return m.Path + "[" + strconv.Itoa(m.Index) + "]"
	}
	return m.Path
}

// internalMetaDisk is the default meta-disk.
var internalMetaDisk = MetaDisk{Internal: true, Index: -1}

func parseMetaDisk(s string) (MetaDisk, error) {
	if s == "internal" {
		return internalMetaDisk, nil
	}
	if s == "" {
		return MetaDisk{}, badValue("expected internal, PATH or PATH[INDEX]")
	}
	if !strings.HasSuffix(s, "]") {
		if strings.ContainsAny(s, "[]") {
			return MetaDisk{}, badValue("expected internal, PATH or PATH[INDEX]")
		}
		return MetaDisk{Path: s, Index: -1}, nil
	}
	open := strings.LastIndexByte(s, '[')
	if open <= 0 {
		return MetaDisk{}, badValue("expected internal, PATH or PATH[INDEX]")
	}
	path, idx := s[:open], s[open+1:len(s)-1]
	if path == "internal" || strings.ContainsAny(path, "[]") {
		return MetaDisk{}, badValue("expected internal, PATH or PATH[INDEX]")
	}
	if !allDigits(idx) || len(idx) > 9 {
		return MetaDisk{}, badValue("index %q: expected a number", idx)
	}
	n, _ := strconv.Atoi(idx)
	return MetaDisk{Path: path, Index: n}, nil
}

// parseAddress reads `[ipv4|ipv6] ADDR:PORT` and returns "ADDR:PORT"
// ("[ADDR]:PORT" for IPv6).
func parseAddress(words []string) (addr string, v6 bool, err error) {
	const want = "expected [ipv4|ipv6] ADDRESS:PORT (IPv6 in brackets)"
	family := ""
	if len(words) > 0 {
		switch words[0] {
		case "ipv4", "ipv6":
			family, words = words[0], words[1:]
		case "ssocks", "sdp", "sci":
			return "", false, badValue("address family %s is not supported by twinblock (use ipv4 or ipv6)", words[0])
		}
	}
	s := strings.Join(words, "")
	if s == "" {
		return "", false, badValue(want)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", false, badValue(want)
	}
	bracketed := strings.HasPrefix(s, "[")
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", false, badValue("%q is not an IP address", host)
	}
	if z := ip.Zone(); z != "" && !validHostName(z) {
		return "", false, badValue("zone %q: expected an interface name", z)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || strings.HasPrefix(port, "+") {
		return "", false, badValue("port %q: expected 1..65535", port)
	}
	switch {
	case ip.Is4() && !bracketed && family != "ipv6":
	case ip.Is6() && !ip.Is4In6() && bracketed && family != "ipv4":
		v6 = true
	case ip.Is6() && !bracketed:
		return "", false, badValue("an IPv6 address goes in brackets: ipv6 [%s]:%s", host, port)
	default:
		return "", false, badValue("%s is not an %s address", host, family)
	}
	return netip.AddrPortFrom(ip, uint16(p)).String(), v6, nil
}

// checkListen validates an nbd-listen address: HOST:PORT (HOST may be
// empty, an IP or a host name; PORT 0 picks a free one) or unix:PATH.
func checkListen(s string) error {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" {
			return badValue("unix: needs a socket path")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return badValue("expected HOST:PORT or unix:PATH")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || strings.HasPrefix(port, "+") || p > 65535 {
		return badValue("port %q: expected 0..65535", port)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		if strings.Contains(host, ":") && !strings.HasPrefix(s, "[") {
			return badValue("an IPv6 address goes in brackets")
		}
		return nil
	}
	if !validHostName(host) {
		return badValue("%q is not a host name or IP address", host)
	}
	return nil
}

// validName reports whether s is usable as a resource name: letters,
// digits and . _ + - , not starting with - (it is also the NBD export
// name and part of file names).
func validName(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '-' || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '+' || c == '-') {
			return false
		}
	}
	return true
}

// validHostName reports whether s can be a host name (what uname -n
// prints): letters, digits, . _ -.
func validHostName(s string) bool {
	if s == "" || len(s) > 255 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// allDigits reports whether s is one or more ASCII digits.
func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
