package node

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/meta"
	"github.com/twinblock/twinblock/replication"
)

// gated is a Secondary's disk whose writes stop until the test lets them
// go on, or fail: the "disk path" the Protocol C tests cut.
type gated struct {
	disk.Disk
	arrived chan int64
	release chan error
}

func (g *gated) WriteAt(p []byte, off int64, fua bool) error {
	g.arrived <- off
	if err := <-g.release; err != nil {
		return err
	}
	return g.Disk.WriteAt(p, off, fua)
}

type rig struct {
	dev        *device
	md         *meta.Meta
	primary    *replication.Link
	secondary  *replication.Link
	diskErrors chan error
	// fences records, for every fence the device asked for, the
	// out-of-sync bits at that moment: the honest-status invariant
	// wants the fence before the mark.
	fences chan uint64
}

// attachedMem is a formatted, attached in-memory disk of size bytes:
// its metadata and its data area.
func attachedMem(t *testing.T, size int64) (*meta.Meta, disk.Disk) {
	t.Helper()
	backing := disk.NewMem(size, disk.MemOptions{})
	l, err := meta.ComputeLayout(meta.InternalPlacement, size, size, meta.DefaultGranularity, meta.DefaultALExtents)
	require.NoError(t, err)
	_, err = meta.Format(backing, l)
	require.NoError(t, err)
	md, err := meta.Open(backing, meta.InternalPlacement, meta.Options{Name: "mem"})
	require.NoError(t, err)
	data, err := disk.NewRegion(backing, 0, l.DataSize)
	require.NoError(t, err)
	return md, data
}

// newRig connects a Primary's device (local disk in memory, metadata
// attached) to a Secondary whose disk is secDisk, over TCP on loopback.
func newRig(t *testing.T, secDisk disk.Disk, proto byte) *rig {
	t.Helper()
	md, data := attachedMem(t, rigSize)
	l := md.Layout()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	r := &rig{md: md, diskErrors: make(chan error, 8), fences: make(chan uint64, 64)}
	base := replication.LinkConfig{Resource: "r0", Protocol: proto, DataSize: uint64(l.DataSize),
		Features: replication.FeatureTrim | replication.FeatureWriteZeroes}
	var wg sync.WaitGroup
	var secErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		nc, err := ln.Accept()
		if err != nil {
			secErr = err
			return
		}
		cfg := base
		cfg.Self, cfg.Peer, cfg.Disk = "b", "a", secDisk
		cfg.OnDiskError = func(err error) { r.diskErrors <- err }
		r.secondary, secErr = replication.Handshake(context.Background(), nc, cfg, replication.State{Role: byte(fsm.Secondary), Disk: byte(fsm.UpToDate)})
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	cfg := base
	cfg.Self, cfg.Peer, cfg.Disk = "a", "b", data
	r.primary, err = replication.Handshake(context.Background(), nc, cfg, replication.State{Role: byte(fsm.Primary), Disk: byte(fsm.UpToDate)})
	require.NoError(t, err)
	wg.Wait()
	require.NoError(t, secErr)
	t.Cleanup(func() {
		_ = r.primary.Close("test over")
		_ = r.secondary.Close("test over")
		_ = md.Close()
	})
	r.dev = newDevice(func(*meta.Meta, error) {}, &counters{})
	r.dev.fence = func(*replication.Link, error) { r.fences <- md.OutOfSync() }
	r.dev.setPath(ioPath{mode: fsm.IOMode{Serve: true, Local: true, UpToDate: true, Mirror: true, PeerUpToDate: true, Protocol: proto}, data: data, md: md, link: r.primary}, l.DataSize)
	return r
}

// rigSize is the rig's disks' size: room for a write of the NBD
// export's largest payload (32 MiB) and the metadata.
const rigSize = 40 << 20

func block(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }

// TestProtocolCNoAckBeforePeer: under protocol C the client's write does
// not complete while the Secondary's disk has not completed it; when the
// Secondary's disk path then fails, the write completes on the Primary
// alone and its block is marked out of sync.
func TestProtocolCNoAckBeforePeer(t *testing.T) {
	tests := []struct {
		name     string
		outcome  error // what the Secondary's disk returns
		wantMark bool
	}{
		{"peer disk completes", nil, false},
		{"peer disk path killed", syscall.EIO, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &gated{Disk: disk.NewMem(rigSize, disk.MemOptions{}), arrived: make(chan int64, 1), release: make(chan error, 1)}
			r := newRig(t, g, 'C')
			done := make(chan error, 1)
			go func() { done <- r.dev.WriteAt(block(0xc1), 8192, false) }()
			require.Equal(t, int64(8192), <-g.arrived, "the write reached the Secondary's disk")
			select {
			case err := <-done:
				t.Fatalf("write acknowledged (%v) while the Secondary's disk has not completed it", err)
			case <-time.After(200 * time.Millisecond):
			}
			g.release <- tt.outcome
			require.NoError(t, <-done)
			require.Equal(t, tt.wantMark, r.md.OutOfSync() > 0, "out-of-sync bits: %d", r.md.OutOfSync())
			if tt.outcome != nil {
				require.Error(t, <-r.diskErrors)
				require.Zero(t, <-r.fences, "the device fenced the link before it marked the block")
			}
			require.Empty(t, r.fences)
		})
	}
}

// TestProtocolCLinkCutInFlight: the link dies while a write waits for
// the peer; the write completes on the Primary and is marked out of sync.
func TestProtocolCLinkCutInFlight(t *testing.T) {
	g := &gated{Disk: disk.NewMem(rigSize, disk.MemOptions{}), arrived: make(chan int64, 1), release: make(chan error, 1)}
	r := newRig(t, g, 'C')
	done := make(chan error, 1)
	go func() { done <- r.dev.WriteAt(block(0xd2), 1<<20, false) }()
	<-g.arrived
	closed := make(chan struct{})
	go func() { _ = r.secondary.Close("killed"); close(closed) }()
	// The Primary's write completes although the Secondary's disk still
	// holds it: the link is gone, the block is marked.
	require.NoError(t, <-done)
	require.Equal(t, uint64(1), r.md.OutOfSync())
	require.Zero(t, <-r.fences, "the device fenced the link before it marked the block")
	g.release <- nil
	<-closed
}

// TestProtocolCDurableOnPeer: a FUA write, and a plain write followed by
// FLUSH, survive a power loss of the Secondary that drops its whole
// volatile cache the moment the client has its reply.
func TestProtocolCDurableOnPeer(t *testing.T) {
	sec := disk.NewCrash(rigSize)
	r := newRig(t, sec, 'C')
	require.NoError(t, r.dev.WriteAt(block(0xf1), 0, true))
	after := sec.CrashClone(rand.New(rand.NewPCG(1, 1)), 0)
	got := make([]byte, 4096)
	require.NoError(t, after.ReadAt(got, 0))
	require.Equal(t, block(0xf1), got, "FUA write not durable on the Secondary")

	require.NoError(t, r.dev.WriteAt(block(0xf2), 4096, false))
	require.NoError(t, r.dev.Flush())
	after = sec.CrashClone(rand.New(rand.NewPCG(2, 2)), 0)
	require.NoError(t, after.ReadAt(got, 4096))
	require.Equal(t, block(0xf2), got, "write before FLUSH not durable on the Secondary")
	require.Zero(t, r.md.OutOfSync())
}

// TestDeviceWritesBothAndOrdersOverlaps: concurrent overlapping writes end
// up identical on both disks.
func TestDeviceWritesBothAndOrdersOverlaps(t *testing.T) {
	sec := disk.NewMem(rigSize, disk.MemOptions{})
	r := newRig(t, sec, 'C')
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				off := int64((i*7+w)%16) * 2048 // overlapping 4 KiB writes
				require.NoError(t, r.dev.WriteAt(block(byte(w*31+i)), off, false))
			}
		}()
	}
	wg.Wait()
	require.NoError(t, r.dev.Flush())
	a := make([]byte, 64<<10)
	b := make([]byte, 64<<10)
	require.NoError(t, r.dev.ReadAt(a, 0))
	require.NoError(t, sec.ReadAt(b, 0))
	require.Equal(t, a, b)
}

// TestFlushAfterFailedDiskCountsItsUnflushedWrites: once a disk that
// failed with unflushed writes has left the data path, a FLUSH the peer
// alone answers vouches for writes that disk may lose, so the node
// counts as having missed them (torture seed 10556883278662386598); a
// disk flushed before it failed, or detached cleanly, missed nothing.
func TestFlushAfterFailedDiskCountsItsUnflushedWrites(t *testing.T) {
	for _, tc := range []struct {
		name       string
		flushFirst bool // a good local flush after the write
		failed     bool // the disk failed before it left the path
		missed     bool
	}{
		{name: "failed with an unflushed write", failed: true, missed: true},
		{name: "failed after a good flush", flushFirst: true, failed: true},
		{name: "detached without a failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, disk.NewCrash(rigSize), 'C')
			require.NoError(t, r.dev.WriteAt(block(0x5a), 8192, false))
			if tc.flushFirst {
				require.NoError(t, r.dev.Flush())
			}
			r.dev.failed.Store(tc.failed) // as localError records a failure
			r.dev.setPath(ioPath{mode: fsm.IOMode{Serve: true, Mirror: true, PeerUpToDate: true, Protocol: 'C'}, link: r.primary}, r.dev.size)
			require.NoError(t, r.dev.Flush(), "the peer answers the FLUSH")
			require.Equal(t, tc.missed, r.dev.missed.Load(), "missed")
			require.False(t, r.dev.lostUnflushed.Load(), "the FLUSH consumed what the detach recorded")
		})
	}
}

// TestNoAcknowledgementWithoutAHolder: a request is answered from, or
// acknowledged on, a disk that can stand behind it, or fails. Each case
// is a path the torture test's seed 13543028146989035362 took (a
// SyncSource Primary whose disk failed under its Inconsistent peer) or
// its mirror image; each fails without its rule.
func TestNoAcknowledgementWithoutAHolder(t *testing.T) {
	failWrites := func(o disk.Op) error {
		if o.Kind == disk.OpRead {
			return nil
		}
		return disk.ErrInjected
	}
	failReads := func(o disk.Op) error {
		if o.Kind == disk.OpRead {
			return disk.ErrInjected
		}
		return nil
	}
	full := fsm.IOMode{Serve: true, Local: true, UpToDate: true, Mirror: true, PeerUpToDate: true, Protocol: 'C'}
	syncSource := full // the peer is an Inconsistent sync target
	syncSource.PeerUpToDate = false
	for _, tc := range []struct {
		name     string
		mode     fsm.IOMode
		local    disk.Injector // nil: the local disk works
		noLocal  bool          // a Diskless Primary
		failed   bool          // the local disk failed an earlier request
		peerGone bool          // the peer refuses (its link ended)
		linkLeft bool          // the state machine left the link meanwhile
		read     bool          // a read, else a write
		wantErr  bool
		missed   bool
	}{
		{name: "read, diskless, peer Inconsistent", mode: fsm.IOMode{Serve: true, Protocol: 'C'}, noLocal: true, read: true, wantErr: true},
		{name: "read, local read fails, peer Inconsistent", mode: syncSource, local: failReads, read: true, wantErr: true},
		{name: "read, local read fails, peer UpToDate", mode: full, local: failReads, read: true},
		{name: "write, local write fails, peer Inconsistent", mode: syncSource, local: failWrites, wantErr: true},
		{name: "write, local write fails, peer UpToDate", mode: full, local: failWrites, missed: true},
		{name: "write, local write fails, link left meanwhile", mode: full, local: failWrites, linkLeft: true, wantErr: true},
		{name: "write, peer gone, local disk failed earlier", mode: full, failed: true, peerGone: true, wantErr: true},
		{name: "write, peer gone, local disk sound", mode: full, peerGone: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec := disk.NewMem(rigSize, disk.MemOptions{})
			r := newRig(t, sec, 'C')
			md, data := attachedMem(t, rigSize)
			t.Cleanup(func() { _ = md.Close() })
			require.NoError(t, data.WriteAt(block(0x11), 8192, false)) // this disk's version
			require.NoError(t, sec.WriteAt(block(0x22), 8192, false))  // the peer's
			p := ioPath{mode: tc.mode, data: disk.NewFaulty(data, tc.local), md: md, link: r.primary}
			if tc.noLocal {
				p.data, p.md = nil, nil
			}
			r.dev.setPath(p, r.dev.size)
			r.dev.failed.Store(tc.failed)
			r.dev.fenceDisk = func(*meta.Meta, error) {}
			r.dev.linkLeft = func(*replication.Link) bool { return tc.linkLeft }
			if tc.peerGone {
				require.NoError(t, r.secondary.Close("gone"))
				<-r.primary.Done()
			}
			var err error
			if tc.read {
				got := make([]byte, 4096)
				if err = r.dev.ReadAt(got, 8192); err == nil {
					require.Equal(t, block(0x22), got, "a read served by neither disk that may serve it")
				}
			} else {
				err = r.dev.WriteAt(block(0x33), 8192, false)
			}
			if tc.wantErr {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.missed, r.dev.missed.Load(), "missed")
		})
	}
}

// TestSecondaryCountsReplicatedWrites: /proc/drbd's dw counts what the
// Secondary writes for its peer, as DRBD's; the status carries the
// device's size and each host's node id (its on section's place).
func TestSecondaryCountsReplicatedWrites(t *testing.T) {
	tt := syncedPair(t, 54, nil)
	require.NoError(t, tt.do(0, fsm.Promote{}))
	a, b := tt.nodes[0].r, tt.nodes[1].r
	before := b.Status().DiskWritten
	require.NoError(t, a.dev.WriteAt(make([]byte, 1<<20), 0, false))
	require.NoError(t, a.dev.WriteZeroes(2<<20, 64<<10, false, false))
	require.Equal(t, before+1<<20+64<<10, b.Status().DiskWritten, "the Secondary's dw")
	require.Equal(t, uint64(1<<20+64<<10), a.Status().DiskWritten, "the Primary's dw")
	sa, sb := a.Status(), b.Status()
	require.Equal(t, uint64(tt.dataSize), sa.Size)
	require.Equal(t, sa.Size, sb.Size)
	require.Equal(t, [2]int{0, 1}, [2]int{sa.NodeID, sa.PeerNodeID})
	require.Equal(t, [2]int{1, 0}, [2]int{sb.NodeID, sb.PeerNodeID})
}
