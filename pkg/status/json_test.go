package status

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func jsonRoundTrip(t *testing.T, rs ...Resource) []JSONResource {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, WriteJSON(&b, rs))
	dec := json.NewDecoder(&b)
	dec.DisallowUnknownFields() // every field written is in the documented types
	var out []JSONResource
	require.NoError(t, dec.Decode(&out))
	return out
}

func TestJSONParsesBack(t *testing.T) {
	primary, _ := connectedPair()
	primary.Name = "r1"
	got := jsonRoundTrip(t, primary, Resource{Name: "down", Minor: 9}, designExample())
	require.Len(t, got, 2, "resources that are not up are left out")
	assert.Equal(t, "r1", got[1].Name, "name order")

	r0 := got[0]
	assert.Equal(t, "r0", r0.Name)
	assert.Equal(t, "Primary", r0.Role)
	assert.Equal(t, "flush", r0.WriteOrdering)
	assert.Equal(t, []JSONDevice{{
		Volume: 0, Minor: 0, DiskState: "UpToDate", Open: true, Quorum: true,
		Read: 1049600, Written: 0,
	}}, r0.Devices)
	require.Len(t, r0.Connections, 1)
	c := r0.Connections[0]
	assert.Equal(t, "b", c.Name)
	assert.Equal(t, "Connected", c.ConnectionState)
	assert.Equal(t, "Secondary", c.PeerRole)
	assert.Equal(t, []JSONPath{{
		ThisHost:    JSONHost{Address: "10.0.0.1", Port: 7789, Family: "ipv4"},
		RemoteHost:  JSONHost{Address: "10.0.0.2", Port: 7789, Family: "ipv4"},
		Established: true,
	}}, c.Paths)
	require.Len(t, c.PeerDevices, 1)
	pd := c.PeerDevices[0]
	assert.Equal(t, "SyncSource", pd.ReplicationState)
	assert.Equal(t, "Inconsistent", pd.PeerDiskState)
	assert.Equal(t, "no", pd.ResyncSuspended)
	assert.Equal(t, uint64(1048576), pd.Sent)
	assert.Equal(t, uint64(2048), pd.OutOfSync)
	assert.Equal(t, int64(2), pd.Pending)
	assert.True(t, pd.HasSyncDetails)
	assert.False(t, pd.HasOnlineVerifyDetails)
	assert.Equal(t, uint64(2097152), *pd.RSTotal) // 1 GiB in sectors
	assert.Equal(t, int64(1000), *pd.RSDt1Ms)
	assert.Equal(t, uint64(1048576), *pd.RSDb1Sectors)
	assert.Nil(t, pd.OVLeft)
	assert.Equal(t, 100.0, *pd.Want)
	assert.Equal(t, 512.0, *pd.DB1DT1)
	assert.Equal(t, 0.0, *pd.EstimatedSecondsToFinish)
	assert.Equal(t, 512.0, *pd.DBDT)
	assert.Equal(t, 100.0, *pd.PercentResyncDone)

	assert.Equal(t, JSONTwinblock{
		Node: "a", CState: "SyncSource", Protocol: "C", NBDClients: 1, Epochs: 1,
		Sync: &JSONSyncInfo{
			TotalBytes: 1 << 30, LeftBytes: 2048, ElapsedMs: 1999, RecentBytes: 512 << 20,
			RecentWindowMs: 1000, WantKiBps: 102400,
		},
	}, r0.Twinblock)

	assert.Nil(t, got[1].Connections[0].PeerDevices[0].RSTotal, "no sync details outside a resync")
	assert.Equal(t, "Established", got[1].Connections[0].PeerDevices[0].ReplicationState)
}

// TestJSONDRBDNames checks the key names a drbdsetup status --json consumer
// looks up, on the generic decoding.
func TestJSONDRBDNames(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, WriteJSON(&b, []Resource{designExample()}))
	var v []map[string]any
	require.NoError(t, json.Unmarshal(b.Bytes(), &v))
	require.Len(t, v, 1)
	res := v[0]
	for _, k := range []string{"name", "role", "suspended", "write-ordering", "devices", "connections"} {
		assert.Contains(t, res, k)
	}
	dev := res["devices"].([]any)[0].(map[string]any)
	for _, k := range []string{"volume", "minor", "disk-state", "client", "open", "quorum", "read", "written",
		"al-writes", "bm-writes", "upper-pending", "lower-pending"} {
		assert.Contains(t, dev, k)
	}
	conn := res["connections"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "connection-state", "congested", "peer-role", "tls", "paths", "peer_devices"} {
		assert.Contains(t, conn, k)
	}
	path := conn["paths"].([]any)[0].(map[string]any)
	for _, k := range []string{"this_host", "remote_host", "established"} {
		assert.Contains(t, path, k)
	}
	pd := conn["peer_devices"].([]any)[0].(map[string]any)
	for _, k := range []string{"volume", "replication-state", "peer-disk-state", "peer-client", "resync-suspended",
		"received", "sent", "out-of-sync", "pending", "unacked", "has-sync-details", "has-online-verify-details",
		"rs-total", "want", "db1/dt1 [MiB/s]", "estimated-seconds-to-finish", "db/dt [MiB/s]", "percent-resync-done"} {
		assert.Contains(t, pd, k)
	}
}

func TestJSONEdgeCases(t *testing.T) {
	t.Run("nothing up", func(t *testing.T) {
		var b bytes.Buffer
		require.NoError(t, WriteJSON(&b, []Resource{{Name: "r0"}}))
		assert.Equal(t, "[]\n", b.String())
		b.Reset()
		require.NoError(t, WriteJSON(&b, nil))
		assert.Equal(t, "[]\n", b.String())
	})
	t.Run("no peer, no addresses", func(t *testing.T) {
		got := jsonRoundTrip(t, Resource{Name: "solo", Configured: true, Role: "Primary", Disk: "UpToDate"})
		require.Len(t, got, 1)
		assert.Empty(t, got[0].Connections)
		assert.NotNil(t, got[0].Connections, `"connections": [] rather than null`)
		assert.Equal(t, "", got[0].Twinblock.Protocol)
		assert.Equal(t, "StandAlone", got[0].Twinblock.CState)
	})
	t.Run("stalled verify", func(t *testing.T) {
		r := designExample()
		r.Conn = "VerifyS"
		r.Sync = &SyncProgress{Total: 1 << 30, Left: 1 << 29, RecentWindow: 200 * time.Second, Stalled: true}
		pd := jsonRoundTrip(t, r)[0].Connections[0].PeerDevices[0]
		assert.True(t, pd.HasOnlineVerifyDetails)
		assert.Equal(t, uint64(1<<20), *pd.OVLeft)
		assert.Equal(t, float64(noEstimate), *pd.EstimatedSecondsToFinish)
		assert.Equal(t, 0.0, *pd.Want)
		assert.Equal(t, 50.0, *pd.PercentResyncDone)
	})
	t.Run("addresses", func(t *testing.T) {
		for addr, want := range map[string]JSONHost{
			"10.1.2.3:7789":       {Address: "10.1.2.3", Port: 7789, Family: "ipv4"},
			"[fd00::1]:7790":      {Address: "fd00::1", Port: 7790, Family: "ipv6"},
			"node-b:7789":         {Address: "node-b:7789", Family: "unknown"},
			"unix:/run/x.sock":    {Address: "unix:/run/x.sock", Family: "unknown"},
			"10.1.2.3:notaport":   {Address: "10.1.2.3:notaport", Family: "unknown"},
			"":                    {Address: "", Family: "unknown"},
			"[::ffff:1.2.3.4]:80": {Address: "::ffff:1.2.3.4", Port: 80, Family: "ipv4"},
		} {
			assert.Equal(t, want, jsonHost(addr), addr)
		}
	})
}

// TestJSONSplitBrain: "split-brain" and "split-brain-rule" appear in the
// connection object only while a split brain is reported, the rule only
// when known.
func TestJSONSplitBrain(t *testing.T) {
	tests := []struct {
		name      string
		sb        bool
		rule      int
		wantLines []string // exact lines of the indented output
		noKeys    []string
	}{
		{"rule 90", true, 90, []string{
			`        "connection-state": "StandAlone",`,
			`        "split-brain": true,`,
			`        "split-brain-rule": 90,`,
		}, nil},
		{"rule not known", true, 0, []string{
			`        "connection-state": "StandAlone",`,
			`        "split-brain": true,`,
		}, []string{`"split-brain-rule"`}},
		{"no split brain, stale rule", false, 90, []string{
			`        "connection-state": "StandAlone",`,
			`        "congested": false,`,
		}, []string{`"split-brain"`, `"split-brain-rule"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := splitBrained()
			r.SplitBrain, r.SplitBrainRule = tt.sb, tt.rule
			var b bytes.Buffer
			require.NoError(t, WriteJSON(&b, []Resource{r}))
			text := b.String()
			assert.Contains(t, text, "\n"+strings.Join(tt.wantLines, "\n")+"\n")
			for _, k := range tt.noKeys {
				assert.NotContains(t, text, k)
			}

			c := jsonRoundTrip(t, r)[0].Connections[0]
			assert.Equal(t, tt.sb, c.SplitBrain)
			if tt.sb {
				assert.Equal(t, tt.rule, c.SplitBrainRule)
			} else {
				assert.Zero(t, c.SplitBrainRule)
			}
		})
	}
	t.Run("no peer: no connection to carry it", func(t *testing.T) {
		r := splitBrained()
		r.Peer = ""
		assert.Empty(t, jsonRoundTrip(t, r)[0].Connections)
	})
}

// TestPercentInSync: DRBD 9's percent-in-sync, floored to two decimals
// so that a device with a single block out of sync never reads 100.
func TestPercentInSync(t *testing.T) {
	for _, tc := range []struct {
		size, oos uint64
		want      float64
	}{
		{0, 0, 100},
		{0, 4096, 0},
		{1 << 30, 0, 100},
		{1 << 30, 1024, 99.99},
		{1 << 30, 1 << 29, 50},
		{4096, 4096, 0},
		{4096, 8192, 0},
	} {
		assert.Equal(t, tc.want, percentInSync(tc.size, tc.oos), "size %d, oos %d", tc.size, tc.oos)
	}
}

// TestJSONSuspendedReasons: suspended-user and suspended-quorum follow
// the reasons; no-data and fencing are never set.
func TestJSONSuspendedReasons(t *testing.T) {
	r := Resource{Name: "r0", Configured: true, Suspended: true, SuspendedWhy: "user,quorum", NodeID: 1, PeerNodeID: 0, Peer: "a", Size: 1 << 20}
	jr := jsonResource(r)
	assert.True(t, jr.SuspendedUser)
	assert.True(t, jr.SuspendedQuorum)
	assert.False(t, jr.SuspendedNoData || jr.SuspendedFencing)
	assert.Equal(t, 1, jr.NodeID)
	assert.Equal(t, 0, jr.Connections[0].PeerNodeID)
	assert.Equal(t, uint64(1024), jr.Devices[0].Size)
	r.SuspendedWhy = "quorum"
	jr = jsonResource(r)
	assert.False(t, jr.SuspendedUser)
	assert.True(t, jr.SuspendedQuorum)
}
