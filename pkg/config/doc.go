// Package config reads twinblock's configuration: DRBD 8.4's drbd.conf
// language (DESIGN.md "Configuration", docs/configuration.md), so that a
// DRBD user's file works after changing its disk lines.
//
// # Layers
//
// Loading goes through three steps, each in its own file:
//
//   - lexer.go and syntax.go turn text into a tree of statements
//     (keyword, values, optional { block }) with positions, knowing
//     nothing of keywords;
//   - build.go walks the tree: it expands includes (relative globs against
//     the including file's directory; a glob may match nothing; a cycle is
//     an error), checks every keyword and value against the keyword table
//     (keywords.go, value.go), records what each level sets, and warns
//     about DRBD keywords twinblock does not implement;
//   - build.go's resolve then produces the Config: each Resource with its
//     effective sections, its two data Hosts and, for a quorum resource
//     (options { quorum majority; }), its diskless Witness.
//
// # Inheritance
//
// Options (net, disk, startup, handlers, options) set in common are
// inherited by every resource keyword by keyword: a keyword set in the
// resource wins, the others of common's section remain. protocol follows
// the same rule (default C). DRBD 8.3's syncer section is accepted and
// each of its keywords moved where 8.4 keeps it (rate is disk's
// resync-rate, csums-alg is net's, ...). Placement (device, disk,
// meta-disk, nbd-listen) is resolved per host, the most specific level
// winning: on HOST, then the resource, then common, then global (disk is
// not allowed in global). `volume 0 { }` is read as if its statements
// were written in the enclosing section; any other volume is an error.
// Setting a keyword twice at one level is an error, aliases included.
//
// # What is validated when
//
// Everything is checked by Load and Parse, which return the first problem
// as an *Error naming file and line: syntax, keywords, values (ranges in
// DRBD's units, enums, sizes, addresses, devices, meta-disks), and then
// the whole-configuration rules (two hosts per resource, addresses and
// disks present, addresses and minors not reused, host names in
// after-sb-0pri and become-primary-on). A loaded Config is therefore
// valid, and its accessors cannot fail: a Section's accessors only panic
// when asked for a keyword their section does not have, or as the wrong
// kind, which is a programming error.
//
// # No keyword is accepted silently
//
// A keyword the table does not mark implemented warns where it is
// written ("not implemented by twinblock; ignored"); so does the one
// value of an implemented keyword that twinblock does not support
// (allow-two-primaries yes, use-rle no, usage-count yes). Every
// implemented keyword must have a consumer: ReadLog records what the
// program reads through the Section accessors and the placement
// resolution, and pkg/node's TestEveryKeywordIsReadOrWarned runs the
// resource's code paths and fails on an implemented keyword nothing read.
//
// Values are kept normalized: sizes in bytes (a bare number takes the
// keyword's DRBD unit: KiB/s for rates, sectors for c-fill-target), times
// in their DRBD unit (Section.Duration converts), booleans as yes/no. A
// Config never changes after Load; Dump writes it back as drbd.conf text
// that Parse reads to an equal Config.
package config
