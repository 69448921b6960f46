package config

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Dump writes the configuration as normalized drbd.conf text: the global
// section, then every resource fully resolved (common merged in, syncer
// keywords where 8.4 keeps them, each host's placement written out),
// keywords in table order, values normalized (sizes with the largest
// exact K/M/G suffix, yes/no spelled out, IPv6 with its family). Only
// what the configuration sets is written, not the defaults. Parse reads
// the text back to an equal configuration (positions and warnings aside).
func (c *Config) Dump(w io.Writer) error {
	bw := bufio.NewWriter(w)
	files := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, strings.Join(c.Files, ", "))
	fmt.Fprintf(bw, "# twinblock dump-config: %s, normalized; common is merged into each resource.\n", files)
	if len(c.Global.set) > 0 {
		bw.WriteString("\nglobal {\n")
		writeSettings(bw, "\t", c.Global)
		bw.WriteString("}\n")
	}
	for _, r := range c.Resources {
		fmt.Fprintf(bw, "\nresource %s {\n", quoteWord(r.Name))
		fmt.Fprintf(bw, "\tprotocol %s;\n", r.Protocol)
		for _, s := range []Section{r.Net, r.Disk, r.Startup, r.Handlers, r.Options} {
			if len(s.set) == 0 {
				continue
			}
			fmt.Fprintf(bw, "\t%s {\n", s.name)
			writeSettings(bw, "\t\t", s)
			bw.WriteString("\t}\n")
		}
		for _, h := range r.Hosts {
			writeHost(bw, h, r.Quorum())
		}
		if r.Witness != nil {
			writeHost(bw, r.Witness, true)
		}
		bw.WriteString("}\n")
	}
	return bw.Flush()
}

func writeSettings(w *bufio.Writer, indent string, s Section) {
	for _, st := range s.set {
		w.WriteString(indent)
		w.WriteString(st.kw.name)
		for _, word := range st.val.words {
			w.WriteByte(' ')
			w.WriteString(quoteWord(word))
		}
		w.WriteString(";\n")
	}
}

func writeHost(w *bufio.Writer, h *Host, quorum bool) {
	fmt.Fprintf(w, "\ton %s {\n", quoteWord(h.Name))
	if strings.HasPrefix(h.Address, "[") {
		fmt.Fprintf(w, "\t\taddress ipv6 %s;\n", quoteWord(h.Address))
	} else {
		fmt.Fprintf(w, "\t\taddress %s;\n", quoteWord(h.Address))
	}
	switch {
	case h.Device != "":
		fmt.Fprintf(w, "\t\tdevice %s;\n", quoteWord(h.Device))
	case h.NBDDevice != "":
		fmt.Fprintf(w, "\t\tdevice minor %d;\n", h.Minor)
	}
	if h.Disk == "" {
		w.WriteString("\t\tdisk none;\n")
	} else {
		fmt.Fprintf(w, "\t\tdisk %s;\n", quoteWord(h.Disk))
	}
	fmt.Fprintf(w, "\t\tmeta-disk %s;\n", quoteWord(h.MetaDisk.String()))
	fmt.Fprintf(w, "\t\tnbd-listen %s;\n", quoteWord(h.NBDListen))
	if quorum {
		if strings.HasPrefix(h.QuorumAddress, "[") {
			fmt.Fprintf(w, "\t\tquorum-address ipv6 %s;\n", quoteWord(h.QuorumAddress))
		} else {
			fmt.Fprintf(w, "\t\tquorum-address %s;\n", quoteWord(h.QuorumAddress))
		}
	}
	w.WriteString("\t}\n")
}

// quoteWord writes s as one word, in double quotes when it is empty or
// has a character the lexer would split or strip at.
func quoteWord(s string) string {
	needs := s == ""
	for i := 0; i < len(s) && !needs; i++ {
		needs = isSpecial(s[i]) || s[i] == '\\'
	}
	if !needs {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}
