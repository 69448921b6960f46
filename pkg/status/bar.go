package status

import (
	"fmt"
	"strings"
	"time"
)

// ProgressBar is the bar `twinblock status --watch` draws under a
// resource that resyncs or verifies: width cells of '#' done and '.'
// left, the percentage (DRBD 9's done:), the recent speed and the time
// to go, e.g.
//
//	r0 SyncSource [##########..........]  50.00%  120.0 MiB/s  eta 0:00:04
func ProgressBar(r Resource, width int) string {
	sp := r.Sync
	if sp == nil || sp.Total == 0 || width <= 0 {
		return ""
	}
	done := percentDone(*sp)
	cells := int(done / 100 * float64(width))
	cells = min(max(cells, 0), width)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s [%s%s] %6.2f%%  %5.1f MiB/s", r.Name, r.Conn,
		strings.Repeat("#", cells), strings.Repeat(".", width-cells), done, recentMiBps(*sp))
	if eta, ok := etaSeconds(*sp); ok {
		d := time.Duration(eta * float64(time.Second)).Round(time.Second)
		fmt.Fprintf(&b, "  eta %d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
	} else {
		b.WriteString("  eta -")
	}
	if r.PausedByUser || r.PausedByPeer {
		b.WriteString("  (paused)")
	}
	return b.String()
}
