package status

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "status")

	require.NoError(t, WriteFileAtomic(path, []byte("one\n"), 0o644))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "one\n", string(got))

	require.NoError(t, WriteFileAtomic(path, []byte("two, longer\n"), 0o444))
	got, err = os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "two, longer\n", string(got))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o444), fi.Mode().Perm(), "perm applies exactly, whatever the umask")

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")
}

func TestWriteFileAtomicErrors(t *testing.T) {
	dir := t.TempDir()

	err := WriteFileAtomic(filepath.Join(dir, "missing", "status"), []byte("x"), 0o644)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.True(t, strings.HasPrefix(err.Error(), "status: "), err.Error())

	// Renaming a file over a non-empty directory fails: the temporary file
	// must go, the directory must stay.
	target := filepath.Join(dir, "busy")
	require.NoError(t, os.MkdirAll(filepath.Join(target, "child"), 0o755))
	err = WriteFileAtomic(target, []byte("x"), 0o644)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "status: renaming "), err.Error())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	assert.Equal(t, "busy", entries[0].Name())
}

// TestWriteFileAtomicReadersSeeWholeFiles rewrites the file between two
// contents of different lengths while readers read it: every read returns
// one of them whole.
func TestWriteFileAtomicReadersSeeWholeFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status")
	a := bytes.Repeat([]byte("a"), 64<<10)
	b := bytes.Repeat([]byte("b"), 3)
	require.NoError(t, WriteFileAtomic(path, a, 0o644))

	const rounds = 200
	var wg sync.WaitGroup
	stop := make(chan struct{})
	bad := make(chan string, 1)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := os.ReadFile(path)
				if err != nil || !(bytes.Equal(got, a) || bytes.Equal(got, b)) {
					select {
					case bad <- string(got[:min(len(got), 16)]):
					default:
					}
					return
				}
			}
		}()
	}
	for i := range rounds {
		data := a
		if i%2 == 0 {
			data = b
		}
		require.NoError(t, WriteFileAtomic(path, data, 0o644))
	}
	close(stop)
	wg.Wait()
	select {
	case s := <-bad:
		t.Fatalf("a reader saw a partial or missing file: %q", s)
	default:
	}
}
