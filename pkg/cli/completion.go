package cli

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/pkg/config"
)

// Shell completion. cobra's own `completion bash|zsh|fish|powershell`
// verb writes the scripts (make install puts them where each shell looks);
// the scripts ask the binary through cobra's hidden `__complete` verb,
// and the functions here answer it from the configuration file that
// --config names: resource names and `all` for the verbs that take a
// resource, host names for --node. A configuration that does not load
// completes nothing (its errors stay out of the shell's way).

// addResourceCompletion walks the command tree under root, once every verb
// is added, and gives each verb whose first argument is a resource (its
// Use names RES or RESOURCE there, as "up RESOURCE|all", "status
// [RESOURCE|all]" or "create-md RES") a completion of the resource names
// of --config, plus `all` unless another argument follows the resource
// (restore-discarded RESOURCE FILE.img); the arguments after the resource
// complete as files. A verb that has a ValidArgsFunction of its own keeps
// it. It also completes --node with the configuration's host names.
func addResourceCompletion(root *cobra.Command, g *globals) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c == root || c.ValidArgsFunction != nil {
			return
		}
		if isResource, more := resourceArg(c.Use); isResource {
			c.ValidArgsFunction = completeResources(g, !more)
		}
	}
	walk(root)
	// An error here means the flag is missing or already has a function:
	// either way there is nothing to add.
	_ = root.RegisterFlagCompletionFunc("node", completeHosts(g))
}

// resourceArg reads a verb's Use line: whether its first argument is a
// resource, and whether more arguments follow it. Flags ("[--force]") and
// their values ("--disk PATH", "[--listen ADDR]") are not arguments.
func resourceArg(use string) (isResource, more bool) {
	words := strings.Fields(use)
	var args []string
	for i := 1; i < len(words); i++ { // words[0] is the verb
		w := words[i]
		if strings.HasPrefix(strings.TrimLeft(w, "["), "-") {
			if !strings.HasSuffix(w, "]") && i+1 < len(words) && isPlaceholder(words[i+1]) {
				i++ // the flag's value
			}
			continue
		}
		args = append(args, w)
	}
	if len(args) == 0 {
		return false, false
	}
	name, _, _ := strings.Cut(strings.Trim(args[0], "[]"), "|")
	return name == "RES" || name == "RESOURCE", len(args) > 1
}

// isPlaceholder tells an upper-case word of a Use line ("PATH", "ADDR]").
func isPlaceholder(w string) bool {
	w = strings.Trim(w, "[]")
	return w != "" && w == strings.ToUpper(w)
}

// completeResources completes a verb's first argument with the resource
// names of --config (and `all` with withAll); later arguments complete as
// files.
func completeResources(g *globals, withAll bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveDefault
		}
		cfg, err := g.loadConfig(func(string) {})
		if err != nil {
			cobra.CompDebugln("twinblock: "+err.Error(), true)
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, r := range cfg.Resources {
			names = append(names, r.Name)
		}
		if withAll {
			names = append(names, "all")
		}
		return withPrefix(names, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeHosts completes --node with the host names of --config's `on`
// sections, each once.
func completeHosts(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		cfg, err := g.loadConfig(func(string) {})
		if err != nil {
			cobra.CompDebugln("twinblock: "+err.Error(), true)
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		seen := map[string]bool{}
		var names []string
		for _, r := range cfg.Resources {
			for _, h := range []*config.Host{r.Hosts[0], r.Hosts[1], r.Witness} {
				if h != nil && !seen[h.Name] {
					seen[h.Name] = true
					names = append(names, h.Name)
				}
			}
		}
		return withPrefix(names, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// withPrefix keeps the names that start with prefix, as the shells
// expect of a completion function.
func withPrefix(names []string, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}
