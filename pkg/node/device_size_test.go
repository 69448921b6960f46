package node

import (
	"bytes"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
)

// boundarySizes are the write lengths around the link's payload limit
// (1 MiB) up to the NBD export's largest payload (32 MiB): the sizes the
// first release acknowledged without replicating.
var boundarySizes = []int{
	512, 4096,
	1<<20 - 4096, 1<<20 - 1, 1 << 20, 1<<20 + 1, 1<<20 + 4096,
	1280 << 10, 2 << 20, 3 << 20, 3<<20 + 512, 32 << 20,
}

func pattern(seed uint64, n int) []byte {
	p := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, 0x5a))
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	return p
}

// TestWriteEverySizeReplicatedWhole: a write of any size the export
// accepts is on the Secondary's disk, whole, when it is acknowledged,
// with nothing marked and no fence: the link carries it in pieces.
func TestWriteEverySizeReplicatedWhole(t *testing.T) {
	sec := disk.NewMem(rigSize, disk.MemOptions{})
	r := newRig(t, sec, 'C')
	require.Equal(t, uint32(1<<20), r.primary.MaxPayload(), "the boundaries below are the default payload's")
	for i, n := range boundarySizes {
		for _, fua := range []bool{false, true} {
			off := int64(4096*(i+1)) + int64(i%3)*512
			p := pattern(uint64(i*2+1), n)
			require.NoError(t, r.dev.WriteAt(p, off, fua), "write of %d bytes at %d", n, off)
			got := make([]byte, n)
			require.NoError(t, sec.ReadAt(got, off))
			require.True(t, bytes.Equal(p, got), "write of %d bytes (fua %v): the Secondary's disk differs", n, fua)
			require.Zero(t, r.md.OutOfSync(), "write of %d bytes marked out of sync", n)
			require.Empty(t, r.fences, "write of %d bytes fenced the link", n)
		}
	}
}

// TestZeroesAndTrimAndPeerReadsEverySize: WRITE_ZEROES and TRIM of the
// same lengths reach the peer whole, and a read through the peer (a
// Primary without a usable disk) of any length returns the peer's data.
func TestZeroesAndTrimAndPeerReadsEverySize(t *testing.T) {
	sec := disk.NewMem(rigSize, disk.MemOptions{})
	r := newRig(t, sec, 'C')
	for i, n := range boundarySizes {
		off := int64(8192 * (i + 1))
		require.NoError(t, r.dev.WriteAt(pattern(uint64(i), n), off, false))
		require.NoError(t, r.dev.WriteZeroes(off, int64(n), true, false))
		got := make([]byte, n)
		require.NoError(t, sec.ReadAt(got, off))
		require.True(t, bytes.Equal(make([]byte, n), got), "write-zeroes of %d bytes: the Secondary's disk is not zero", n)
		require.NoError(t, r.dev.Trim(off, int64(n), false), "trim of %d bytes", n)
		require.Zero(t, r.md.OutOfSync())
		require.Empty(t, r.fences)
	}

	// Reads through the peer: this node's disk is out of the path.
	want := pattern(99, 33<<20)
	require.NoError(t, sec.WriteAt(want, 0, false))
	r.dev.mu.Lock()
	r.dev.path.mode.Local, r.dev.path.mode.PeerReads = false, true
	r.dev.mu.Unlock()
	for _, n := range boundarySizes {
		off := int64(4096 + n%4096)
		got := make([]byte, n)
		require.NoError(t, r.dev.ReadAt(got, off), "read of %d bytes through the peer", n)
		require.True(t, bytes.Equal(want[off:off+int64(n)], got), "read of %d bytes through the peer differs", n)
	}
}

// TestRefusedWriteFencesBeforeMarking: a write the link refuses (here:
// the link ended under a path that still holds it) is acknowledged only
// after the device fenced the link, and then with its blocks marked; on
// a disk that is not UpToDate it fails instead (still marked: the next
// resync brings the peer's version back).
func TestRefusedWriteFencesBeforeMarking(t *testing.T) {
	for _, upToDate := range []bool{true, false} {
		for _, n := range []int{4096, 1<<20 + 4096, 32 << 20} {
			sec := disk.NewMem(rigSize, disk.MemOptions{})
			r := newRig(t, sec, 'C')
			require.NoError(t, r.primary.Close("cut"))
			r.dev.mu.Lock()
			r.dev.path.mode.UpToDate = upToDate
			r.dev.mu.Unlock()
			err := r.dev.WriteAt(pattern(7, n), 1<<20, false)
			require.Zero(t, <-r.fences, "the link was fenced before anything was marked")
			if !upToDate {
				require.ErrorIs(t, err, syscall.EIO)
				require.Equal(t, uint64((n+4095)/4096), r.md.OutOfSync(), "marked, so the resync restores the peer's version")
				continue
			}
			require.NoError(t, err)
			require.Equal(t, uint64((n+4095)/4096), r.md.OutOfSync(), "write of %d bytes", n)
			require.NoError(t, r.dev.Flush(), "the flush on the dead link is covered by this node's disk")
			require.Len(t, r.fences, 1, "the flush on the dead link fenced it too")
		}
	}
}

// TestPiecesFailMidway: a write whose later pieces the peer's disk fails
// while earlier ones succeed is one failure: fenced, marked whole.
func TestPiecesFailMidway(t *testing.T) {
	sec := &failFrom{Disk: disk.NewMem(rigSize, disk.MemOptions{}), from: 3 << 20}
	r := newRig(t, sec, 'C')
	require.NoError(t, r.dev.WriteAt(pattern(3, 4<<20), 1<<20, false))
	require.Zero(t, <-r.fences)
	require.Equal(t, uint64(1024), r.md.OutOfSync(), "the whole 4 MiB write is marked")
	require.Error(t, <-r.diskErrors)
}

// failFrom fails every write at or beyond from.
type failFrom struct {
	disk.Disk
	from int64
}

func (f *failFrom) WriteAt(p []byte, off int64, fua bool) error {
	if off+int64(len(p)) > f.from {
		return syscall.EIO
	}
	return f.Disk.WriteAt(p, off, fua)
}
