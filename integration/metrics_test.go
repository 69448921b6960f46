package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
	"github.com/twinblock/twinblock/nbd/client"
)

// scrape GETs addr's /metrics and parses it with Prometheus' text-format
// parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/plain; version=0.0.4")
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err, "the endpoint's text does not parse:\n%s", body)
	return fams
}

// sample is the value of the one sample of family name whose labels
// include want (a histogram's value is its count).
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
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
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
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
	require.Len(t, found, 1, "%s %v", name, want)
	return found[0]
}

// TestMetricsEndpoint: `daemon --metrics ADDR` on both nodes of a synced
// pair, scraped and parsed with Prometheus' own parser before and after
// 64 writes of 64 KiB through a real NBD client: the roles and states
// under drbd-reactor's names, the written bytes on both disks, the
// latency and round-trip histograms counting the writes. A port that is
// taken stops the daemon with an error naming --metrics.
func TestMetricsEndpoint(t *testing.T) {
	addrs := map[string]string{}
	for _, h := range []string{"127.0.0.1", "127.0.0.2"} {
		a, err := harness.FreeAddr(h)
		require.NoError(t, err)
		addrs[h] = a
	}
	a, b := syncedDaemons(t, harness.Options{DiskSize: 16 << 20, DaemonArgs: func(_, host string) []string {
		return []string{"--metrics", addrs[host]}
	}})
	ma, mb := addrs[a.Host], addrs[b.Host]

	before := scrape(t, ma)
	require.Equal(t, 1.0, sample(t, before, "drbd_resource_role", "name", "r0", "drbd_resource_role", "Primary"))
	require.Equal(t, 0.0, sample(t, before, "drbd_resource_role", "name", "r0", "drbd_resource_role", "Secondary"))
	require.Equal(t, 1.0, sample(t, before, "drbd_connection_state", "name", "r0", "conn_name", "b", "drbd_connection_state", "Connected"))
	require.Equal(t, 1.0, sample(t, before, "drbd_device_state", "name", "r0", "drbd_device_state", "UpToDate"))
	require.Equal(t, 0.0, sample(t, before, "drbd_peerdevice_outofsync_bytes", "name", "r0"))
	require.Equal(t, 1.0, sample(t, before, "drbd_resource_resources"))
	w0 := sample(t, before, "twinblock_nbd_request_duration_seconds", "name", "r0", "op", "write")

	ctx := context.Background()
	cl, err := client.Dial(ctx, a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err)
	blk := bytes.Repeat([]byte{0xa7}, 64<<10)
	const writes = 64
	for i := range writes {
		require.NoError(t, cl.WriteAt(blk, int64(i)*int64(len(blk)), false))
	}
	require.NoError(t, cl.Flush())

	// The open count follows the daemon's next state snapshot.
	require.NoError(t, harness.Until(10*time.Second, func() bool {
		return sample(t, scrape(t, ma), "drbd_device_open", "name", "r0") == 1
	}), "drbd_device_open while the NBD client is connected")
	after := scrape(t, ma)
	require.GreaterOrEqual(t, sample(t, after, "drbd_device_written_bytes_total", "name", "r0")-sample(t, before, "drbd_device_written_bytes_total", "name", "r0"), float64(writes*len(blk)))
	require.GreaterOrEqual(t, sample(t, after, "drbd_peerdevice_sent_bytes", "name", "r0")-sample(t, before, "drbd_peerdevice_sent_bytes", "name", "r0"), float64(writes*len(blk)))
	require.Equal(t, w0+writes, sample(t, after, "twinblock_nbd_request_duration_seconds", "name", "r0", "op", "write"))
	require.GreaterOrEqual(t, sample(t, after, "twinblock_replication_rtt_seconds", "name", "r0"), float64(writes))
	require.GreaterOrEqual(t, sample(t, after, "twinblock_nbd_request_duration_seconds", "name", "r0", "op", "flush"), 1.0)
	require.Equal(t, 0.0, sample(t, after, "drbd_connection_apinflight_bytes", "name", "r0"), "nothing in flight once every write is answered")
	go cl.Close()

	peer := scrape(t, mb)
	require.Equal(t, 1.0, sample(t, peer, "drbd_resource_role", "name", "r0", "drbd_resource_role", "Secondary"))
	require.GreaterOrEqual(t, sample(t, peer, "drbd_device_written_bytes_total", "name", "r0"), float64(writes*len(blk)), "the Secondary counts the replicated writes")
	require.GreaterOrEqual(t, sample(t, peer, "drbd_peerdevice_received_bytes", "name", "r0"), float64(writes*len(blk)))

	// A taken port: the daemon does not start, and says why.
	cmd := exec.Command(twinblockBin, "--config", a.Conf, "--node", "a", "--control", a.Control+".2", "daemon",
		"--status-file", t.TempDir()+"/s", "--state-dir", t.TempDir(), "--metrics", ma)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	require.NoError(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "daemon with a taken --metrics port: %v", err)
		require.Contains(t, stderr.String(), "--metrics "+ma)
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("a daemon whose --metrics port is taken still runs after 20 s:\n%s", stderr.String())
	}
}
