package kdev

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAttachWithoutModule: a device node that does not exist (no nbd
// module) is ErrNoModule, which the caller turns into its one warning.
func TestAttachWithoutModule(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nbd0")
	_, err := Attach(context.Background(), missing, "127.0.0.1:1", "r0")
	require.ErrorIs(t, err, ErrNoModule)
	require.Contains(t, err.Error(), missing)
}

// TestAttachNotADevice: a file that opens but is no NBD device, with no
// server to reach, fails without claiming a missing module.
func TestAttachNotADevice(t *testing.T) {
	f := filepath.Join(t.TempDir(), "plain")
	require.NoError(t, os.WriteFile(f, nil, 0o600))
	_, err := Attach(context.Background(), f, "127.0.0.1:1", "r0")
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNoModule)
}
