package node

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/twinblock/twinblock/pkg/disk"
)

// TestDeviceWriteDoesNotAllocate keeps a Primary's replicated write
// (range lock, activity log, Submit to the link, local write, the peer's
// WriteAck, and a FLUSH now and then) free of heap allocations in steady
// state. The link's own path is TestLinkWriteDoesNotAllocate; this adds
// the device's. (`make unit` runs it without -race.)
func TestDeviceWriteDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, proto := range []byte{'A', 'C'} {
		t.Run(string(proto), func(t *testing.T) {
			r := newRig(t, disk.NewMem(rigSize, disk.MemOptions{}), proto)
			buf := block(7)
			i := 0
			write := func() {
				i++
				off := int64(i%256) * 4096 // a hot set of one activity-log extent
				if err := r.dev.WriteAt(buf, off, i%7 == 0); err != nil {
					t.Fatal(err)
				}
				if i%64 == 0 {
					if err := r.dev.Flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			for range 5000 { // warm up: pools, rings and the link's workers
				write()
			}
			assert.Zero(t, testing.AllocsPerRun(2000, write))
		})
	}
}
