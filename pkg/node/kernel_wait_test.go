package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestAwaitSessions: the wait after a kernel device's detach returns once
// the export's sessions are down to the other clients; past its bound a
// plain demotion fails saying the kernel's session is still open, a
// forced one goes ahead; an error or a cancelled context ends it.
func TestAwaitSessions(t *testing.T) {
	errInspect := errors.New("resource stopped")
	tests := []struct {
		name    string
		counts  []int // successive answers; the last repeats
		err     error
		others  int
		force   bool
		cancel  bool
		wantErr string // "" none
		wantIs  error
	}{
		{name: "gone at once", counts: []int{0}},
		{name: "gone after a few polls", counts: []int{1, 1, 1, 0}},
		{name: "down to the other clients", counts: []int{3, 2}, others: 2},
		{name: "still open: refused", counts: []int{1}, wantErr: "its NBD session is still open on the export after 50ms (1 sessions, 0 other clients)"},
		{name: "still open, forced: goes ahead", counts: []int{1}, force: true},
		{name: "inspect fails", counts: []int{1}, err: errInspect, wantIs: errInspect},
		{name: "context cancelled", counts: []int{1}, cancel: true, wantIs: context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tc.cancel {
				cancel()
			}
			calls := 0
			sessions := func() (int, error) {
				n := tc.counts[min(calls, len(tc.counts)-1)]
				calls++
				return n, tc.err
			}
			start := time.Now()
			err := awaitSessions(ctx, sessions, tc.others, 50*time.Millisecond, tc.force)
			if tc.force {
				assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "a forced demotion waits its bound first")
			}
			switch {
			case tc.wantIs != nil:
				assert.ErrorIs(t, err, tc.wantIs)
			case tc.wantErr != "":
				assert.ErrorContains(t, err, tc.wantErr)
			default:
				assert.NoError(t, err)
				assert.GreaterOrEqual(t, calls, len(tc.counts), "returned before the sessions left")
			}
		})
	}
}
