package disk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const size = 1 << 20

func newFile(t *testing.T, n int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "d.img")
	require.NoError(t, os.WriteFile(p, nil, 0o600))
	require.NoError(t, os.Truncate(p, n))
	return p
}

// exercise runs the Disk contract on d (size bytes, writable).
func exercise(t *testing.T, d Disk) {
	t.Helper()
	fill := bytes.Repeat([]byte{0x5a}, 64<<10)
	require.NoError(t, d.WriteAt(fill, 0, false))
	require.NoError(t, d.WriteAt(fill, 64<<10, true))
	require.NoError(t, d.Flush())
	got := make([]byte, 128<<10)
	require.NoError(t, d.ReadAt(got, 0))
	assert.Equal(t, bytes.Repeat([]byte{0x5a}, 128<<10), got)

	for _, tc := range []struct {
		name string
		op   func() error
		off  int64
		n    int64
	}{
		{"trim", func() error { return d.Trim(4096, 8192, false) }, 4096, 8192},
		{"zeroes, may punch", func() error { return d.WriteZeroes(16384, 4096, false, false) }, 16384, 4096},
		{"zeroes, no hole, fua", func() error { return d.WriteZeroes(24576, 4096, true, true) }, 24576, 4096},
		{"zeroes, unaligned", func() error { return d.WriteZeroes(40000, 1000, false, false) }, 40000, 1000},
	} {
		require.NoError(t, tc.op(), tc.name)
		b := make([]byte, tc.n)
		require.NoError(t, d.ReadAt(b, tc.off))
		if tc.name == "trim" {
			// NBD leaves trimmed content unspecified; ours reads zeroes
			// on files and in memory, which is all we assert here.
			if f, ok := d.(*File); ok && f.blockDev {
				continue
			}
		}
		assert.Equal(t, make([]byte, tc.n), b, tc.name)
	}
	// Bytes around the zeroed ranges are untouched.
	b := make([]byte, 1)
	require.NoError(t, d.ReadAt(b, 39999))
	assert.Equal(t, byte(0x5a), b[0])
	require.NoError(t, d.ReadAt(b, 41000))
	assert.Equal(t, byte(0x5a), b[0])

	for _, tc := range []struct {
		name string
		err  error
	}{
		{"read past the end", d.ReadAt(make([]byte, 2), d.Size()-1)},
		{"write past the end", d.WriteAt(make([]byte, 2), d.Size()-1, false)},
		{"negative offset", d.ReadAt(make([]byte, 2), -1)},
		{"trim past the end", d.Trim(d.Size(), 1, false)},
		{"zeroes past the end", d.WriteZeroes(0, d.Size()+1, false, false)},
	} {
		assert.ErrorIs(t, tc.err, ErrOutOfRange, tc.name)
	}
}

func TestFileRegular(t *testing.T) {
	d, err := OpenFile(newFile(t, size), FileOptions{})
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, int64(size), d.Size())
	assert.Equal(t, 1, d.MinBlockSize())
	exercise(t, d)
}

func TestFileDirect(t *testing.T) {
	p := newFile(t, size+100)
	d, err := OpenFile(p, FileOptions{Direct: true})
	if errors.Is(err, syscall.EINVAL) {
		t.Skipf("file system of %s has no O_DIRECT", p)
	}
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, 4096, d.MinBlockSize())
	assert.Equal(t, int64(size), d.Size(), "rounded down to the alignment")
	// An unaligned buffer goes through a bounce buffer.
	buf := make([]byte, 4096+1)[1:]
	copy(buf, bytes.Repeat([]byte{7}, 4096))
	require.NoError(t, d.WriteAt(buf, 8192, true))
	got := make([]byte, 4096+3)[3:]
	require.NoError(t, d.ReadAt(got, 8192))
	assert.Equal(t, buf, got)
}

func TestFileReadOnly(t *testing.T) {
	d, err := OpenFile(newFile(t, size), FileOptions{ReadOnly: true})
	require.NoError(t, err)
	defer d.Close()
	assert.True(t, d.ReadOnly())
	assert.ErrorIs(t, d.WriteAt([]byte{1}, 0, false), ErrReadOnly)
	assert.ErrorIs(t, d.Trim(0, 1, false), ErrReadOnly)
	assert.ErrorIs(t, d.WriteZeroes(0, 1, false, false), ErrReadOnly)
	require.NoError(t, d.ReadAt(make([]byte, 10), 0))
}

func TestOpenFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(t.TempDir(), "nope"), "no such file"},
		{"directory", t.TempDir(), "is a directory"},
		{"character device", "/dev/null", "neither a regular file nor a block device"},
	} {
		_, err := OpenFile(tc.path, FileOptions{})
		require.Error(t, err, tc.name)
		assert.Contains(t, err.Error(), tc.want, tc.name)
		assert.Contains(t, err.Error(), tc.path, "the error names the path")
	}
}

// TestFileBlockDevice runs the contract on real loop devices with 512-byte
// and 4 KiB logical sectors, which takes the BLKGETSIZE64, BLKSSZGET,
// BLKDISCARD and block-device fallocate paths with unaligned requests.
func TestFileBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	for _, sector := range []int64{512, 4096} {
		img := newFile(t, 4<<20)
		out, err := exec.Command("losetup", "--find", "--show", "--sector-size", fmt.Sprint(sector), img).CombinedOutput()
		if err != nil {
			t.Skipf("losetup: %v: %s", err, out)
		}
		dev := strings.TrimSpace(string(out))
		t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
		d, err := OpenFile(dev, FileOptions{})
		require.NoError(t, err)
		assert.True(t, d.blockDev)
		assert.Equal(t, sector, d.sector, "BLKSSZGET")
		assert.Equal(t, int64(4<<20), d.Size(), "size from BLKGETSIZE64")
		exercise(t, d)
		require.NoError(t, d.Trim(512, 4096, false), "an unaligned trim discards what it can")
		require.NoError(t, d.WriteZeroes(1024, 8192, true, false), "unaligned zeroes on %d-byte sectors", sector)
		b := make([]byte, 8192)
		require.NoError(t, d.ReadAt(b, 1024))
		assert.Equal(t, make([]byte, 8192), b)
		require.NoError(t, d.Close())
	}
}

func TestMem(t *testing.T) {
	m := NewMem(size, MemOptions{MinBlockSize: 512})
	assert.Equal(t, 512, m.MinBlockSize())
	exercise(t, m)
	st := m.Stats()
	assert.Equal(t, int64(2), st.Writes)
	assert.Equal(t, int64(1), st.FUAWrites)
	assert.Equal(t, int64(1), st.Flushes)
	assert.Equal(t, int64(1), st.Trims)
	assert.Equal(t, int64(3), st.Zeroes)
	ro := NewMem(10, MemOptions{ReadOnly: true})
	assert.ErrorIs(t, ro.WriteAt([]byte{1}, 0, false), ErrReadOnly)
}

func TestFaulty(t *testing.T) {
	m := NewMem(size, MemOptions{})
	f := NewFaulty(m, FailAll(OpWrite, OpFlush))
	for _, tc := range []struct {
		name   string
		err    error
		failed bool
	}{
		{"write", f.WriteAt([]byte{1}, 0, false), true},
		{"flush", f.Flush(), true},
		{"read", f.ReadAt(make([]byte, 1), 0), false},
		{"trim", f.Trim(0, 1, false), false},
		{"zeroes", f.WriteZeroes(0, 1, false, false), false},
	} {
		if !tc.failed {
			assert.NoError(t, tc.err, tc.name)
			continue
		}
		assert.True(t, IsInjected(tc.err), tc.name)
		assert.ErrorIs(t, tc.err, syscall.EIO, "%s: injected faults are EIO", tc.name)
	}
	assert.Equal(t, int64(0), m.Stats().Writes, "a failed write never reached the disk")
	f.SetInjector(nil)
	assert.NoError(t, f.WriteAt([]byte{1}, 0, false))
	assert.Equal(t, 1, f.MinBlockSize())
	assert.Equal(t, "write-zeroes", OpWriteZeroes.String())
}

func TestAllZero(t *testing.T) {
	big := make([]byte, 3*len(zeroPage)+5)
	tests := []struct {
		name string
		b    []byte
		at   int // where a non-zero byte goes, -1: none
		want bool
	}{
		{"empty", nil, -1, true},
		{"one zero", []byte{0}, -1, true},
		{"one one", []byte{1}, 0, false},
		{"zeroes across compare pages", big, -1, true},
		{"last byte of a compare page", big, len(zeroPage) - 1, false},
		{"in the tail", big, len(big) - 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), tc.b...)
			if tc.at >= 0 {
				b[tc.at] = 7
			}
			require.Equal(t, tc.want, AllZero(b))
		})
	}
}
