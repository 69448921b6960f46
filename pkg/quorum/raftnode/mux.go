package raftnode

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/twinblock/twinblock/pkg/quorum"
	"github.com/twinblock/twinblock/replication"
)

// Network is the stream layer the group runs on: node.TCP in the daemon,
// pkg/netsim in tests (the shape of pkg/node's Network).
type Network interface {
	Listen(network, addr string) (net.Listener, error)
	Dial(ctx context.Context, network, local, remote string) (net.Conn, error)
}

// Auth is the group's authentication: the resources' cram-hmac-alg and
// shared-secret (DRBD's net section). Empty: none (loopback and tests).
type Auth struct {
	Alg    string
	Secret string
}

// Every connection to a member's quorum address opens with a preamble
// naming what it carries and who dials, then, with a secret, cram-hmac
// both ways (replication.ChallengeResponse: the MAC binds the answering
// node's name, so a response cannot be reflected):
//
//	dialer → listener: "TBQ1" kind(1) auth(1) len(1) dialer-ID [nonce(32)]
//	listener → dialer: status(1) [nonce(32) len(1) MAC(listener-ID)]
//	dialer → listener: [len(1) MAC(dialer-ID)]            (auth only)
//	listener → dialer: status(1)                          (auth only)
//
// The exchange is lock-step: neither side sends past its part before it
// read the other's, so the buffered readers of the preamble hold nothing
// of what follows it on the connection.
//
// kind is 'R' (raft's RPCs, handed to raft's NetworkTransport) or 'C'
// (one forwarded command: a JSON Command, then a JSON answer, each
// length-prefixed). A status byte other than 0 is followed by a
// length-prefixed reason, and the listener closes.
const (
	kindRaft    = 'R'
	kindCommand = 'C'
	muxMagic    = "TBQ1"
	muxTimeout  = 5 * time.Second
	// rpcTimeout bounds one raft RPC (heartbeats and appends: small on
	// a LAN; a snapshot's install scales it by its size in raft).
	rpcTimeout = time.Second
)

// ErrAuth: a member's preamble or authentication failed.
var ErrAuth = errors.New("quorum: authentication")

// mux is one member's listener: it authenticates each connection and
// routes it by kind.
type mux struct {
	id    quorum.NodeID
	auth  Auth
	ln    net.Listener
	raft  chan net.Conn
	cmd   func(net.Conn)
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	onErr func(error)
}

func newMux(ln net.Listener, id quorum.NodeID, auth Auth, onErr func(error)) *mux {
	m := &mux{id: id, auth: auth, ln: ln, raft: make(chan net.Conn), done: make(chan struct{}), onErr: onErr}
	return m
}

// serve accepts until Close; cmd handles forwarded commands.
func (m *mux) serve(cmd func(net.Conn)) {
	m.cmd = cmd
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		var backoff time.Duration
		for {
			c, err := m.ln.Accept()
			if err != nil {
				select {
				case <-m.done:
					return
				default:
				}
				// A transient accept error (EMFILE...): reported, and
				// retried with a backoff, never the end of the quorum.
				m.onErr(fmt.Errorf("quorum: accept: %w", err))
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
				case <-m.done:
					return
				}
				continue
			}
			backoff = 0
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.route(c)
			}()
		}
	}()
}

func (m *mux) route(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(muxTimeout))
	kind, _, err := accept(c, m.id, m.auth)
	if err != nil {
		m.onErr(fmt.Errorf("quorum: connection from %s: %w", c.RemoteAddr(), err))
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	switch kind {
	case kindRaft:
		select {
		case m.raft <- c:
		case <-m.done:
			_ = c.Close()
		}
	case kindCommand:
		m.cmd(c)
	}
}

// Accept implements net.Listener for raft: the next authenticated raft
// connection.
func (m *mux) Accept() (net.Conn, error) {
	select {
	case c := <-m.raft:
		return c, nil
	case <-m.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener: it stops accepting and waits for the
// routing goroutines (forwarded commands in progress end with their
// connection's deadline).
func (m *mux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		err = m.ln.Close()
	})
	return err
}

func (m *mux) wait() { m.wg.Wait() }

// Addr implements net.Listener.
func (m *mux) Addr() net.Addr { return m.ln.Addr() }

// streamLayer is raft's StreamLayer over a mux and a Network.
type streamLayer struct {
	*mux
	net   Network
	local string                               // this member's address (the dialer's source host)
	ids   map[raft.ServerAddress]quorum.NodeID // who listens where
}

// Dial implements raft.StreamLayer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialMember(s.net, s.local, address, s.ids[address], s.id, s.auth, kindRaft, timeout)
}

func dialMember(nw Network, local string, address raft.ServerAddress, to, self quorum.NodeID, auth Auth, kind byte, timeout time.Duration) (net.Conn, error) {
	if to == "" {
		return nil, fmt.Errorf("quorum: %s is no member's address", address)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := nw.Dial(ctx, "tcp", local, string(address))
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(max(timeout, time.Second)))
	if err := dial(c, self, to, auth, kind); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("quorum: %s at %s: %w", to, address, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// dial runs the dialer's side of the preamble.
func dial(c net.Conn, self, to quorum.NodeID, auth Auth, kind byte) error {
	var nonce []byte
	pre := append([]byte(muxMagic), kind, 0, byte(len(self)))
	if auth.Secret != "" {
		pre[5] = 1
	}
	pre = append(pre, self...)
	if auth.Secret != "" {
		nonce = replication.NewNonce()
		pre = append(pre, nonce...)
	}
	if _, err := c.Write(pre); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	if err := readStatus(r); err != nil {
		return err
	}
	if auth.Secret == "" {
		return nil
	}
	theirs := make([]byte, replication.NonceLen)
	if _, err := io.ReadFull(r, theirs); err != nil {
		return err
	}
	mac, err := readShort(r)
	if err != nil {
		return err
	}
	if !replication.VerifyResponse(auth.Alg, []byte(auth.Secret), nonce, string(to), mac) {
		return fmt.Errorf("%w: %s did not prove the shared-secret (wrong shared-secret or cram-hmac-alg?)", ErrAuth, to)
	}
	mine, err := replication.ChallengeResponse(auth.Alg, []byte(auth.Secret), theirs, string(self))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAuth, err)
	}
	if _, err := c.Write(append([]byte{byte(len(mine))}, mine...)); err != nil {
		return err
	}
	return readStatus(r)
}

// accept runs the listener's side of the preamble: the kind and the
// dialer's name, once authenticated.
func accept(c net.Conn, self quorum.NodeID, auth Auth) (byte, quorum.NodeID, error) {
	r := bufio.NewReaderSize(c, 64)
	hdr := make([]byte, len(muxMagic)+3)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, "", err
	}
	if string(hdr[:4]) != muxMagic {
		return 0, "", refuse(c, fmt.Errorf("%w: not a twinblock quorum connection", ErrAuth))
	}
	kind, hasAuth := hdr[4], hdr[5] == 1
	if kind != kindRaft && kind != kindCommand {
		return 0, "", refuse(c, fmt.Errorf("%w: unknown connection kind %q", ErrAuth, kind))
	}
	name := make([]byte, hdr[6])
	if _, err := io.ReadFull(r, name); err != nil {
		return 0, "", err
	}
	from := quorum.NodeID(name)
	if hasAuth != (auth.Secret != "") {
		why := fmt.Sprintf("%s has a shared-secret, %s none (configure it on every member or none)", from, self)
		if !hasAuth {
			why = fmt.Sprintf("%s has no shared-secret, %s has one (configure it on every member or none)", from, self)
		}
		return 0, "", refuse(c, fmt.Errorf("%w: %s", ErrAuth, why))
	}
	if !hasAuth {
		_, err := c.Write([]byte{0})
		return kind, from, err
	}
	theirs := make([]byte, replication.NonceLen)
	if _, err := io.ReadFull(r, theirs); err != nil {
		return 0, "", err
	}
	mac, err := replication.ChallengeResponse(auth.Alg, []byte(auth.Secret), theirs, string(self))
	if err != nil {
		return 0, "", refuse(c, fmt.Errorf("%w: %v", ErrAuth, err))
	}
	nonce := replication.NewNonce()
	out := append([]byte{0}, nonce...)
	out = append(append(out, byte(len(mac))), mac...)
	if _, err := c.Write(out); err != nil {
		return 0, "", err
	}
	got, err := readShort(r)
	if err != nil {
		return 0, "", err
	}
	if !replication.VerifyResponse(auth.Alg, []byte(auth.Secret), nonce, string(from), got) {
		return 0, "", refuse(c, fmt.Errorf("%w: %s failed (wrong shared-secret or cram-hmac-alg?)", ErrAuth, from))
	}
	_, err = c.Write([]byte{0})
	return kind, from, err
}

func refuse(c net.Conn, err error) error {
	msg := err.Error()
	if len(msg) > 255 {
		msg = msg[:255]
	}
	_, _ = c.Write(append([]byte{1, byte(len(msg))}, msg...))
	return err
}

func readStatus(r *bufio.Reader) error {
	st, err := r.ReadByte()
	if err != nil {
		return err
	}
	if st == 0 {
		return nil
	}
	msg, err := readShort(r)
	if err != nil {
		return fmt.Errorf("%w: refused", ErrAuth)
	}
	return fmt.Errorf("%w: refused: %s", ErrAuth, msg)
}

func readShort(r *bufio.Reader) ([]byte, error) {
	n, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}

// A forwarded command and its answer are each a 4-byte big-endian
// length and that much JSON.
const maxFrame = 1 << 20

func writeFrame(w io.Writer, b []byte) error {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

func readFrame(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxFrame {
		return nil, fmt.Errorf("quorum: a frame of %d bytes (at most %d)", size, maxFrame)
	}
	b := make([]byte, size)
	_, err := io.ReadFull(r, b)
	return b, err
}
