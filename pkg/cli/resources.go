package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/twinblock/twinblock/pkg/config"
)

// target is one resource as this node sees it.
type target struct {
	res  *config.Resource
	self *config.Host
	cfg  *config.Config
}

// nodeName is --node, or the hostname as DRBD matches `uname -n`.
func (g *globals) nodeName() (string, error) {
	if g.node != "" {
		return g.node, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("no --node given and the hostname is unknown: %w", err)
	}
	return h, nil
}

// loadConfig loads --config and reports its warnings on stderr.
func (g *globals) loadConfig(warn func(string)) (*config.Config, error) {
	cfg, err := config.Load(g.config)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings {
		warn("warning: " + w.String())
	}
	return cfg, nil
}

// targets resolves a resource argument ("all" means every resource of
// the configuration) to this node's side of each.
func (g *globals) targets(name string, warn func(string)) ([]target, error) {
	cfg, err := g.loadConfig(warn)
	if err != nil {
		return nil, err
	}
	node, err := g.nodeName()
	if err != nil {
		return nil, err
	}
	var list []*config.Resource
	if name == "all" {
		list = cfg.Resources
		if len(list) == 0 {
			return nil, fmt.Errorf("%s defines no resource", g.config)
		}
	} else {
		r, err := cfg.Resource(name)
		if err != nil {
			return nil, err
		}
		list = []*config.Resource{r}
	}
	var out []target
	for _, r := range list {
		self, _, err := r.Host(node)
		if err != nil {
			return nil, err
		}
		out = append(out, target{res: r, self: self, cfg: cfg})
	}
	return out, nil
}

// drbdOldOrder rewrites DRBD's old argument order, where options come
// before the verb after a "--" (twinblock -- --overwrite-data-of-peer
// primary r0), into cobra's (primary --overwrite-data-of-peer r0).
func drbdOldOrder(args []string) []string {
	takesValue := map[string]bool{"-c": true, "--config": true, "--node": true, "--control": true}
	// Global flags may come first (twinblock -c FILE -- --force primary r0).
	start := 0
	for start < len(args) && args[start] != "--" && strings.HasPrefix(args[start], "-") {
		if takesValue[args[start]] {
			start++
		}
		start++
	}
	if start >= len(args) || args[start] != "--" {
		return args
	}
	prefix := args[:start:start]
	rest := args[start+1:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if len(a) > 0 && a[0] == '-' {
			if takesValue[a] {
				i++
			}
			continue
		}
		out := append(append(prefix, a), rest[:i]...)
		return append(out, rest[i+1:]...)
	}
	return append(prefix, rest...)
}
