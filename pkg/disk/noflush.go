package disk

// NoFlush is a Disk whose flushes are dropped: Flush does nothing and
// writes, trims and zeroings ignore FUA. Everything else goes to the
// wrapped Disk unchanged.
//
// It is what DRBD's `disk-flushes no` (for the data) and `md-flushes no`
// (for the metadata) ask for. It gives up the durability the Disk
// interface promises: after a power loss or a kernel crash, writes that
// were acknowledged may be missing, and the metadata may be older than
// the data it describes. That is safe only where nothing volatile sits
// between twinblock and stable storage. twinblock writes through the
// host's page cache (it does not open with O_DIRECT), so a
// battery-backed controller cache is not enough: the host's own dirty
// pages are lost with the host. A twinblock process that dies loses
// nothing (the kernel still holds its writes).
type NoFlush struct {
	Disk
}

// WithoutFlushes returns d with its flushes dropped (see NoFlush).
func WithoutFlushes(d Disk) *NoFlush { return &NoFlush{Disk: d} }

// MinBlockSize reports the wrapped disk's alignment, if it has one.
func (n *NoFlush) MinBlockSize() int {
	if bs, ok := n.Disk.(interface{ MinBlockSize() int }); ok {
		return bs.MinBlockSize()
	}
	return 1
}

// WriteAt implements Disk, without FUA.
func (n *NoFlush) WriteAt(p []byte, off int64, _ bool) error {
	return n.Disk.WriteAt(p, off, false)
}

// Flush implements Disk: it does nothing.
func (n *NoFlush) Flush() error { return nil }

// Trim implements Disk, without FUA.
func (n *NoFlush) Trim(off, length int64, _ bool) error {
	return n.Disk.Trim(off, length, false)
}

// WriteZeroes implements Disk, without FUA.
func (n *NoFlush) WriteZeroes(off, length int64, noHole, _ bool) error {
	return n.Disk.WriteZeroes(off, length, noHole, false)
}
