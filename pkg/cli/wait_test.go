package cli

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/status"
)

// TestWaitTimeout: which startup timeout wait-connect and wait-sync
// apply: outdated-wfc-timeout to an Outdated disk, degr-wfc-timeout to a
// node whose bitmap marks blocks (it went on without its peer),
// wfc-timeout otherwise.
func TestWaitTimeout(t *testing.T) {
	cfg, err := config.Parse("w.conf", []byte(`resource r0 {
  startup { wfc-timeout 30; degr-wfc-timeout 60; outdated-wfc-timeout 90; }
  on a { address 127.0.0.1:7789; disk a.img; }
  on b { address 127.0.0.2:7789; disk b.img; }
}
`))
	require.NoError(t, err)
	require.Empty(t, cfg.Warnings)
	res := cfg.Resources[0]
	for _, tc := range []struct {
		name string
		s    status.Resource
		want time.Duration
		key  string
	}{
		{"clean", status.Resource{Disk: "UpToDate"}, 30 * time.Second, "wfc-timeout"},
		{"degraded", status.Resource{Disk: "UpToDate", OutOfSync: 4096}, 60 * time.Second, "degr-wfc-timeout"},
		{"outdated", status.Resource{Disk: "Outdated", OutOfSync: 4096}, 90 * time.Second, "outdated-wfc-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, key := waitTimeout(res, tc.s)
			assert.Equal(t, tc.want, d)
			assert.Equal(t, tc.key, key)
		})
	}
}
