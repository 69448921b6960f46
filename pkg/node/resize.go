package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/meta"
)

// Resize grows the resource onto its backing disk after the disk grew
// (lvextend, truncate): drbdadm resize, online. The metadata moves to the
// new end (meta.Grow) while the disk is detached:
//
//   - a Secondary disconnects, detaches, grows, attaches and connects
//     again; the Primary's writes meanwhile are marked and resynced, and
//     both nodes learn each other's new size in the handshake;
//   - a Primary detaches while it serves from its UpToDate peer (a
//     Diskless Primary), grows, and attaches again; its disk is then
//     resynced from the peer in full (the Diskless Primary's rule). It
//     needs the peer grown and resized first, so that the resync finds
//     every block of the new size there.
//
// The export shows the new size (the smaller of the two disks) to NBD
// clients that connect after both nodes grew; a connected client, and
// the kernel device, keep the size they saw. Only internal metadata is
// resized. The returned line says what changed.
func (r *Resource) Resize(ctx context.Context) (string, error) {
	var (
		st       fsm.State
		l        meta.Layout
		attached bool
		peerSize int64
	)
	if err := r.inspect(ctx, func() {
		st = r.fsm.State()
		if r.md != nil {
			l, attached = r.md.Layout(), true
		}
		if r.link != nil {
			peerSize = int64(r.link.PeerDataSize())
		}
	}); err != nil {
		return "", err
	}
	if !attached {
		return "", errors.New("resize: no disk is attached")
	}
	if !l.Placement.Internal {
		return "", errors.New("resize: only meta-disk internal is resized (not implemented for external metadata)")
	}
	size, err := backingSize(r.self.Disk)
	if err != nil {
		return "", fmt.Errorf("resize: %w", err)
	}
	nl, err := meta.ComputeLayout(l.Placement, size, size, l.Granularity, l.ALExtents)
	if err != nil {
		return "", fmt.Errorf("resize: %w", err)
	}
	if nl.DataSize <= l.DataSize {
		return "", fmt.Errorf("resize: %w: %s has %d bytes, which hold %d bytes of data, as now (grow it first, on both nodes; shrinking is not supported)",
			meta.ErrNotGrown, r.self.Disk, size, l.DataSize)
	}
	if nl.BMOffset < l.Capacity {
		return "", fmt.Errorf("resize: %s grew by %d bytes: grow it by at least %d, so that the new metadata fits beyond the old end",
			r.self.Disk, size-l.Capacity, nl.MDSize)
	}
	switch st.Conn {
	case fsm.SyncSource, fsm.SyncTarget, fsm.PausedSyncS, fsm.PausedSyncT, fsm.VerifyS, fsm.VerifyT, fsm.StartingSyncS, fsm.StartingSyncT, fsm.WFBitMapS, fsm.WFBitMapT, fsm.WFSyncUUID:
		return "", fmt.Errorf("resize: a resync or verify runs (%s): wait until it is done", st.Conn)
	}
	primary := st.Role == fsm.Primary
	if primary {
		if st.Conn != fsm.Connected || st.PeerDisk != fsm.UpToDate {
			return "", errors.New("resize: a Primary resizes while it serves from its connected UpToDate peer, and it is not connected to one (resize the Secondary first, then this node)")
		}
		if peerSize < nl.DataSize {
			return "", fmt.Errorf("resize: the peer holds %d bytes of data, this node would hold %d: grow the peer's disk and run resize there first", peerSize, nl.DataSize)
		}
	}
	connected := st.Conn != fsm.StandAlone
	if !primary && connected {
		if err := r.Do(ctx, fsm.Disconnect{}); err != nil {
			return "", fmt.Errorf("resize: disconnect: %w", err)
		}
	}
	if err := r.Do(ctx, fsm.Detach{}); err != nil {
		return "", fmt.Errorf("resize: detach: %w", err)
	}
	growErr := r.grow(l.Capacity)
	// Attached again in any case: a failed grow left the old metadata.
	if err := r.Do(ctx, fsm.AttachBegin{}); err != nil {
		return "", errors.Join(growErr, fmt.Errorf("resize: attach: %w", err))
	}
	if !primary && connected {
		if err := r.Do(ctx, fsm.Connect{}); err != nil && !errors.Is(err, fsm.ErrNetConfigured) {
			return "", errors.Join(growErr, fmt.Errorf("resize: connect: %w", err))
		}
	}
	if growErr != nil {
		return "", growErr
	}
	r.log.Info("resized", "from", l.DataSize, "to", nl.DataSize)
	line := fmt.Sprintf("%s: data %d -> %d bytes", r.name, l.DataSize, nl.DataSize)
	if primary {
		line += "; this disk is resynced from the peer in full"
	} else {
		line += "; now run resize on the Primary"
	}
	return line, nil
}

// grow moves the detached disk's metadata (run by Resize, the disk
// closed).
func (r *Resource) grow(oldCapacity int64) error {
	open := r.env.OpenDisk
	if open == nil {
		open = func(path string) (disk.Disk, error) { return disk.OpenFile(path, disk.FileOptions{}) }
	}
	d, err := open(r.self.Disk)
	if err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	_, gerr := meta.Grow(d, meta.InternalPlacement, oldCapacity, r.self.Disk)
	if err := d.Close(); err != nil && gerr == nil {
		gerr = fmt.Errorf("resize: %w", err)
	}
	if gerr != nil {
		return fmt.Errorf("resize: %w", gerr)
	}
	return nil
}

// backingSize is the size of the file or block device at path now.
func backingSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}
