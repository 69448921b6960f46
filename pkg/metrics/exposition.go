package metrics

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Label is one name="value" pair of a sample.
type Label struct{ Name, Value string }

// Exposition gathers samples by family and writes them in the Prometheus
// text format: families in the order first added, each with its HELP and
// TYPE lines and all its samples together, whatever order they were added
// in.
type Exposition struct {
	order    []string
	families map[string]*family
}

type family struct {
	help, typ string
	lines     strings.Builder
}

// NewExposition returns an empty exposition.
func NewExposition() *Exposition { return &Exposition{families: map[string]*family{}} }

func (e *Exposition) family(name, help, typ string) *family {
	f, ok := e.families[name]
	if !ok {
		f = &family{help: help, typ: typ}
		e.families[name] = f
		e.order = append(e.order, name)
	}
	return f
}

// Gauge adds one sample of the gauge family name.
func (e *Exposition) Gauge(name, help string, v float64, labels ...Label) {
	e.sample(e.family(name, help, "gauge"), name, v, labels)
}

// Counter adds one sample of the counter family name.
func (e *Exposition) Counter(name, help string, v float64, labels ...Label) {
	e.sample(e.family(name, help, "counter"), name, v, labels)
}

// Enum adds drbd-reactor's form of an enumeration: one gauge sample per
// possible state, labelled name=state, 1 for the current one and 0 for
// the others. A current state outside states gets its own sample.
func (e *Exposition) Enum(name, help string, states []string, current string, labels ...Label) {
	f := e.family(name, help, "gauge")
	seen := false
	for _, s := range states {
		v := 0.0
		if s == current {
			v, seen = 1, true
		}
		e.sample(f, name, v, append(labels[:len(labels):len(labels)], Label{name, s}))
	}
	if !seen && current != "" {
		e.sample(f, name, 1, append(labels[:len(labels):len(labels)], Label{name, current}))
	}
}

// Histogram adds one histogram (its _bucket, _sum and _count samples) to
// the histogram family name.
func (e *Exposition) Histogram(name, help string, h HistogramSnapshot, labels ...Label) {
	f := e.family(name, help, "histogram")
	for i, b := range h.Bounds {
		e.sample(f, name+"_bucket", float64(h.Cumulative[i]), append(labels[:len(labels):len(labels)], Label{"le", formatFloat(b)}))
	}
	e.sample(f, name+"_bucket", float64(h.Count), append(labels[:len(labels):len(labels)], Label{"le", "+Inf"}))
	e.sample(f, name+"_sum", h.Sum, labels)
	e.sample(f, name+"_count", float64(h.Count), labels)
}

func (e *Exposition) sample(f *family, name string, v float64, labels []Label) {
	f.lines.WriteString(name)
	if len(labels) > 0 {
		f.lines.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				f.lines.WriteByte(',')
			}
			f.lines.WriteString(l.Name + `="` + escapeLabel(l.Value) + `"`)
		}
		f.lines.WriteByte('}')
	}
	f.lines.WriteString(" " + formatFloat(v) + "\n")
}

// WriteTo writes the exposition.
func (e *Exposition) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	for _, name := range e.order {
		f := e.families[name]
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(f.help), name, f.typ)
		b.WriteString(f.lines.String())
	}
	n, err := io.WriteString(w, b.String())
	if err != nil {
		return int64(n), fmt.Errorf("metrics: %w", err)
	}
	return int64(n), nil
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// escapeLabel escapes a label value as the text format wants: backslash,
// double quote and newline.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// escapeHelp escapes a HELP text: backslash and newline.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}
