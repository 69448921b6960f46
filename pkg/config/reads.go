package config

import (
	"sync"
	"sync/atomic"
)

// KeywordInfo describes one keyword of the table, for tests and tools
// outside this package.
type KeywordInfo struct {
	Section string // global, resource, on, volume, net, disk, syncer, startup, handlers, options
	Name    string
	// Alias: the keyword only sets another one (flexible-meta-disk,
	// no-disk-flushes, the syncer section's keywords, ...).
	Alias bool
	// Implemented: twinblock acts on the keyword (of an alias: on the
	// keyword it sets). One that is not is accepted with a warning.
	Implemented bool
	// Default is DRBD's default as written in drbd.conf ("" = none).
	Default string
}

// Keywords lists the keyword table, in its order (docs/configuration.md).
func Keywords() []KeywordInfo {
	out := make([]KeywordInfo, 0, len(keywords.list))
	for _, k := range keywords.list {
		out = append(out, KeywordInfo{Section: k.section, Name: k.name, Alias: k.alias != "",
			Implemented: keywords.resolve(k).implemented, Default: k.def})
	}
	return out
}

// ReadLog records which keywords the program consumed while it was
// recording: those a Section accessor was asked for, those the
// resolution of a host's placement consulted (at every level it looked
// at), and those whose unsupported value the loader checked
// (allow-two-primaries, use-rle, usage-count). Validation that only
// rejects a bad value (the host names of become-primary-on) is not a
// read.
//
// It exists for the test that no implemented keyword goes unread
// (pkg/node's TestEveryKeywordIsReadOrWarned): a keyword the table marks
// implemented must be read by some code path, or warned about.
type ReadLog struct {
	mu   sync.Mutex
	read map[*keyword]bool
}

// activeReads is the ReadLog recording now, if any.
var activeReads atomic.Pointer[ReadLog]

// RecordReads starts recording reads into a new ReadLog, replacing any
// that was recording, until its Stop. Reads by every goroutine of the
// process are recorded.
func RecordReads() *ReadLog {
	l := &ReadLog{read: map[*keyword]bool{}}
	activeReads.Store(l)
	return l
}

// Stop ends the recording (if l is still the one recording).
func (l *ReadLog) Stop() { activeReads.CompareAndSwap(l, nil) }

// Read reports whether the keyword name of section was read; an alias
// counts as read when the keyword it sets was.
func (l *ReadLog) Read(section, name string) bool {
	kw := keywords.lookup(section, name)
	if kw == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.read[keywords.resolve(kw)]
}

// noteRead records kw in the active ReadLog, if there is one.
func noteRead(kw *keyword) {
	l := activeReads.Load()
	if l == nil || kw == nil {
		return
	}
	l.mu.Lock()
	l.read[kw] = true
	l.mu.Unlock()
}
