package config

import (
	"fmt"
	"os"
	"time"
)

// defaultNBDListen is where a resource is served over NBD unless
// nbd-listen says otherwise.
const defaultNBDListen = "127.0.0.1:10809"

// Config is a loaded, validated configuration.
type Config struct {
	Files     []string    // every file read, in order (the main file first)
	Global    Section     // the global section
	Resources []*Resource // in file order
	Warnings  []Warning   // what was accepted but is ignored, in file order
}

// Resource is one resource, fully resolved: common's sections merged in
// (a keyword set in the resource wins over the same keyword in common),
// DRBD 8.3 syncer keywords moved where 8.4 keeps them, and both hosts'
// placement inherited from the resource, common and global levels.
type Resource struct {
	Name     string
	Pos      Pos
	Protocol string // "A", "B" or "C" (default)
	// Net, Disk, Startup, Handlers and Options are the effective sections.
	// Net has no "protocol": it is in Protocol.
	Net, Disk, Startup, Handlers, Options Section
	Hosts                                 [2]*Host // the data hosts, in file order
	// Witness is the diskless third host of a quorum resource (options
	// { quorum majority; }); nil without quorum.
	Witness *Host
}

// Quorum reports whether the resource runs with a quorum group (the two
// data hosts and the witness).
func (r *Resource) Quorum() bool { return r.Witness != nil }

// IsWitness reports whether node is the resource's witness.
func (r *Resource) IsWitness(node string) bool { return r.Witness != nil && r.Witness.Name == node }

// Host is one `on HOST` section of a resource, effective values.
type Host struct {
	Name    string
	Pos     Pos
	Address string // "host:port", IPv6 as "[addr]:port"
	Disk    string // the backing disk; "" for `disk none` (diskless)
	// Device is the device as written (with drbdadm's /dev/ completion);
	// "" if none was given or it was given as `device minor N`.
	Device string
	// NBDDevice is the kernel NBD device this host attaches its export to
	// when Primary: Device with /dev/drbdN mapped to /dev/nbdN; "" if no
	// device was given.
	NBDDevice string
	// Minor is the device's number (from /dev/drbdN, /dev/nbdN or minor
	// N), or else the resource's index in the configuration.
	Minor     int
	MetaDisk  MetaDisk // default internal
	NBDListen string   // default 127.0.0.1:10809
	// QuorumAddress is where this host's member of the quorum group
	// listens (quorum resources only; default: Address's host, port
	// 7800).
	QuorumAddress string
}

// Load reads the configuration file at path and every file it includes
// (relative include patterns are resolved against the including file's
// directory), and validates all of it. A problem in the configuration is
// returned as an *Error naming file and line.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return load(osFS{}, path, src)
}

// Parse is Load for a configuration already in memory; name is used in
// positions, and includes are read from disk relative to name's directory.
func Parse(name string, src []byte) (*Config, error) {
	return load(osFS{}, name, src)
}

func load(fs fileSystem, name string, src []byte) (*Config, error) {
	b := newBuilder(fs)
	if err := b.file(name, src); err != nil {
		return nil, err
	}
	return b.resolve()
}

// WaitTimeout is the startup section's timeout for wait-connect and
// wait-sync, and its keyword: outdated-wfc-timeout for a node whose disk
// is Outdated, degr-wfc-timeout for one that went on without its peer
// (degraded: its bitmap marks blocks), wfc-timeout otherwise; 0 waits
// for ever.
func (r *Resource) WaitTimeout(outdated, degraded bool) (time.Duration, string) {
	key := "wfc-timeout"
	switch {
	case outdated:
		key = "outdated-wfc-timeout"
	case degraded:
		key = "degr-wfc-timeout"
	}
	return time.Duration(r.Startup.Int(key)) * time.Second, key
}

// Resource returns the resource called name.
func (c *Config) Resource(name string) (*Resource, error) {
	names := make([]string, 0, len(c.Resources))
	for _, r := range c.Resources {
		if r.Name == name {
			return r, nil
		}
		names = append(names, r.Name)
	}
	file := "the configuration"
	if len(c.Files) > 0 {
		file = c.Files[0]
	}
	return nil, fmt.Errorf("config: resource %q is not defined in %s (resources: %s)", name, file, quoteList(names))
}

// Host returns the host section for node and the other one, its peer.
func (r *Resource) Host(node string) (self, peer *Host, err error) {
	switch node {
	case r.Hosts[0].Name:
		return r.Hosts[0], r.Hosts[1], nil
	case r.Hosts[1].Name:
		return r.Hosts[1], r.Hosts[0], nil
	}
	return nil, nil, fmt.Errorf("resource %s has no \"on %s\" section (hosts: %s, %s)", r.Name, node, r.Hosts[0].Name, r.Hosts[1].Name)
}
