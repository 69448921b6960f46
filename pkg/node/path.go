package node

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/replication"
	"github.com/twinblock/twinblock/splitbrain"
)

// applyPath publishes an IOMode to the data path, with the disk and link
// the resource holds now, and opens or closes the NBD export to match.
func (r *Resource) applyPath(m fsm.IOMode) {
	p := ioPath{mode: m, link: r.link}
	if m.Local {
		p.data, p.md = r.data, r.md
	}
	size := r.exportSize()
	r.await(func() { r.dev.setPath(p, size) })
	if !m.Serve && r.kernel.attached() {
		// Demoted without a detach first (a takeover, a forced
		// demotion): its requests fail now; let go of the device before
		// the export closes, which waits for its sessions.
		r.await(func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), 5*time.Second)
			_ = r.kernel.detach(ctx, true)
			cancel()
		})
	}
	if m.Serve || r.exportOnSecondary() {
		r.openExport()
	} else {
		r.closeExport()
	}
	if m.Serve && r.exportErr == nil {
		r.kernel.attach(r.ctx)
	}
}

// exportOnSecondary: with auto-promote the export also listens on a
// Secondary that is up (attached or connecting), so that a client's
// connection can promote it; not once the shutdown has begun (run
// only).
func (r *Resource) exportOnSecondary() bool {
	st := r.fsm.State()
	return r.autoPromote.Load() && !r.goingDown && !(st.Disk == fsm.Diskless && st.Conn == fsm.StandAlone)
}

// dropLinkFromPath takes a dead link out of the data path at once (the
// state machine's IOMode follows).
func (r *Resource) dropLinkFromPath() {
	r.await(func() {
		r.dev.mu.Lock()
		r.dev.path.link = nil
		r.dev.mu.Unlock()
	})
}

// exportSize is the size both nodes can hold: the smaller of the two
// data areas when connected (DRBD's rule), the local one otherwise.
func (r *Resource) exportSize() int64 {
	var size int64
	if r.md != nil {
		size = r.md.Layout().DataSize
	}
	if r.link != nil {
		if ps := int64(r.link.PeerDataSize()); ps > 0 && (size == 0 || ps < size) {
			size = ps
		}
	}
	return size
}

func (r *Resource) action(a fsm.Action) {
	switch a.Kind {
	case fsm.ActOpenDisk:
		if err := r.openDisk(); err != nil {
			r.log.Error("attach failed", "err", err)
			r.attachErr = err
			r.stepped(r.fsm.Step(fsm.AttachFailed{Err: err}))
			return
		}
		sb := r.md.Superblock()
		for _, w := range r.md.Warnings() {
			r.log.Warn(w)
		}
		r.swap.set(r.linkDisk(), r.md)
		r.stepped(r.fsm.Step(fsm.Attached{GI: sb.GI, Flags: sb.Flags, Missed: r.dev.missed.Swap(false)}))
		if err := r.fsm.AttachRefused(); err != nil {
			// The disk is closed again (this Ready's ActCloseDisk);
			// attach fails with the reason.
			r.attachErr = err
			return
		}
		// Attached: the state machine resyncs a disk that failed in
		// full, so what the last one lost is the resync's to restore.
		r.dev.lostUnflushed.Store(false)
		r.keeper.Resume(r.md.Layout().DataSize, r.fsm.State().Disk == fsm.Inconsistent)
	case fsm.ActCloseDisk:
		r.syncer.Stop() // its checkpoints write the metadata
		r.closeDisk()
	case fsm.ActStartConnecting:
		r.startConnecting()
	case fsm.ActStopConnecting:
		r.stopConnecting()
	case fsm.ActDial:
		r.dial()
	case fsm.ActCloseLink:
		if r.link != nil {
			// The state machine left the connection: the status says
			// so before a write failing on this link can be marked
			// and acknowledged (the honest status; fence skips links
			// already fenced).
			r.publish()
			l := r.link
			r.link = nil
			r.liveLink.Store(nil)
			// Closed first: requests in flight on it complete (with an
			// error), so taking it out of the data path, which waits
			// for them, cannot wait for a silent peer.
			r.closeLink(l, a.Reason)
			r.dropLinkFromPath()
		}
	case fsm.ActSendPing:
		if r.link != nil {
			_ = r.link.Ping()
		}
	}
}

// openDisk opens the backing disk and its metadata (drbdadm attach).
func (r *Resource) openDisk() error {
	md, data, err := r.store.Open()
	if err != nil {
		return err
	}
	r.data, r.md = data, md
	r.curMD.Store(md)
	return nil
}

// linkDisk is the disk the peer link writes to: the data area, through
// the backup keeper's copy-on-write when backup-discarded is on (nil
// while diskless).
func (r *Resource) linkDisk() disk.Disk {
	if r.data == nil {
		return nil
	}
	return r.keeper.Disk(r.data)
}

// armBackup arms the backup keeper's journal for a connection about to
// be set up (pkg/backup: the peer may write as soon as the link exists).
func (r *Resource) armBackup() {
	if r.md != nil {
		r.keeper.Arm(r.md.Layout().DataSize, r.fsm.GI())
	}
}

// backupIdle tells the backup keeper when no connection is up or being
// set up.
func (r *Resource) backupIdle() {
	if r.link == nil && r.handshakes == 0 {
		r.keeper.Idle()
	}
}

// closeDisk detaches: the data path no longer uses the disk (the IOMode
// was published first), so the metadata can be closed cleanly.
func (r *Resource) closeDisk() {
	if r.md == nil {
		return
	}
	r.keeper.Close()
	r.await(func() {
		r.dev.mu.Lock()
		r.dev.diskGone()
		r.dev.path.data, r.dev.path.md = nil, nil
		r.dev.path.mode.Local, r.dev.path.mode.UpToDate = false, false
		r.dev.failed.Store(false)
		r.dev.mu.Unlock()
	})
	r.curMD.Store(nil)
	r.swap.set(nil, nil)
	if err := r.store.Close(); err != nil {
		r.log.Warn("metadata close", "err", err)
	}
	r.data, r.md = nil, nil
}

// linkConfig is the peer link's configuration from the net section.
func (r *Resource) linkConfig() replication.LinkConfig {
	var size uint64
	if r.md != nil {
		size = uint64(r.md.Layout().DataSize)
	}
	proto := byte('C')
	if r.cfg.Protocol != "" {
		proto = r.cfg.Protocol[0]
	}
	return replication.LinkConfig{
		Resource: r.name, Self: r.self.Name, Peer: r.peer.Name, Protocol: proto,
		CramHMACAlg:      r.cfg.Net.String("cram-hmac-alg"),
		SharedSecret:     r.cfg.Net.String("shared-secret"),
		DataSize:         size,
		Features:         replication.FeatureRLE | replication.FeatureTrim | replication.FeatureWriteZeroes,
		Disk:             r.linkDisk(),
		Logger:           r.log,
		HandshakeTimeout: 10 * time.Second,
		MaxBuffers:       int(r.cfg.Net.Int("max-buffers")),
		// Writes the link completed but cannot vouch for any more when
		// it ends (A/B before the peer applied them, C before a
		// BarrierAck made them durable there): marked out of sync here,
		// persisted by SyncBitmap when run hears the link ended.
		OnOutOfSync: func(off, n int64) {
			if m := r.curMD.Load(); m != nil {
				m.MarkOutOfSync(off, n)
			}
		},
		CsumsAlg:            r.cfg.Net.String("csums-alg"),
		VerifyAlg:           r.cfg.Net.String("verify-alg"),
		Compression:         r.cfg.Net.String("compression"),
		CompressReplication: r.cfg.Net.Has("compression") && r.cfg.Net.String("compression") != "none" && r.cfg.Net.Bool("compress-replication"),
		LockRange:           r.dev.lockRange,
		// The sync source: a range the target wrote is in sync.
		OnResyncAck: func(off, n int64, ok bool) {
			if m := r.curMD.Load(); m != nil && ok {
				m.SetInSync(off, n)
			}
		},
		// The verify target: blocks whose digests differ.
		OnVerifyMismatch: func(off, n int64) {
			if m := r.curMD.Load(); m != nil {
				m.MarkOutOfSync(off, n)
				r.verifyFound.Add(uint64((n + replication.BlockSize - 1) / replication.BlockSize))
			}
		},
	}
}

// handshake runs the connection setup on nc in the background; the
// result comes back to run as evLink.
func (r *Resource) handshake(nc net.Conn) {
	// backup-discarded: armed before the link exists, since the peer may
	// write through it before run sees evLink (backup.go).
	r.armBackup()
	r.handshakes++
	cfg := r.linkConfig()
	if r.epochs != nil {
		cfg.Fence = r.epochs
	}
	if cfg.Disk != nil || r.fsm.State().Role == fsm.Primary {
		// The link writes to whatever disk is attached when it writes
		// (swap): a Diskless Primary's disk attached later is resynced
		// over this link. A diskless Secondary's link has none.
		pd := &peerlessDisk{Disk: r.swap, md: r.curMD.Load}
		cfg.Disk = pd
		cfg.OnPeerState = pd.setPeer
	}
	local := r.stateMsg()
	linkCh := make(chan *replication.Link, 1)
	cfg.OnState = func(st replication.State) {
		l := <-linkCh
		linkCh <- l
		r.post(evPeerState{link: l, st: st})
	}
	cfg.OnDiskError = func(err error) { r.diskError(r.curMD.Load(), err) }
	// The state machine leaves the connection before the link marks
	// what the peer may lack (fence), so the marks never show behind a
	// Connected, UpToDate/UpToDate status.
	mark := cfg.OnOutOfSync
	cfg.OnOutOfSync = func(off, n int64) {
		l := <-linkCh
		linkCh <- l
		r.fence(l, fmt.Errorf("%w: writes the peer may lack", replication.ErrLinkClosed), false)
		mark(off, n)
	}
	cfg.OnClose = func(err error) {
		l := <-linkCh
		linkCh <- l
		r.post(evLinkClosed{link: l, err: err})
	}
	cfg.OnBitmap = func(rle []byte) {
		l := <-linkCh
		linkCh <- l
		r.post(evBitmap{link: l, rle: rle})
	}
	cfg.OnSyncUUID = func(u uint64) {
		l := <-linkCh
		linkCh <- l
		r.post(evSyncUUID{link: l, uuid: u})
	}
	ctx := r.ctx
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		l, err := replication.Handshake(ctx, nc, cfg, local)
		if err != nil {
			_ = nc.Close()
		}
		// evLink first: the callbacks wait for linkCh, so what the
		// peer sends right after the handshake reaches run after it.
		r.post(evLink{link: l, err: err, hs: true, sent: local})
		linkCh <- l
	}()
}

// startConnecting listens for the peer (the connector); a failure makes
// the connection StandAlone and the verb (connect, up) fails with it.
func (r *Resource) startConnecting() {
	if err := r.conn.Listen(); err != nil {
		r.log.Error("cannot listen for the peer", "address", r.self.Address, "err", err)
		r.listenErr = err
		r.stepped(r.fsm.Step(fsm.DialFailed{Err: err, Fatal: true}))
	}
}

func (r *Resource) stopConnecting() { r.conn.Stop() }

// dial makes one connection attempt to the peer (the connector).
func (r *Resource) dial() { r.conn.Dial() }

// stateMsg is this node's State message.
func (r *Resource) stateMsg() replication.State {
	st := r.fsm.State()
	gi := r.fsm.GI()
	m := replication.State{Role: byte(st.Role), Disk: byte(st.Disk), GI: gi, MDFlags: uint32(r.fsm.Flags()),
		AfterSB: r.fsm.Policies().Encode()}
	if st.Role == fsm.Primary {
		m.Epoch = r.epoch.Load()
	}
	if r.md != nil {
		m.OutOfSync = r.md.OutOfSync()
	}
	if r.fsm.CrashedPrimary() {
		m.Flags |= replication.StateCrashedPrimary
	}
	if st.Disk == fsm.Inconsistent {
		m.Flags |= replication.StateInconsistent
	}
	if r.fsm.DiscardMyData() {
		m.Flags |= replication.StateDiscardMyData
	}
	if r.fsm.UserPaused() {
		m.Flags |= replication.StateUserPaused
	}
	if r.fsm.Verifying() {
		m.Flags |= replication.StateVerifySource
	}
	return m
}

func peerInfo(s replication.State) fsm.PeerInfo {
	ps, sent := splitbrain.DecodePolicies(s.AfterSB)
	return fsm.PeerInfo{
		Policies: ps, PoliciesSent: sent,
		Role: fsm.Role(s.Role), Disk: fsm.DiskState(s.Disk), GI: s.GI,
		CrashedPrimary: s.Flags&replication.StateCrashedPrimary != 0,
		DiscardMyData:  s.Flags&replication.StateDiscardMyData != 0,
		UserPaused:     s.Flags&replication.StateUserPaused != 0,
		VerifySource:   s.Flags&replication.StateVerifySource != 0,
		OutOfSync:      s.OutOfSync,
	}
}

// openExport starts the NBD export (Primary only); a failure is kept for
// the verb that promoted (command).
func (r *Resource) openExport() {
	if err := r.exp.Open(); err != nil {
		r.exportErr = err
		r.log.Error("cannot serve the NBD export", "listen", r.self.NBDListen, "err", err)
	}
}

// closeExport stops the NBD export; its sessions' requests in flight may
// wait for a fence, which await serves meanwhile.
func (r *Resource) closeExport() { r.await(r.exp.Close) }
