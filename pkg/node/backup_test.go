package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/backup"
	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/meta"
)

// attachFixture is a resource r0 of host a with an 8 MiB backing file
// whose fresh metadata (internal) makes the disk Inconsistent, as a sync
// target's is until its resync completes.
func attachFixture(t *testing.T, backup string) (r *Resource, dir string, dataSize int64) {
	t.Helper()
	dir = t.TempDir()
	path := filepath.Join(dir, "a.img")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	require.NoError(t, os.Truncate(path, 8<<20))
	d, err := disk.OpenFile(path, disk.FileOptions{})
	require.NoError(t, err)
	l, err := meta.ComputeLayout(meta.InternalPlacement, d.Size(), d.Size(), meta.DefaultGranularity, meta.DefaultALExtents)
	require.NoError(t, err)
	_, err = meta.Format(d, l)
	require.NoError(t, err)
	require.NoError(t, d.Close())
	cfg, err := config.Parse("test.conf", []byte(fmt.Sprintf(`resource r0 {
  net { backup-discarded %s; }
  meta-disk internal;
  on a { address 127.0.0.1:7790; disk %s; }
  on b { address 127.0.0.2:7790; disk /dev/null; }
}
`, backup, path)))
	require.NoError(t, err)
	r, err = NewResource(cfg.Resources[0], "a", nil, nil)
	require.NoError(t, err)
	return r, dir, l.DataSize
}

// TestResourceResumesBackup: attaching an Inconsistent disk whose newest
// discarded-blocks index is incomplete (the daemon stopped during the
// resync that discards) re-arms that journal with its saved set; not so
// with backup-discarded no or a complete index. Detaching leaves it
// incomplete on disk.
func TestResourceResumesBackup(t *testing.T) {
	for _, tc := range []struct {
		name, backup, index string
		resumed             bool
	}{
		{"incomplete", "yes", "# h\n8192 8192\n", true},
		{"complete", "yes", "# h\n8192 8192\ncomplete\n", false},
		{"backup-discarded no", "no", "# h\n8192 8192\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, size := attachFixture(t, tc.backup)
			img := filepath.Join(dir, backup.FileName("r0", time.Now()))
			require.NoError(t, os.WriteFile(img, nil, 0o600))
			require.NoError(t, os.Truncate(img, size))
			require.NoError(t, os.WriteFile(backup.IndexPath(img), []byte(tc.index), 0o600))
			// An older, abandoned one is not the newest.
			old := filepath.Join(dir, backup.FileName("r0", time.Now().Add(-time.Hour)))
			require.NoError(t, os.WriteFile(backup.IndexPath(old), []byte("# h\n"), 0o600))

			ctx := context.Background()
			r.Start(ctx)
			defer r.Close()
			require.NoError(t, r.Do(ctx, fsm.AttachBegin{}))
			require.Equal(t, "Inconsistent", r.Status().Disk)
			armed, discard, blocks, ok := r.keeper.Armed()
			if !tc.resumed {
				assert.False(t, ok)
				return
			}
			require.True(t, ok)
			assert.True(t, discard)
			assert.Equal(t, img, armed)
			assert.EqualValues(t, 2, blocks)
			require.NoError(t, r.Do(ctx, fsm.Detach{}))
			_, _, _, ok = r.keeper.Armed()
			assert.False(t, ok)
			x, err := backup.ReadIndex(backup.IndexPath(img))
			require.NoError(t, err)
			assert.False(t, x.Complete, "still to be resumed")
		})
	}
}
