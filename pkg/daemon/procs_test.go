package daemon

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/twinblock/twinblock/pkg/status"
)

// TestAdaptProcs: one P per open NBD session and per running resync, at
// least one and at most the CPUs; a fixed --procs wins; GOMAXPROCS in the
// environment is left alone.
func TestAdaptProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	ncpu := runtime.NumCPU()
	syncing := status.Resource{Sync: &status.SyncProgress{Total: 1}}
	tests := []struct {
		name  string
		procs int
		env   bool
		rs    []status.Resource
		want  int
	}{
		{name: "idle", rs: []status.Resource{{}}, want: 1},
		{name: "no resource", want: 1},
		{name: "one client", rs: []status.Resource{{NBDClients: 1}}, want: 1},
		{name: "two clients and a resync", rs: []status.Resource{{NBDClients: 2}, syncing}, want: min(3, ncpu)},
		{name: "many clients", rs: []status.Resource{{NBDClients: 64}}, want: ncpu},
		{name: "fixed", procs: 2, rs: []status.Resource{{NBDClients: 64}}, want: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &Daemon{opts: Options{Procs: tc.procs}}
			d.adaptProcs(tc.rs)
			assert.Equal(t, tc.want, runtime.GOMAXPROCS(0))
		})
	}
	runtime.GOMAXPROCS(3)
	(&Daemon{envProcs: true}).adaptProcs([]status.Resource{{NBDClients: 1}})
	assert.Equal(t, 3, runtime.GOMAXPROCS(0), "GOMAXPROCS from the environment stays")
}
