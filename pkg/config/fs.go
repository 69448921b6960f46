package config

import (
	"os"
	"path/filepath"
	"strings"
)

// fileSystem is what includes read through: the real one for Load and
// Parse, an in-memory one in the fuzz test so that fuzzed include
// patterns cannot wander over the machine.
type fileSystem interface {
	ReadFile(name string) ([]byte, error)
	// Glob returns the names matching pattern, sorted, as filepath.Glob.
	Glob(pattern string) ([]string, error)
	// Canonical names a file for cycle detection: the same file gets the
	// same name however it was reached.
	Canonical(name string) string
}

type osFS struct{}

func (osFS) ReadFile(name string) ([]byte, error)  { return os.ReadFile(name) }
func (osFS) Glob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

func (osFS) Canonical(name string) string {
	abs, err := filepath.Abs(name)
	if err != nil {
		return filepath.Clean(name)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real
	}
	return abs
}

// hasGlobMeta reports whether pattern has glob(3) wildcards.
func hasGlobMeta(pattern string) bool { return strings.ContainsAny(pattern, "*?[") }
