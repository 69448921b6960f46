package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLargeWritesReplicatedQemuIO is the reproduction of the first
// release's data loss, at every boundary of the peer link's payload
// (1 MiB) up to the export's maximum (32 MiB): qemu-io writes a pattern
// through the Primary of a Connected UpToDate/UpToDate pair; each write
// is on the Secondary's disk when acknowledged, the status file still
// says UpToDate/UpToDate with oos:0, and after a SIGKILL of the Primary
// the promoted Secondary serves every pattern back.
func TestLargeWritesReplicatedQemuIO(t *testing.T) {
	requireTools(t, "qemu-io")
	const size = 64 << 20
	p := newPair(t, size, nil, "C")
	p.upConnected(t)
	p.tb(t, "a", "primary", "r0", "--force")
	p.waitSynced(t, 60*time.Second)

	sizes := []int64{1<<20 - 4096, 1 << 20, 1<<20 + 4096, 1280 << 10, 3 << 20, 32 << 20}
	type region struct {
		off, n int64
		b      byte
	}
	var regions []region
	off := int64(4096)
	for i, n := range sizes {
		b := byte(0x5a + i)
		runQemuIO(t, "nbd://"+p.nbd["a"]+"/r0", []qemuCmd{qWrite("", fmt.Sprintf("%#x", b), off, n)})
		// Acknowledged means on the Secondary's disk (protocol C).
		requireRegion(t, p.disks["b"], off, n, b)
		st := p.procDRBD(t, "a")
		require.Equal(t, "Connected", st.cs, "after a write of %d bytes", n)
		require.Equal(t, "UpToDate/UpToDate", st.ds, "after a write of %d bytes", n)
		require.Zero(t, st.oosKiB, "after a write of %d bytes", n)
		regions = append(regions, region{off, n, b})
		off += n + 4096
	}

	// Failover: the Primary dies; the Secondary, UpToDate, is promoted
	// and must hold every acknowledged write.
	p.Node("a").Kill()
	p.waitFor(t, "b", "cstate", "WFConnection", 15*time.Second)
	p.tb(t, "b", "primary", "r0")
	var reads []qemuCmd
	for _, r := range regions {
		reads = append(reads, qRead(fmt.Sprintf("%#x", r.b), r.off, r.n))
	}
	runQemuIO(t, "nbd://"+p.nbd["b"]+"/r0", reads)
}
