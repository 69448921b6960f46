package config

import (
	"fmt"
	"strings"
)

// Pos is where something was written: a file name (as given to Load, or
// as an include's glob produced it) and a 1-based line number.
type Pos struct {
	File string
	Line int
}

// String gives "file:line".
func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Warning is something accepted but worth telling the user: a DRBD keyword
// twinblock does not implement, a setting it ignores, a file included twice.
type Warning struct {
	Pos Pos
	Msg string
}

// String gives "file:line: msg".
func (w Warning) String() string { return w.Pos.String() + ": " + w.Msg }

// Error is a configuration error at a position. Every error Load and Parse
// return for a bad configuration is an *Error (use errors.As); an I/O error
// reading an included file is wrapped in one and can be reached with
// errors.Is / errors.As through Unwrap.
type Error struct {
	Pos Pos
	Msg string
	Err error // the underlying error, if any (e.g. from reading an include)
}

// Error gives "file:line: msg".
func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Unwrap returns the underlying error, if any.
func (e *Error) Unwrap() error { return e.Err }

func errorf(pos Pos, format string, args ...any) *Error {
	return &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// quoteList renders names as `a, b, c` for messages.
func quoteList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
