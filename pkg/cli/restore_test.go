package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/nbd"
	"github.com/twinblock/twinblock/pkg/disk"
)

// restoreFixture serves a Mem disk as export r0 on a loopback port and
// writes a config naming it as host l0's nbd-listen.
func restoreFixture(t *testing.T, size int64) (conf, dir string, mem *disk.Mem) {
	t.Helper()
	dir = t.TempDir()
	mem = disk.NewMem(size, disk.MemOptions{})
	srv, err := nbd.NewServer(nbd.Options{Catalog: nbd.NewStaticCatalog(&nbd.Export{Name: "r0", Device: mem})})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	conf = filepath.Join(dir, "twinblock.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`resource r0 {
  on l0 { disk %s/l0.img; address 127.0.0.1:7790; meta-disk internal; nbd-listen 0.0.0.0:%s; }
  on l1 { disk /dev/sdb1; address 127.0.0.2:7790; meta-disk internal; }
}
`, dir, port)), 0o600))
	return conf, dir, mem
}

// writeBackup writes an image of size bytes holding block b's content
// fill(b) for the listed blocks, and its index text.
func writeBackup(t *testing.T, dir string, size int64, blocks []int64, index string) string {
	t.Helper()
	img := filepath.Join(dir, "r0-discarded-20240101T000000Z.img")
	f, err := os.Create(img)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	for _, b := range blocks {
		_, err := f.WriteAt(bytes.Repeat([]byte{byte(b + 1)}, 4096), b*4096)
		require.NoError(t, err)
	}
	require.NoError(t, f.Close())
	require.NoError(t, os.WriteFile(img+".blocks", []byte(index), 0o600))
	return img
}

func TestRestoreDiscarded(t *testing.T) {
	const size = 64 * 4096
	conf, dir, mem := restoreFixture(t, size)
	verb := func(args ...string) (int, string, string) {
		return runCLI(append([]string{"-c", conf, "--node", "l0", "restore-discarded"}, args...)...)
	}
	img := writeBackup(t, dir, size, []int64{3, 4, 10}, "# twinblock backup-discarded v1: test\n12288 8192\n40960 4096\ncomplete\n")

	rc, out, errs := verb("r0", img)
	require.Equal(t, 0, rc, errs)
	assert.Equal(t, fmt.Sprintf("restored 3 blocks (12288 bytes) from %s\n", img), out)
	data := mem.Bytes()
	for b := int64(0); b < 64; b++ {
		want := make([]byte, 4096)
		if b == 3 || b == 4 || b == 10 {
			want = bytes.Repeat([]byte{byte(b + 1)}, 4096)
		}
		assert.Equal(t, want, data[b*4096:(b+1)*4096], "block %d", b)
	}

	for _, tc := range []struct {
		name, index string
		imgSize     int64
		args        []string
		err         string
	}{
		{name: "incomplete", index: "# h\n12288 4096\n", err: "is incomplete (no \"complete\" line"},
		{name: "malformed", index: "# h\n12288 4096\n12288 x\ncomplete\n", err: ".img.blocks:3: \"12288 x\": length \"x\""},
		{name: "beyond the image", index: "# h\n262144 4096\ncomplete\n", err: "ends beyond the 262144 bytes"},
		{name: "size mismatch", index: "# h\n0 4096\ncomplete\n", imgSize: size + 4096, err: "holds 266240 bytes, the export 262144"},
		{name: "all", index: "complete\n", args: []string{"all"}, err: "one resource, not all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sz := tc.imgSize
			if sz == 0 {
				sz = size
			}
			img := writeBackup(t, t.TempDir(), sz, nil, tc.index)
			args := tc.args
			if args == nil {
				args = []string{"r0"}
			}
			rc, _, errs := verb(append(args, img)...)
			assert.Equal(t, 1, rc)
			assert.Contains(t, errs, tc.err)
			assert.Equal(t, 1, bytes.Count([]byte(errs), []byte("\n")), "one line: %q", errs)
		})
	}

	t.Run("incomplete with --force", func(t *testing.T) {
		img := writeBackup(t, t.TempDir(), size, []int64{20}, "# h\n81920 4096\n")
		rc, out, errs := verb("r0", img, "--force")
		require.Equal(t, 0, rc, errs)
		assert.Contains(t, out, "restored 1 blocks (4096 bytes)")
		assert.Equal(t, bytes.Repeat([]byte{21}, 4096), mem.Bytes()[20*4096:21*4096])
	})

	t.Run("no index", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "none.img")
		rc, _, errs := verb("r0", img)
		assert.Equal(t, 1, rc)
		assert.Contains(t, errs, "no index "+img+".blocks")
	})
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.2:10809":   "127.0.0.2:10809",
		"0.0.0.0:10809":     "127.0.0.1:10809",
		":10809":            "127.0.0.1:10809",
		"[::]:10809":        "[::1]:10809",
		"unix:/run/x.sock":  "unix:/run/x.sock",
		"node1.example:999": "node1.example:999",
	} {
		assert.Equal(t, want, dialAddr(in), in)
	}
}
