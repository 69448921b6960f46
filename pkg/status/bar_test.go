package status

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestProgressBar(t *testing.T) {
	tests := []struct {
		name string
		r    Resource
		want string
	}{
		{"no resync", Resource{Name: "r0", Conn: "Connected"}, ""},
		{"half, 120 MiB/s", Resource{Name: "r0", Conn: "SyncSource", Sync: &SyncProgress{Total: 1 << 30, Left: 512 << 20,
			RecentBytes: 1200 << 20, RecentWindow: 10 * time.Second}},
			"r0 SyncSource [##########..........]  50.00%  120.0 MiB/s  eta 0:00:04"},
		{"start, no speed yet", Resource{Name: "r1", Conn: "SyncTarget", Sync: &SyncProgress{Total: 1 << 30, Left: 1 << 30}},
			"r1 SyncTarget [....................]   0.00%    0.0 MiB/s  eta -"},
		{"paused", Resource{Name: "r0", Conn: "PausedSyncT", PausedByUser: true, Sync: &SyncProgress{Total: 100, Left: 25}},
			"r0 PausedSyncT [###############.....]  75.00%    0.0 MiB/s  eta -  (paused)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, ProgressBar(tt.r, 20))
		})
	}
}
