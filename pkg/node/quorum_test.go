package node

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/clock"
	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/fsm"
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/pkg/netsim"
	"github.com/twinblock/twinblock/pkg/quorum"
	"github.com/twinblock/twinblock/pkg/quorum/raftnode"
	"github.com/twinblock/twinblock/pkg/status"
)

// The raft member is what a quorum resource asks.
var _ QuorumService = (*raftnode.Node)(nil)

// memQuorum is a quorum group in memory: pkg/quorum's state behind a
// mutex, every Submit decided at once (raftnode's tests cover the raft
// underneath). fail, if set, makes Submit of a failOp command fail that
// many times first (an open outcome, as after a lost leadership), after
// applying it when commitAnyway.
type memQuorum struct {
	lost         atomic.Bool // Quorate says no
	mu           sync.Mutex
	state        *quorum.State
	fail         int
	failOp       quorum.Op
	commitAnyway bool
}

func newMemQuorum(t *testing.T) *memQuorum {
	s, err := quorum.NewState(map[string][2]quorum.NodeID{"r0": {"a", "b"}})
	require.NoError(t, err)
	return &memQuorum{state: s}
}

func (q *memQuorum) Submit(_ context.Context, c quorum.Command) (quorum.Result, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail > 0 && c.Op == q.failOp {
		q.fail--
		if q.commitAnyway {
			q.state.Apply(c)
		}
		return quorum.Result{}, errors.New("leadership lost")
	}
	res := q.state.Apply(c)
	if res.Err != nil && errors.Is(res.Err, quorum.ErrStaleEpoch) && quorum.Granted(c, res.After) {
		res.Err = nil // as raftnode: a retry of a committed command
	}
	return res, nil
}

func (q *memQuorum) Quorate() bool { return !q.lost.Load() }

func (q *memQuorum) Leader() quorum.NodeID { return "w" }

func (q *memQuorum) View(resource string) (quorum.Resource, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	r := q.state.Resources[resource]
	if r == nil {
		return quorum.Resource{}, false
	}
	return *r.Clone(), true
}

// TestPromotionIsACommittedEntry: on a quorum resource a promotion is
// granted by the group (the epoch rises, and is on the new Primary's
// disk before it serves, and on its peer's through the State); the peer
// is refused while the first is Primary; a demotion gives the grant
// back, and the next promotion raises the epoch on both disks.
func TestPromotionIsACommittedEntry(t *testing.T) {
	q := newMemQuorum(t)
	tt := syncedPair(t, 45, q)
	a, b := tt.nodes[0].r, tt.nodes[1].r
	floor := func(r *Resource) uint64 { return r.curMD.Load().Superblock().QuorumEpoch }

	// An open outcome (the first try committed, its answer was lost)
	// is retried and reads as granted.
	q.fail, q.failOp, q.commitAnyway = 1, quorum.OpPromote, true
	require.NoError(t, tt.do(0, fsm.Promote{}))
	v, _ := q.View("r0")
	require.Equal(t, uint64(1), v.Epoch, "one promotion, one epoch")
	require.Equal(t, quorum.NodeID("a"), v.Primary)
	require.Equal(t, uint64(1), floor(a), "the epoch is on the new Primary's disk")
	require.True(t, tt.settle(200, func() bool { return floor(b) == 1 }), "the Secondary learns the epoch from the Primary's State")

	err := tt.do(1, fsm.Promote{})
	require.ErrorIs(t, err, ErrQuorumRefused)
	require.ErrorIs(t, err, quorum.ErrPrimaryElsewhere)
	require.Equal(t, "Secondary", tt.status(1).Role)

	require.NoError(t, tt.do(0, fsm.Demote{}))
	require.True(t, tt.settle(200, func() bool { v, _ := q.View("r0"); return v.Primary == "" }), "the demotion gave the grant back")
	require.True(t, tt.settle(200, func() bool { return tt.status(1).PeerRole != "Primary" }))
	require.NoError(t, tt.do(1, fsm.Promote{}))
	v, _ = q.View("r0")
	require.Equal(t, uint64(2), v.Epoch)
	require.Equal(t, quorum.NodeID("b"), v.Primary)
	require.Equal(t, uint64(2), floor(b))
	require.True(t, tt.settle(200, func() bool { return floor(a) == 2 }), "the old Primary's disk records the new epoch")
	require.Equal(t, uint64(0), a.epoch.Load(), "the Secondary serves under no epoch")
}

// TestOutdatedNodeIsNotPromoted: the group refuses a node its Primary
// outdated (it may lack acknowledged writes), and the verb says why.
func TestOutdatedNodeIsNotPromoted(t *testing.T) {
	q := newMemQuorum(t)
	tt := syncedPair(t, 46, q)
	require.NoError(t, tt.do(0, fsm.Promote{}))
	res, err := q.Submit(context.Background(), quorum.Command{Op: quorum.OpOutdatePeer, Resource: "r0", Node: "a", Expect: 1})
	require.NoError(t, err)
	require.NoError(t, res.Err)
	require.NoError(t, tt.do(0, fsm.Demote{}))
	require.True(t, tt.settle(200, func() bool { v, _ := q.View("r0"); return v.Primary == "" }))
	require.True(t, tt.settle(200, func() bool { return tt.status(1).PeerRole != "Primary" }))
	err = tt.do(1, fsm.Promote{})
	require.ErrorIs(t, err, quorum.ErrOutdated)
	require.Contains(t, err.Error(), "State change failed")
	// explain tells why.
	ex := tt.nodes[1].r.Explain()
	require.Contains(t, ex, "r0: quorum yes; epoch 1, Primary none")
	require.Contains(t, ex, "  b: reported UpToDate, current ")
	require.Contains(t, ex, ", Outdated: it may lack acknowledged writes")
	require.Contains(t, ex, "The last promotion of b was refused (")
	require.Contains(t, ex, quorum.ErrOutdated.Error())
}

// TestAloneWritesWaitForOutdate: on a quorum resource a Primary that
// lost its peer acknowledges a write the peer lacks only once the group
// committed the peer Outdated at its epoch (asked once per epoch); a
// Primary the group replaced meanwhile gets the refusal, and the write
// fails.
func TestAloneWritesWaitForOutdate(t *testing.T) {
	for _, replaced := range []bool{false, true} {
		name := "still Primary in the group"
		if replaced {
			name = "replaced in the group"
		}
		t.Run(name, func(t *testing.T) {
			q := newMemQuorum(t)
			tt := syncedPair(t, 47, q)
			require.NoError(t, tt.do(0, fsm.Promote{}))
			a := tt.nodes[0].r
			blk := make([]byte, 4096)
			require.NoError(t, a.dev.WriteAt(blk, 0, false), "mirrored")
			v, _ := q.View("r0")
			require.False(t, v.Nodes["b"].Outdated, "nothing asked while the peer takes the writes")

			if replaced {
				// The group replaced a (an administrator forced b, say).
				res, err := q.Submit(context.Background(), quorum.Command{Op: quorum.OpPromote, Resource: "r0", Node: "b", Expect: 1, Takeover: true, Force: true})
				require.NoError(t, err)
				require.NoError(t, res.Err)
			}
			require.NoError(t, tt.do(1, fsm.Disconnect{}))
			require.True(t, tt.settle(200, func() bool { return tt.status(0).Conn != "Connected" }))
			err := a.dev.WriteAt(blk, 4096, false)
			if replaced {
				require.ErrorIs(t, err, quorum.ErrStaleEpoch, "a replaced Primary acknowledged a write alone")
				return
			}
			require.NoError(t, err, "alone, with the peer outdated")
			v, _ = q.View("r0")
			require.True(t, v.Nodes["b"].Outdated, "acknowledged alone before the group outdated the peer")
			require.NoError(t, a.dev.WriteAt(blk, 8192, false), "alone again, same epoch")

			// b comes back and is resynced: the group hears it is no
			// longer Outdated; gone again, it is outdated again before
			// the next write alone.
			require.NoError(t, tt.do(1, fsm.Connect{}))
			require.True(t, tt.settle(1000, tt.synced), "resynced: %s | %s", line(tt.status(0)), line(tt.status(1)))
			require.True(t, tt.settle(500, func() bool { v, _ := q.View("r0"); return !v.Nodes["b"].Outdated }),
				"the resynced peer is still Outdated in the group")
			require.NoError(t, tt.do(1, fsm.Disconnect{}))
			require.True(t, tt.settle(200, func() bool { return tt.status(0).Conn != "Connected" }))
			require.NoError(t, a.dev.WriteAt(blk, 12288, false))
			v, _ = q.View("r0")
			require.True(t, v.Nodes["b"].Outdated, "a write alone after the clear did not outdate the peer again")
		})
	}
}

// TestReplacedPrimaryDemotes: a Primary that meets its replacement's
// higher epoch (the new Primary's State, when the link comes back)
// demotes at once and serves nothing more; the new Primary refuses its
// stale epoch.
func TestReplacedPrimaryDemotes(t *testing.T) {
	q := newMemQuorum(t)
	tt := syncedPair(t, 48, q)
	require.NoError(t, tt.do(0, fsm.Promote{}))
	a := tt.nodes[0].r
	require.NoError(t, tt.do(1, fsm.Disconnect{}))
	require.True(t, tt.settle(200, func() bool { return tt.status(0).Conn != "Connected" }))

	// The group replaced a (the leader found it gone), and b serves.
	_, err := q.Submit(context.Background(), quorum.Command{Op: quorum.OpReport, Resource: "r0", Node: "b", Disk: fsm.UpToDate})
	require.NoError(t, err)
	res, err := q.Submit(context.Background(), quorum.Command{Op: quorum.OpPromote, Resource: "r0", Node: "b", Expect: 1, Takeover: true})
	require.NoError(t, err)
	require.NoError(t, res.Err)
	require.NoError(t, tt.do(1, fsm.Promote{}))
	require.Equal(t, uint64(2), tt.nodes[1].r.epoch.Load())

	require.NoError(t, tt.do(1, fsm.Connect{}))
	require.True(t, tt.settle(500, func() bool { return tt.status(0).Role == "Secondary" }),
		"the replaced Primary still serves: %s", line(tt.status(0)))
	require.Zero(t, a.epoch.Load())
	require.ErrorIs(t, a.dev.WriteAt(make([]byte, 4096), 0, false), errNotPrimary)
	require.Equal(t, uint64(2), a.curMD.Load().Superblock().QuorumEpoch, "the replaced Primary's disk records the newer epoch")
	require.Equal(t, "Primary", tt.status(1).Role, "the new Primary stays")

	// Both took a new generation while apart: a split brain, resolved
	// as an administrator does, the replaced node discarding its data.
	// Resynced, it is cleared in the group by the new Primary, which
	// never outdated it itself (the takeover did): it can be promoted
	// again.
	require.True(t, tt.settle(200, func() bool { return tt.status(1).Conn == "StandAlone" || tt.synced() }))
	if !tt.synced() {
		require.True(t, tt.status(0).SplitBrain || tt.status(1).SplitBrain, "%s | %s", line(tt.status(0)), line(tt.status(1)))
		_ = tt.do(0, fsm.Disconnect{})
		require.NoError(t, tt.do(0, fsm.Connect{DiscardMyData: true}))
		require.NoError(t, tt.do(1, fsm.Connect{}))
	}
	require.True(t, tt.settle(1500, tt.synced), "the pair resyncs: %s | %s", line(tt.status(0)), line(tt.status(1)))
	require.True(t, tt.settle(200, func() bool { v, _ := q.View("r0"); return !v.Nodes["a"].Outdated }),
		"the node the takeover replaced stays Outdated after its resync")
}

// TestNoQuorum: a Primary out of its group's majority fails every
// request with EIO (on-no-quorum io-error), or holds it without starting
// it (suspend-io, the status saying suspended:quorum) until quorum
// returns, when it runs; a request held when the node stops serving
// fails as not Primary. Either way the node serves again once it is
// back in.
func TestNoQuorum(t *testing.T) {
	for i, tc := range []struct {
		name    string
		suspend bool
	}{
		{"io-error", false},
		{"suspend-io", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newMemQuorum(t)
			tt := syncedPair(t, 49+uint64(i), q)
			require.NoError(t, tt.do(0, fsm.Promote{}))
			r := tt.nodes[0].r
			dev := r.dev
			dev.suspendNoQuorum.Store(tc.suspend) // as on-no-quorum sets it (TestQuorumLostHandler checks the default)
			blk := make([]byte, 4096)
			require.NoError(t, dev.WriteAt(blk, 0, false))
			require.Equal(t, &status.QuorumStatus{Have: true, Epoch: 1, Primary: "a", Leader: "w"}, r.Status().Quorum)
			require.False(t, r.Status().Suspended)

			q.lost.Store(true)
			require.Equal(t, &status.QuorumStatus{Epoch: 1, Primary: "a", Leader: "w"}, r.Status().Quorum, "the status says quorum:no")
			if !tc.suspend {
				require.False(t, r.Status().Suspended)
				require.ErrorIs(t, dev.WriteAt(blk, 0, false), errNoQuorum)
				require.ErrorIs(t, dev.ReadAt(blk, 0), errNoQuorum)
				require.ErrorIs(t, dev.Flush(), errNoQuorum)
				require.ErrorIs(t, dev.Trim(0, 4096, false), errNoQuorum)
				q.lost.Store(false)
				require.NoError(t, dev.WriteAt(blk, 0, false))
				require.NoError(t, dev.ReadAt(blk, 0))
				return
			}
			st := r.Status()
			require.True(t, st.Suspended)
			require.Equal(t, "quorum", st.SuspendedWhy)
			held := bytes.Repeat([]byte{0x5a}, 4096)
			done := make(chan error, 4)
			go func() { done <- dev.WriteAt(held, 8192, false) }()
			go func() { done <- dev.Flush() }()
			require.Eventually(t, func() bool { return dev.held.Load() == 2 }, 5*time.Second, time.Millisecond)
			time.Sleep(50 * time.Millisecond)
			require.Empty(t, done, "a request completed without quorum")
			got := make([]byte, 4096)
			require.NoError(t, tt.nodes[1].faulty.ReadAt(got, 8192))
			require.NotEqual(t, held, got, "a held write reached the peer")

			q.lost.Store(false)
			for range 2 {
				require.NoError(t, <-done, "a held request failed once quorum returned")
			}
			require.Zero(t, dev.held.Load())
			require.False(t, r.Status().Suspended)
			require.NoError(t, dev.ReadAt(got, 8192))
			require.Equal(t, held, got)
			require.True(t, tt.settle(200, func() bool {
				_ = tt.nodes[1].faulty.ReadAt(got, 8192)
				return bytes.Equal(held, got)
			}), "the held write is not on the peer")

			// Held, then the node stops serving: not Primary.
			q.lost.Store(true)
			go func() { done <- dev.WriteAt(blk, 0, false) }()
			require.Eventually(t, func() bool { return dev.held.Load() == 1 }, 5*time.Second, time.Millisecond)
			require.NoError(t, tt.do(0, fsm.Demote{}))
			require.ErrorIs(t, <-done, errNotPrimary)
			require.Zero(t, dev.held.Load())
		})
	}
}

// TestQuorumLostHandler: DRBD 9's quorum-lost handler runs when the
// Primary of a quorum resource loses its group's majority, once per
// loss.
func TestQuorumLostHandler(t *testing.T) {
	dir := t.TempDir()
	script, log := handlerScript(t, dir)
	cfg, err := config.Parse(filepath.Join(dir, "r.conf"), []byte(`resource r0 {
  options { quorum majority; }
  handlers { quorum-lost "`+script+` quorum-lost"; }
  on a { address 127.0.0.1:7789; disk a.img; }
  on b { address 127.0.0.2:7789; disk b.img; }
  on w { address 127.0.0.3:7789; disk none; }
}
`))
	require.NoError(t, err)
	require.Empty(t, cfg.Warnings)
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	q := newMemQuorum(t)
	d := freshDisk(t, 4<<20)
	r, err := NewResourceEnv(cfg.Resources[0], "a", nil, nil, Env{Net: netsim.New(), Clock: clk, Quorum: q,
		OpenDisk: func(string) (disk.Disk, error) { return d, nil }})
	require.NoError(t, err)
	require.True(t, r.dev.suspendNoQuorum.Load(), "on-no-quorum's default is DRBD 9's, suspend-io")
	r.Start(context.Background())
	ctx := context.Background()
	require.NoError(t, r.Do(ctx, fsm.AttachBegin{}))
	require.NoError(t, r.Do(ctx, fsm.Promote{Force: true}))
	settle(clk, 5, func() bool { return false })
	require.Empty(t, handlerLines(t, log), "ran with quorum")

	q.lost.Store(true)
	require.True(t, settle(clk, 100, func() bool { return len(handlerLines(t, log)) == 1 }), "quorum-lost did not run")
	settle(clk, 10, func() bool { return false })
	q.lost.Store(false)
	settle(clk, 5, func() bool { return false })
	require.NoError(t, r.Close())
	lines := handlerLines(t, log)
	require.Len(t, lines, 1, "once per loss: %q", lines)
	require.True(t, strings.HasPrefix(lines[0], "quorum-lost res=r0 "), lines[0])
}

// TestTendGroup: a node keeps the group's record of it true. Its disk
// state and current UUID are reported without a promotion; and a node
// the group names Primary that is not (its daemon restarted after a
// crash while Primary) gives the grant back, so that its peer can be
// promoted without an administrator demoting it first. A node that is
// Primary keeps its grant.
func TestTendGroup(t *testing.T) {
	q := newMemQuorum(t)
	tt := syncedPair(t, 53, q)
	a := tt.nodes[0].r
	var current uint64
	require.NoError(t, a.inspect(context.Background(), func() { current = a.fsm.GI()[genid.Current] }))
	require.NotZero(t, current)
	require.True(t, tt.settle(200, func() bool {
		v, _ := q.View("r0")
		n := v.Nodes["a"]
		return n != nil && n.Disk == fsm.UpToDate && n.Current == current
	}), "a's disk was never reported")

	// As after a crash while Primary at epoch 1: the group names a.
	ctx := context.Background()
	res, err := q.Submit(ctx, quorum.Command{Op: quorum.OpPromote, Resource: "r0", Node: "a", Expect: 0})
	require.NoError(t, err)
	require.NoError(t, res.Err)
	require.True(t, tt.settle(200, func() bool { v, _ := q.View("r0"); return v.Primary == "" }), "a kept a grant it does not use")
	require.Equal(t, "Secondary", tt.status(0).Role)
	require.NoError(t, tt.do(1, fsm.Promote{}), "b is promoted without demoting a first")
	v, _ := q.View("r0")
	require.Equal(t, quorum.NodeID("b"), v.Primary)
	tt.settle(50, func() bool { return false })
	v, _ = q.View("r0")
	require.Equal(t, quorum.NodeID("b"), v.Primary, "the Primary's grant was given back")
	require.Equal(t, uint64(2), v.Epoch)
	require.Zero(t, a.epoch.Load())
}
