package disk

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFileAfterCloseTouchesNoOtherFile: every call on a closed File
// fails with ErrClosed, and none reaches the file that now has its
// descriptor number (the real-process torture suite saw EBADF from a
// stale number, R1b; a reused one would have been written).
func TestFileAfterCloseTouchesNoOtherFile(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, fill byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte{fill}, 1<<20), 0o600))
		return p
	}
	old, err := OpenFile(mk("old", 1), FileOptions{})
	require.NoError(t, err)
	oldFD := old.fd
	require.NoError(t, old.Close())
	victimPath := mk("victim", 7)
	victim, err := os.OpenFile(victimPath, os.O_RDWR, 0)
	require.NoError(t, err)
	defer victim.Close()
	t.Logf("old fd %d, victim fd %d", oldFD, victim.Fd())

	calls := []struct {
		name string
		call func() error
	}{
		{"write fua", func() error { return old.WriteAt(make([]byte, 4096), 0, true) }},
		{"flush", old.Flush},
		{"trim", func() error { return old.Trim(0, 65536, false) }},
		{"write zeroes", func() error { return old.WriteZeroes(0, 65536, false, false) }},
		{"write zeroes no hole", func() error { return old.WriteZeroes(0, 65536, true, false) }},
	}
	for _, c := range calls {
		require.ErrorIs(t, c.call(), ErrClosed, c.name)
	}
	got, err := os.ReadFile(victimPath)
	require.NoError(t, err)
	require.Equal(t, bytes.Repeat([]byte{7}, 1<<20), got, "the file that reused the descriptor is untouched")
}
