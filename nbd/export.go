package nbd

import (
	"errors"
	"sort"
	"sync"
)

// ErrUnknownExport is returned by a Catalog for a name it does not serve;
// the client gets NBD_REP_ERR_UNKNOWN (or, after NBD_OPT_EXPORT_NAME, a
// hard disconnect, which is all that option allows).
var ErrUnknownExport = errors.New("nbd: unknown export")

// Export is one named device offered by the server.
type Export struct {
	Name        string
	Description string
	Device      Device
	// ReadOnly exports refuse WRITE, TRIM and WRITE_ZEROES with EPERM even
	// when the device could write.
	ReadOnly bool
}

func (e *Export) readOnly() bool { return e.ReadOnly || e.Device.ReadOnly() }

// Catalog resolves export names during the handshake. Lookup may refuse a
// known export with any other error (a Secondary refusing clients, say):
// the client then gets NBD_REP_ERR_POLICY carrying err's text.
// Implementations must be safe for concurrent use.
type Catalog interface {
	Lookup(name string) (*Export, error)
	List() []*Export
}

// StaticCatalog serves a fixed set of exports. The empty name (the NBD
// "default export") selects the export named Default, or the only export
// when there is just one.
type StaticCatalog struct {
	mu      sync.RWMutex
	exports map[string]*Export
	Default string
}

// NewStaticCatalog returns a catalog of the given exports.
func NewStaticCatalog(exports ...*Export) *StaticCatalog {
	c := &StaticCatalog{exports: make(map[string]*Export, len(exports))}
	for _, e := range exports {
		c.exports[e.Name] = e
	}
	return c
}

// Lookup implements Catalog.
func (c *StaticCatalog) Lookup(name string) (*Export, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e, ok := c.exports[name]; ok {
		return e, nil
	}
	if name == "" {
		if e, ok := c.exports[c.Default]; ok {
			return e, nil
		}
		if len(c.exports) == 1 {
			for _, e := range c.exports {
				return e, nil
			}
		}
	}
	return nil, ErrUnknownExport
}

// List implements Catalog, sorted by name.
func (c *StaticCatalog) List() []*Export {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*Export, 0, len(c.exports))
	for _, e := range c.exports {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
