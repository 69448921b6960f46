// Package flagset names the bits of a flag word, for the String methods
// of the wire's and the metadata's flag types.
package flagset

import (
	"fmt"
	"strings"
)

// Name is one flag and its name.
type Name[F ~uint32 | ~uint64] struct {
	Flag F
	Name string
}

// String lists the flags set in f by name, in the order of names, then
// any bits names does not know in hex, joined by sep; "none" if f is 0.
func String[F ~uint32 | ~uint64](f F, names []Name[F], sep string) string {
	var parts []string
	for _, n := range names {
		if f&n.Flag != 0 {
			parts = append(parts, n.Name)
			f &^= n.Flag
		}
	}
	if f != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint64(f)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, sep)
}
