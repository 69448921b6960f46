package cli

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestAdaptProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	hook := adaptProcs(4)
	assert.Equal(t, 1, runtime.GOMAXPROCS(0), "no client yet: one P")
	for _, tc := range []struct{ sessions, want int }{
		{1, 1}, {3, 3}, {4, 4}, {9, 4}, {2, 2}, {0, 1},
	} {
		hook(tc.sessions)
		assert.Equal(t, tc.want, runtime.GOMAXPROCS(0), "%d sessions", tc.sessions)
	}
}
