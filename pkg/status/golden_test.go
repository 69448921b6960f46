package status

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestGolden renders every scenario in the four forms and compares them
// with testdata/<scenario>.{proc,status,status-verbose,json}.
func TestGolden(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			var proc, st, stv, js bytes.Buffer
			require.NoError(t, WriteProcDRBD(&proc, "0.1.0", sc.rs))
			require.NoError(t, WriteStatus(&st, sc.rs, false))
			require.NoError(t, WriteStatus(&stv, sc.rs, true))
			require.NoError(t, WriteJSON(&js, sc.rs))
			golden(t, sc.name+".proc", proc.String())
			golden(t, sc.name+".status", st.String())
			golden(t, sc.name+".status-verbose", stv.String())
			golden(t, sc.name+".json", js.String())
		})
	}
}
