package fsm

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReconfigure: adjust's tunables change on a StandAlone node; on one
// that is connecting only on-io-error does; the identity never.
func TestReconfigure(t *testing.T) {
	base := Config{Name: "r0", Self: "a", Peer: "b", Dialer: true, NewUUID: func() uint64 { return 0x100 }}
	tests := []struct {
		name       string
		connecting bool
		change     func(*Config)
		want       error
	}{
		{name: "ping-int while StandAlone", change: func(c *Config) { c.PingInt = 50 }},
		{name: "the protocol while StandAlone", change: func(c *Config) { c.Protocol = 'A' }},
		{name: "ping-int while connecting", connecting: true, change: func(c *Config) { c.PingInt = 50 }, want: ErrReconfigureConnected},
		{name: "on-io-error while connecting", connecting: true, change: func(c *Config) { c.OnIOError = OnErrorPassOn }},
		{name: "nothing while connecting", connecting: true, change: func(*Config) {}},
		{name: "the peer's name", change: func(c *Config) { c.Peer = "c" }, want: ErrReconfigureIdentity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := New(base)
			if tc.connecting {
				n.Step(Connect{})
				require.NotEqual(t, StandAlone, n.State().Conn)
			}
			before := n.State()
			next := base
			tc.change(&next)
			err := n.Reconfigure(next)
			require.ErrorIs(t, err, tc.want)
			assert.Equal(t, before, n.State(), "the state does not change")
			if tc.want == nil {
				assert.Equal(t, withDefaults(next).PingInt, n.cfg.PingInt)
				assert.Equal(t, withDefaults(next).Protocol, n.cfg.Protocol)
				assert.Equal(t, next.OnIOError, n.cfg.OnIOError)
			}
		})
	}
}
