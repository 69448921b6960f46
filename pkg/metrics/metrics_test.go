package metrics

import (
	"bytes"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/status"
)

// parse reads an exposition with Prometheus' own text-format parser, the
// one its server scrapes with.
func parse(t *testing.T, e *Exposition) map[string]*dto.MetricFamily {
	t.Helper()
	var b bytes.Buffer
	_, err := e.WriteTo(&b)
	require.NoError(t, err)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b.Bytes()))
	require.NoError(t, err, "the exposition does not parse:\n%s", b.String())
	return fams
}

// value returns the value of family name's sample whose labels include
// want, failing if there is not exactly one.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	require.True(t, ok, "family %s missing", name)
	var found []float64
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			found = append(found, m.Gauge.GetValue())
		case m.Counter != nil:
			found = append(found, m.Counter.GetValue())
		case m.Histogram != nil:
			found = append(found, float64(m.Histogram.GetSampleCount()))
		}
	}
	require.Len(t, found, 1, "%s%v", name, want)
	return found[0]
}

func TestHistogram(t *testing.T) {
	h := NewHistogram([]float64{0.001, 0.01, 0.1})
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 5 * time.Millisecond, 50 * time.Millisecond, time.Second} {
		h.Observe(d)
	}
	s := h.Snapshot()
	assert.Equal(t, []uint64{2, 3, 4}, s.Cumulative, "le 1ms holds 0.5 ms and 1 ms (bounds are inclusive)")
	assert.Equal(t, uint64(5), s.Count)
	assert.InDelta(t, 1.0565, s.Sum, 1e-9)
	var nilH *Histogram
	nilH.Observe(time.Second) // a nil histogram observes nothing
	assert.Zero(t, nilH.Snapshot().Count)
}

func TestExpositionParses(t *testing.T) {
	up := status.Resource{
		Name: "r0", Minor: 3, Configured: true, Self: "alpha", Peer: "beta", PeerNodeID: 1,
		Role: "Primary", PeerRole: "Secondary", Conn: "SyncSource", Disk: "UpToDate", PeerDisk: "Inconsistent",
		Size: 1 << 30, DiskWritten: 4096, DiskRead: 8192, NetSent: 1 << 20, OutOfSync: 1 << 19, APInFlight: 65536,
		NBDClients: 1, Sync: &status.SyncProgress{Total: 1 << 20, Left: 1 << 19},
		Quorum: &status.QuorumStatus{Have: true, Epoch: 7, Primary: "alpha", Leader: "alpha"},
	}
	down := status.Resource{Name: "r1", Configured: false, Self: "alpha", Peer: "beta"}
	odd := status.Resource{Name: `we"ird\name`, Configured: true, Role: "Secondary", Conn: "StandAlone", Disk: "Diskless"}
	h := NewHistogram(LatencyBuckets)
	h.Observe(300 * time.Microsecond)
	h.Observe(3 * time.Millisecond)
	lat := Latency{Requests: map[string]HistogramSnapshot{"write": h.Snapshot()}, Replication: h.Snapshot()}

	e := NewExposition()
	Header(e, "0.1.0", 3)
	AddResource(e, up, lat)
	AddResource(e, down, Latency{})
	AddResource(e, odd, Latency{})
	fams := parse(t, e)

	r0 := map[string]string{"name": "r0"}
	tests := []struct {
		family string
		labels map[string]string
		want   float64
	}{
		{"drbd_resource_resources", nil, 3},
		{"drbd_resource_role", map[string]string{"name": "r0", "drbd_resource_role": "Primary"}, 1},
		{"drbd_resource_role", map[string]string{"name": "r0", "drbd_resource_role": "Secondary"}, 0},
		{"drbd_resource_maypromote", r0, 0},
		{"drbd_resource_promotionscore", r0, 10101},
		{"drbd_connection_state", map[string]string{"name": "r0", "conn_name": "beta", "peer_node_id": "1", "drbd_connection_state": "Connected"}, 1},
		{"drbd_connection_apinflight_bytes", r0, 65536},
		{"drbd_peerdevice_outofsync_bytes", map[string]string{"name": "r0", "volume": "0"}, 1 << 19},
		{"drbd_peerdevice_sent_bytes", r0, 1 << 20},
		{"drbd_device_state", map[string]string{"name": "r0", "minor": "3", "drbd_device_state": "UpToDate"}, 1},
		{"drbd_device_written_bytes_total", r0, 4096},
		{"drbd_device_read_bytes_total", r0, 8192},
		{"drbd_device_size_bytes", r0, 1 << 30},
		{"drbd_device_open", r0, 1},
		{"twinblock_peerdevice_replication_state", map[string]string{"name": "r0", "twinblock_peerdevice_replication_state": "SyncSource"}, 1},
		{"twinblock_peerdevice_resync_left_bytes", r0, 1 << 19},
		{"twinblock_nbd_request_duration_seconds", map[string]string{"name": "r0", "op": "write"}, 2},
		{"twinblock_nbd_request_duration_seconds", map[string]string{"name": "r0", "op": "read"}, 0},
		{"twinblock_replication_rtt_seconds", r0, 2},
		{"twinblock_quorum_have", r0, 1},
		{"twinblock_quorum_epoch", r0, 7},
		{"twinblock_quorum_leader", r0, 1},
		{"drbd_device_unintentionaldiskless", map[string]string{"name": `we"ird\name`}, 1},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, value(t, fams, tc.family, tc.labels), "%s%v", tc.family, tc.labels)
	}
	for name, f := range fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				assert.NotEqual(t, "r1", l.GetValue(), "%s: a resource that is not up has no samples", name)
			}
		}
	}
	// The histogram's buckets, as Prometheus reads them: cumulative, the
	// 0.5 ms bucket holds the 0.3 ms write, the 5 ms one both.
	checked := false
	for _, m := range fams["twinblock_nbd_request_duration_seconds"].Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["name"] != "r0" || labels["op"] != "write" {
			continue
		}
		checked = true
		for _, bk := range m.Histogram.Bucket {
			switch bk.GetUpperBound() {
			case 250e-6:
				assert.Equal(t, uint64(0), bk.GetCumulativeCount())
			case 500e-6, 2.5e-3:
				assert.Equal(t, uint64(1), bk.GetCumulativeCount())
			case 5e-3, 10:
				assert.Equal(t, uint64(2), bk.GetCumulativeCount())
			}
		}
		assert.InDelta(t, 0.0033, m.Histogram.GetSampleSum(), 1e-9)
	}
	assert.True(t, checked, "r0's write histogram")
}
