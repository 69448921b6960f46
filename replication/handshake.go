package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Handshake runs the connection setup of docs/wire-protocol.md ("The
// handshake sequence") on nc and, on success, starts the link's
// goroutines and returns the running Link, which owns nc from then on.
// It is symmetric: both sides call it, each sends its Hello without
// waiting for the other's. The steps:
//
//  1. Hello both ways. The peer's must name our resource, come from
//     cfg.Peer, be addressed to cfg.Self, share a protocol version and
//     use the same protocol letter; otherwise this node sends a Goodbye
//     naming the mismatch and fails with an error wrapping ErrHandshake
//     ("peer b uses protocol B, this node C").
//  2. If a shared secret is configured, cram-hmac both ways. A wrong
//     secret, or a secret on one side only, fails on both sides with an
//     error wrapping ErrAuth.
//  3. State both ways: local is ours; PeerState returns theirs.
//
// Nothing but Hello, authentication, State and Goodbye crosses before
// authentication succeeded, and the decoder accepts frames of MaxFixed
// bytes only until then (MaxPayload + MaxFixed afterwards), so an
// unauthenticated peer cannot make this node allocate much. The whole
// exchange is bounded by cfg.HandshakeTimeout and by ctx.
//
// On failure nc is closed. An error wrapping ErrHandshake (ErrAuth
// included) means the nodes refused each other or one broke the protocol:
// trying again will not help until a configuration changes (DRBD goes
// StandAlone). Any other error (an invalid cfg aside) is the connection's
// or ctx's (end of stream, reset, timeout, cancellation; it wraps the
// cause): try again.
func Handshake(ctx context.Context, nc net.Conn, cfg LinkConfig, local State) (*Link, error) {
	cfg, err := cfg.withDefaults()
	if err == nil {
		err = local.check()
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	deadline := time.Now().Add(cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	h := &handshake{cfg: cfg, nc: nc, dec: NewDecoder(nc, MaxFixed), out: make(chan []byte, 8), wdone: make(chan struct{})}
	go h.writer()
	err = h.run(local)
	if !stop() || ctx.Err() != nil {
		// The context ended the handshake (or would end the link at
		// once): its cause says more than the I/O error it provoked.
		err = fmt.Errorf("replication: handshake with peer %s: %w", cfg.Peer, context.Cause(ctx))
	}
	if err != nil {
		h.abort()
		return nil, err
	}
	if err := h.finish(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("replication: handshake with peer %s: sending State: %w", cfg.Peer, err)
	}
	_ = nc.SetDeadline(time.Time{})
	l := startLink(nc, h.dec, cfg, h.peer, h.peerState)
	l.epoch.Store(local.Epoch)
	return l, nil
}

// handshake is the state of one Handshake. Writes go through a goroutine
// of their own, so both sides can send before they read even on a
// connection without buffering (net.Pipe).
type handshake struct {
	cfg       LinkConfig
	nc        net.Conn
	dec       *Decoder
	out       chan []byte // frames for the writer, in order (a handful: never full)
	wdone     chan struct{}
	werr      error // the writer's; read after wdone
	peer      Hello
	peerState State
}

func (h *handshake) writer() {
	defer close(h.wdone)
	for b := range h.out {
		if h.werr == nil {
			_, h.werr = h.nc.Write(b)
		}
	}
}

func (h *handshake) send(m Message) {
	b, err := Append(nil, m)
	if err != nil {
		panic(fmt.Sprintf("replication: handshake message %v does not encode: %v", m.Type(), err)) // checked config
	}
	h.out <- b
}

// finish waits until everything sent is written.
func (h *handshake) finish() error {
	close(h.out)
	<-h.wdone
	return h.werr
}

// abort ends a failed handshake: it lets the writer finish (a Goodbye,
// if one is due) while reading and discarding what the peer still sends
// (on net.Pipe its writes would block otherwise), half-closes and waits
// for the peer to close (so the Goodbye is not destroyed by a reset),
// closeGrace at most, and closes nc.
func (h *handshake) abort() {
	grace := time.Now().Add(closeGrace)
	_ = h.nc.SetDeadline(grace)
	close(h.out)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(io.Discard, h.nc)
	}()
	<-h.wdone
	if cw, ok := h.nc.(interface{ CloseWrite() error }); !ok || h.werr != nil || cw.CloseWrite() != nil {
		h.nc.Close()
	}
	<-drained
	h.nc.Close()
}

// refuse sends a Goodbye with reason and returns the error for it.
func (h *handshake) refuse(sentinel error, reason string) error {
	h.send(&Goodbye{Reason: goodbyeReason(reason)})
	return fmt.Errorf("%w: %s", sentinel, reason)
}

// recv reads the next message; a Goodbye is the peer's refusal.
func (h *handshake) recv(expect Type) (Message, error) {
	m, err := h.dec.Next()
	switch {
	case errors.Is(err, io.EOF):
		return nil, fmt.Errorf("replication: handshake with peer %s: the connection ended before its %v: %w", h.cfg.Peer, expect, err)
	case errors.Is(err, ErrProtocol):
		h.send(&Goodbye{Reason: goodbyeReason(err.Error())})
		return nil, fmt.Errorf("%w: peer %s: %w", ErrHandshake, h.cfg.Peer, err)
	case err != nil:
		return nil, fmt.Errorf("replication: handshake with peer %s: waiting for its %v: %w", h.cfg.Peer, expect, err)
	}
	if g, ok := m.(*Goodbye); ok {
		if strings.Contains(g.Reason, ErrStaleEpoch.Error()) {
			// The peer's fence refused this node's epoch (only its
			// reason's words cross the wire): this node was replaced.
			return nil, fmt.Errorf("%w: peer %s refused the connection: %s: %w", ErrHandshake, h.cfg.Peer, g.Reason, ErrStaleEpoch)
		}
		return nil, fmt.Errorf("%w: peer %s refused the connection: %s", ErrHandshake, h.cfg.Peer, g.Reason)
	}
	return m, nil
}

// unexpected refuses a message out of the sequence.
func (h *handshake) unexpected(m Message, expect Type) error {
	err := violation(m.Type(), "during the handshake, expected %v", expect)
	h.send(&Goodbye{Reason: goodbyeReason(err.Error())})
	return fmt.Errorf("%w: peer %s: %w", ErrHandshake, h.cfg.Peer, err)
}

func (h *handshake) run(local State) error {
	cfg := h.cfg
	h.send(&Hello{
		ProtoMin: ProtoVersionMin, ProtoMax: ProtoVersionMax,
		Resource: cfg.Resource, From: cfg.Self, To: cfg.Peer,
		DataSize: cfg.DataSize, Protocol: cfg.Protocol, Features: cfg.Features, MaxPayload: cfg.MaxPayload,
	})
	m, err := h.recv(TypeHello)
	if err != nil {
		return err
	}
	hello, ok := m.(*Hello)
	if !ok {
		return h.unexpected(m, TypeHello)
	}
	h.peer = *hello // its strings are copies, not views of the decoder's buffer
	if reason := h.checkHello(); reason != "" {
		return h.refuse(ErrHandshake, reason)
	}

	if cfg.SharedSecret != "" {
		if err := h.authenticate(); err != nil {
			return err
		}
	}

	h.send(&local)
	if m, err = h.recv(TypeState); err != nil {
		return err
	}
	switch m := m.(type) {
	case *State:
		h.peerState = *m
		if err := admitEpoch(cfg.Fence, cfg.Peer, m.Epoch, false); err != nil {
			if errors.Is(err, ErrStaleEpoch) {
				return h.refuse(fmt.Errorf("%w: %w", ErrHandshake, ErrStaleEpoch), err.Error())
			}
			return err
		}
		return nil
	case *AuthChallenge:
		return h.refuse(ErrAuth, fmt.Sprintf("peer %s requires cram-hmac authentication, this node has no shared-secret (configure it on both nodes or neither)", cfg.Peer))
	default:
		return h.unexpected(m, TypeState)
	}
}

// checkHello returns why the peer's Hello is refused, or "".
func (h *handshake) checkHello() string {
	cfg, p := h.cfg, &h.peer
	switch {
	case p.Resource != cfg.Resource:
		return fmt.Sprintf("peer %s serves resource %q, this node %q", p.From, p.Resource, cfg.Resource)
	case p.From != cfg.Peer:
		return fmt.Sprintf("the peer is node %q, this node expects %q", p.From, cfg.Peer)
	case p.To != cfg.Self:
		return fmt.Sprintf("peer %s wants to connect to node %q, this node is %q", p.From, p.To, cfg.Self)
	case min(p.ProtoMax, ProtoVersionMax) < max(p.ProtoMin, ProtoVersionMin):
		return fmt.Sprintf("peer %s speaks protocol versions %d..%d, this node %d..%d", p.From, p.ProtoMin, p.ProtoMax, ProtoVersionMin, ProtoVersionMax)
	case p.Protocol != cfg.Protocol:
		return fmt.Sprintf("peer %s uses protocol %c, this node %c", p.From, p.Protocol, cfg.Protocol)
	}
	return ""
}

// authenticate runs cram-hmac both ways.
func (h *handshake) authenticate() error {
	cfg := h.cfg
	secret := []byte(cfg.SharedSecret)
	nonce := NewNonce()
	h.send(&AuthChallenge{Nonce: nonce})
	m, err := h.recv(TypeAuthChallenge)
	if err != nil {
		return err
	}
	var challenge *AuthChallenge
	switch m := m.(type) {
	case *AuthChallenge:
		challenge = m
	case *State:
		return h.refuse(ErrAuth, fmt.Sprintf("peer %s has no shared-secret, this node has one (configure it on both nodes or neither)", cfg.Peer))
	default:
		return h.unexpected(m, TypeAuthChallenge)
	}
	if bytes.Equal(challenge.Nonce, nonce) {
		return h.refuse(ErrAuth, fmt.Sprintf("peer %s sent back this node's own challenge", cfg.Peer))
	}
	mac, err := ChallengeResponse(cfg.CramHMACAlg, secret, challenge.Nonce, cfg.Self)
	if err != nil {
		return h.refuse(ErrAuth, fmt.Sprintf("answering peer %s's challenge: %v", cfg.Peer, err))
	}
	h.send(&AuthResponse{MAC: mac})

	if m, err = h.recv(TypeAuthResponse); err != nil {
		return err
	}
	response, ok := m.(*AuthResponse)
	if !ok {
		return h.unexpected(m, TypeAuthResponse)
	}
	verified := VerifyResponse(cfg.CramHMACAlg, secret, nonce, cfg.Peer, response.MAC)
	h.send(&AuthResult{OK: verified})
	if !verified {
		return h.refuse(ErrAuth, fmt.Sprintf("authentication of peer %s failed (wrong shared-secret or cram-hmac-alg?)", cfg.Peer))
	}

	if m, err = h.recv(TypeAuthResult); err != nil {
		return err
	}
	result, ok := m.(*AuthResult)
	if !ok {
		return h.unexpected(m, TypeAuthResult)
	}
	if !result.OK {
		return fmt.Errorf("%w: peer %s did not accept this node's authentication (wrong shared-secret or cram-hmac-alg?)", ErrAuth, cfg.Peer)
	}
	return nil
}

// startLink builds the Link of a finished handshake and starts its
// goroutines.
func startLink(nc net.Conn, dec *Decoder, cfg LinkConfig, peer Hello, peerState State) *Link {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	maxPayload := min(cfg.MaxPayload, peer.MaxPayload)
	l := &Link{
		cfg:        cfg,
		nc:         nc,
		dec:        dec,
		log:        cfg.Logger,
		peer:       peer,
		peerState:  peerState,
		features:   cfg.Features & peer.Features,
		maxPayload: maxPayload,
		readBudget: max(minReadBudget, int64(maxPayload)),
		syncBudget: max(minSyncBudget, int64(maxPayload)),
		maxBitmap:  int(bitmapBound(max(cfg.DataSize, peer.DataSize))),
		stopCh:     make(chan struct{}),
		done:       make(chan struct{}),
		kick:       make(chan struct{}, 1),
		sendDone:   make(chan struct{}),
		recvDone:   make(chan struct{}),
	}
	l.rd.l, l.sc.l, l.ss.l, l.tlog.l = l, l, l, l
	l.tlog.base = 1
	l.rd.calls.init(maxPeerReads, &l.mu)
	l.sc.calls.init(maxSyncRequests, &l.mu)
	if c := cfg.codec; c != CodecNone {
		if l.features&c.feature() == 0 {
			l.log.Warn("replication: the peer does not decode this node's compression: sending uncompressed",
				"resource", cfg.Resource, "peer", cfg.Peer, "compression", c)
		} else {
			l.syncCodec = c
			if cfg.CompressReplication {
				l.dataCodec = c
			}
		}
	}
	if cb := cfg.OnPeerState; cb != nil {
		cb(peerState)
	}
	l.ap.init(l, max(int64(cfg.MaxBuffers)*bufferPageSize, int64(maxPayload)))
	dec.SetMaxFrame(int(maxPayload) + MaxFixed)
	dec.SetPayloadBuffer(l.getPayload)
	l.log.Info("replication: connected", "resource", cfg.Resource, "peer", cfg.Peer, "protocol", string(cfg.Protocol),
		"features", l.features, "max_payload", maxPayload)
	l.wg.Add(1)
	go l.ap.flusher()
	go l.send()
	go l.receive()
	go l.supervise()
	return l
}
