package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSectionDiff(t *testing.T) {
	parse := func(net string) Section {
		t.Helper()
		cfg, err := Parse("d.conf", []byte(`resource r0 {
	net { `+net+` }
	on a { address 127.0.0.1:7789; disk /tmp/a; meta-disk internal; }
	on b { address 127.0.0.2:7789; disk /tmp/b; meta-disk internal; }
}`))
		require.NoError(t, err)
		return cfg.Resources[0].Net
	}
	tests := []struct {
		name     string
		old, new string
		want     []string
	}{
		{"same", "ping-int 10; max-buffers 8000;", "max-buffers 8000; ping-int 10;", nil},
		{"changed", "ping-int 10;", "ping-int 5;", []string{"net { ping-int 10 -> 5 }"}},
		{"set and unset", "ping-int 10;", "max-buffers 8000;", []string{"net { max-buffers (default) -> 8000 }", "net { ping-int 10 -> (default) }"}},
		{"normalized values compare equal", "sndbuf-size 1M;", "sndbuf-size 1024K;", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range parse(tc.old).Diff(parse(tc.new)) {
				got = append(got, c.String())
			}
			assert.Equal(t, tc.want, got)
		})
	}
}
