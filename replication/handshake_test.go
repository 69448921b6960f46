package replication

import (
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
)

func TestHandshake(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		name := map[bool]string{false: "net.Pipe", true: "TCP"}[tcp]
		t.Run(name, func(t *testing.T) {
			checkGoroutines(t)
			da, db := disk.NewMem(testDiskSize, disk.MemOptions{}), disk.NewMem(testDiskSize/2, disk.MemOptions{})
			cfgA, cfgB := testConfig("a", "b", 'C', da), testConfig("b", "a", 'C', db)
			cfgA.SharedSecret, cfgA.CramHMACAlg = "s3cret", "sha256"
			cfgB.SharedSecret, cfgB.CramHMACAlg = "s3cret", "hmac(sha256)"
			cfgA.MaxPayload, cfgB.MaxPayload = 4<<20, 0
			cfgB.Features = FeatureRLE | FeatureTrim
			la, lb := linkPair(t, tcp, cfgA, cfgB)

			h := la.PeerHello()
			assert.Equal(t, Hello{ProtoMin: ProtoVersionMin, ProtoMax: ProtoVersionMax, Resource: "r0", From: "b", To: "a", DataSize: testDiskSize / 2,
				Protocol: 'C', Features: FeatureRLE | FeatureTrim | FeatureCompressS2 | FeatureCompressZstd, MaxPayload: DefaultMaxPayload}, h,
				"every node announces both compressions")
			assert.Equal(t, uint32(4<<20), lb.PeerHello().MaxPayload)
			assert.Equal(t, State{Role: 2, Disk: 8}, la.PeerState())
			assert.Equal(t, State{Role: 1, Disk: 8}, lb.PeerState())
			for _, l := range []*Link{la, lb} {
				assert.Equal(t, FeatureRLE|FeatureTrim|FeatureCompressS2|FeatureCompressZstd, l.Features())
				assert.Equal(t, uint32(DefaultMaxPayload), l.MaxPayload())
			}
			assert.Equal(t, uint64(testDiskSize/2), la.PeerDataSize())
			assert.Equal(t, uint64(testDiskSize), lb.PeerDataSize())

			// The link works: a write and a read.
			r := &Request{Op: OpWrite, Offset: 4096, Data: patternBytes(1, 4096)}
			require.NoError(t, la.Submit(r))
			require.NoError(t, waitErr(t, r))
			got := make([]byte, 4096)
			require.NoError(t, la.ReadAt(got, 4096))
			sameBytes(t, r.Data, got, "read back through the peer")
		})
	}
}

func TestHandshakeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name         string
		edit         func(a, b *LinkConfig)
		wantA, wantB string
	}{
		{"resource", func(a, b *LinkConfig) { b.Resource = "r1" },
			`peer b serves resource "r1", this node "r0"`, `peer a serves resource "r0", this node "r1"`},
		{"node names", func(a, b *LinkConfig) { b.Self = "x" },
			`the peer is node "x", this node expects "b"`, `peer a wants to connect to node "b", this node is "x"`},
		{"protocol letter", func(a, b *LinkConfig) { b.Protocol = 'B' },
			"peer b uses protocol B, this node C", "peer a uses protocol C, this node B"},
	} {
		for _, tcp := range []bool{false, true} {
			t.Run(tc.name+map[bool]string{false: "/pipe", true: "/tcp"}[tcp], func(t *testing.T) {
				checkGoroutines(t)
				da := disk.NewMem(testDiskSize, disk.MemOptions{})
				cfgA, cfgB := testConfig("a", "b", 'C', da), testConfig("b", "a", 'C', nil)
				tc.edit(&cfgA, &cfgB)
				ca, cb := connPair(t, tcp)
				la, lb, errA, errB := handshakePair(t, ca, cb, cfgA, cfgB)
				assert.Nil(t, la)
				assert.Nil(t, lb)
				require.ErrorIs(t, errA, ErrHandshake)
				require.ErrorIs(t, errB, ErrHandshake)
				assert.NotErrorIs(t, errA, ErrAuth)
				assert.Contains(t, errA.Error(), tc.wantA)
				assert.Contains(t, errB.Error(), tc.wantB)
				assert.Equal(t, "replication: handshake: "+tc.wantA, errA.Error())
				assert.Zero(t, da.Stats().Writes)
			})
		}
	}
}

// TestHandshakeOneSidedRefusal: a peer that only this node refuses gets
// the reason in a Goodbye (here a version it cannot speak).
func TestHandshakeOneSidedRefusal(t *testing.T) {
	checkGoroutines(t)
	cfg := testConfig("a", "b", 'C', nil)
	p, _, errs := newRawPeer(t, cfg, &Hello{ProtoMin: 4, ProtoMax: 5, Resource: "r0", From: "b", To: "a",
		Protocol: 'C', MaxPayload: 4096}, true)
	const want = "peer b speaks protocol versions 4..5, this node 3..3"
	assert.Equal(t, want, p.goodbye(), "the Goodbye names the mismatch")
	p.nc.Close()
	err := recv(t, errs, "the handshake error")
	require.ErrorIs(t, err, ErrHandshake)
	assert.EqualError(t, err, "replication: handshake: "+want)
}

// TestHandshakePeerRefuses: the refusal a peer sends is the error here.
func TestHandshakePeerRefuses(t *testing.T) {
	checkGoroutines(t)
	cfg := testConfig("a", "b", 'C', nil)
	p, _, errs := newRawPeer(t, cfg, nil, true)
	p.send(&Goodbye{Reason: "node b is going down"})
	p.nc.Close()
	err := recv(t, errs, "the handshake error")
	require.ErrorIs(t, err, ErrHandshake)
	assert.EqualError(t, err, "replication: handshake: peer b refused the connection: node b is going down")
}

func TestHandshakeAuth(t *testing.T) {
	for _, tc := range []struct {
		name                         string
		secretA, algA, secretB, algB string
		wantA, wantB                 string // "" = success
	}{
		{"same secret", "s3cret", "sha1", "s3cret", "SHA1", "", ""},
		{"wrong secret", "s3cret", "sha256", "other", "sha256",
			"authentication of peer b failed (wrong shared-secret or cram-hmac-alg?)",
			"authentication of peer a failed (wrong shared-secret or cram-hmac-alg?)"},
		{"different alg", "s3cret", "sha256", "s3cret", "sha512",
			"authentication of peer b failed", "authentication of peer a failed"},
		{"secret on this side only", "s3cret", "sha256", "", "",
			"peer b has no shared-secret, this node has one (configure it on both nodes or neither)",
			"peer a requires cram-hmac authentication, this node has no shared-secret"},
	} {
		for _, tcp := range []bool{false, true} {
			t.Run(tc.name+map[bool]string{false: "/pipe", true: "/tcp"}[tcp], func(t *testing.T) {
				checkGoroutines(t)
				da, db := disk.NewMem(testDiskSize, disk.MemOptions{}), disk.NewMem(testDiskSize, disk.MemOptions{})
				cfgA, cfgB := testConfig("a", "b", 'C', da), testConfig("b", "a", 'C', db)
				cfgA.SharedSecret, cfgA.CramHMACAlg = tc.secretA, tc.algA
				cfgB.SharedSecret, cfgB.CramHMACAlg = tc.secretB, tc.algB
				ca, cb := connPair(t, tcp)
				la, lb, errA, errB := handshakePair(t, ca, cb, cfgA, cfgB)
				if tc.wantA == "" {
					require.NoError(t, errA)
					require.NoError(t, errB)
					closeLink(t, la)
					closeLink(t, lb)
					return
				}
				assert.Nil(t, la)
				assert.Nil(t, lb)
				require.ErrorIs(t, errA, ErrAuth)
				require.ErrorIs(t, errB, ErrAuth)
				require.ErrorIs(t, errA, ErrHandshake)
				assert.Contains(t, errA.Error(), tc.wantA)
				assert.Contains(t, errB.Error(), tc.wantB)
				assert.Zero(t, da.Stats().Writes+db.Stats().Writes, "no data crossed")
			})
		}
	}
}

// TestHandshakeNothingBeforeAuth: before authentication the frame limit
// is MaxFixed, so a bulk message is refused before its payload is read.
func TestHandshakeNothingBeforeAuth(t *testing.T) {
	checkGoroutines(t)
	cfg := testConfig("a", "b", 'C', disk.NewMem(testDiskSize, disk.MemOptions{}))
	cfg.SharedSecret, cfg.CramHMACAlg = "s3cret", "sha256"
	p, _, errs := newRawPeer(t, cfg, nil, true)
	p.send(&Data{ID: 1, Payload: make([]byte, 8192)})
	assert.Contains(t, p.goodbye(), "frame too large: Data of 8220 bytes, limit 4096")
	p.nc.Close()
	err := recv(t, errs, "the handshake error")
	require.ErrorIs(t, err, ErrHandshake)
	require.ErrorIs(t, err, ErrFrameTooLarge)
	assert.Zero(t, cfg.Disk.(*disk.Mem).Stats().Writes)

	// A small one is refused as out of sequence.
	p, _, errs = newRawPeer(t, cfg, nil, true)
	p.send(&Trim{ID: 1, Length: 4096})
	assert.Contains(t, p.goodbye(), "Trim: during the handshake, expected AuthChallenge")
	p.nc.Close()
	err = recv(t, errs, "the handshake error")
	require.ErrorIs(t, err, ErrProtocol)
	assert.Contains(t, err.Error(), "Trim: during the handshake, expected AuthChallenge")
}

func TestHandshakeTimeoutAndCancel(t *testing.T) {
	checkGoroutines(t)
	cfg := testConfig("a", "b", 'C', nil)
	cfg.HandshakeTimeout = 50 * time.Millisecond
	ca, cb := connPair(t, true)
	defer cb.Close()
	start := time.Now()
	_, err := Handshake(context.Background(), ca, cfg, State{})
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.NotErrorIs(t, err, ErrHandshake, "a timeout is worth another try")
	assert.Contains(t, err.Error(), "replication: handshake with peer b: waiting for its Hello")
	assert.Less(t, time.Since(start), testTimeout/2)

	ca, cb = connPair(t, false)
	defer cb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		buf := make([]byte, 1)
		_, _ = cb.Read(buf) // the first byte of the Hello: then cancel
		cancel()
	}()
	cfg.HandshakeTimeout = testTimeout
	_, err = Handshake(ctx, ca, cfg, State{})
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, ErrHandshake)

	// The peer goes away in the middle: not a refusal either.
	ca, cb = connPair(t, true)
	go func() {
		buf := make([]byte, 1)
		_, _ = cb.Read(buf)
		cb.Close()
	}()
	_, err = Handshake(context.Background(), ca, cfg, State{})
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrHandshake)
	assert.Contains(t, err.Error(), "replication: handshake with peer b:")
}

func TestHandshakeConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *LinkConfig)
		want string
	}{
		{"no resource", func(c *LinkConfig) { c.Resource = "" }, "resource of 0 bytes"},
		{"self is peer", func(c *LinkConfig) { c.Peer = "a" }, `self and peer are both "a"`},
		{"protocol", func(c *LinkConfig) { c.Protocol = 'D' }, "protocol 'D'"},
		{"max payload", func(c *LinkConfig) { c.MaxPayload = 100 }, "max payload 100"},
		{"secret without alg", func(c *LinkConfig) { c.SharedSecret = "x" }, "go together"},
		{"unknown alg", func(c *LinkConfig) { c.SharedSecret, c.CramHMACAlg = "x", "md5" }, "unknown cram-hmac-alg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("a", "b", 'C', nil)
			tc.edit(&cfg)
			ca, cb := net.Pipe()
			defer cb.Close()
			_, err := Handshake(context.Background(), ca, cfg, State{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			_, werr := ca.Write([]byte{0})
			assert.ErrorIs(t, werr, io.ErrClosedPipe, "nc is closed")
		})
	}
}
