package node

import (
	"math"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/buildinfo"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/relay"
)

// scrape fetches and parses /metrics.
func scrape(t *testing.T, n *Node, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+n.AdminAddr()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape: parsing: %v", err)
	}
	return fams
}

// metricValue returns the value of the series of name whose labels include
// want, or -1 when there is none.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
	for _, m := range f.GetMetric() {
		if !labelsMatch(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func TestMetricsCountWhatHappened(t *testing.T) {
	const clients, events, token = 5, 12, "metrics-token"
	be, n, url := oneBackend(t, backend.Config{PayloadSize: 16 << 10}, func(c *Config) {
		c.Admin.Token = token
		c.NodeID = "metrics-node"
		c.Mesh.DC = "dc-test"
		c.Mesh.Tier = 2
		// Cut the stalled client by its lag, as slow_test.go does.
		c.Relay.WriteTimeout = time.Duration(time.Minute)
		c.Relay.ClientLagBytes = 256 << 10
		c.Relay.MaxEventBytes = 64 << 10
	})

	cs := make([]*ssetest.Client, clients)
	for i := range cs {
		cs[i] = ssetest.Dial(t, url, nil)
	}
	ssetest.Eventually(t, "clients attached", 5*time.Second, func() bool { return n.Relay().Clients() == clients })
	be.Publish(streamPath, events)
	for i, c := range cs {
		if got := c.IDs(t, events, 5*time.Second); got[events-1] != itoa(events) {
			t.Fatalf("client %d got %v", i, got)
		}
	}
	// The relay counts a delivery once the write returned, which can be
	// just after the reader saw the bytes.
	var fams map[string]*dto.MetricFamily
	ssetest.Eventually(t, "deliveries counted", 5*time.Second, func() bool {
		fams = scrape(t, n, token)
		return metricValue(fams, "ssemesh_events_delivered_total", nil) == clients*events
	})

	exact := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ssemesh_node_info", map[string]string{"node": "metrics-node", "dc": "dc-test", "tier": "2"}, 1},
		{"ssemesh_build_info", map[string]string{"version": buildinfo.Get().Version, "goversion": runtime.Version()}, 1},
		{"ssemesh_node_ready", nil, 1},
		{"ssemesh_clients_connected", nil, clients},
		{"ssemesh_clients_total", nil, clients},
		{"ssemesh_streams_active", nil, 1},
		{"ssemesh_events_received_total", nil, events},
		{"ssemesh_events_delivered_total", nil, clients * events},
		{"ssemesh_upstream_connects_total", nil, 1},
		{"ssemesh_reparents_total", nil, 0},
		{"ssemesh_gaps_total", nil, 0},
		{"ssemesh_catchup_fetches_total", nil, 0},
		{"ssemesh_delivery_latency_seconds", nil, clients * events},
	}
	for _, m := range exact {
		if got := metricValue(fams, m.name, m.labels); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
	if _, ok := fams["ssemesh_slow_consumer_disconnects_total"]; ok {
		t.Errorf("disconnects reported before any happened: %v", fams["ssemesh_slow_consumer_disconnects_total"])
	}
	for _, mesh := range []string{"ssemesh_mesh_members", "ssemesh_consul_request_errors_total"} {
		if _, ok := fams[mesh]; ok {
			t.Errorf("%s reported by a node without a mesh", mesh)
		}
	}
	for _, std := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := fams[std]; !ok {
			t.Errorf("standard metric %s missing", std)
		}
	}
	checkHistogram(t, fams["ssemesh_delivery_latency_seconds"])

	// One stalled subscriber: published to in lockstep with the others until
	// the relay cuts it for its lag.
	stalledClient(t, n.Addr(), streamPath)
	ssetest.Eventually(t, "stalled client attached", 5*time.Second, func() bool { return n.Relay().Clients() == clients+1 })
	id := events
	for n.Relay().Metrics().Snapshot().Disconnects[relay.ReasonLag] == 0 {
		if id == events+2000 {
			t.Fatal("stalled client never cut")
		}
		be.Publish(streamPath, 1)
		id++
		for _, c := range cs {
			c.Next(t, 5*time.Second)
		}
	}
	ssetest.Eventually(t, "stalled client released", 5*time.Second, func() bool { return n.Relay().Clients() == clients })
	fams = scrape(t, n, token)
	if got := metricValue(fams, "ssemesh_slow_consumer_disconnects_total", map[string]string{"reason": relay.ReasonLag}); got != 1 {
		t.Errorf("slow-consumer disconnects (lag) = %v, want 1", got)
	}
	if got := metricValue(fams, "ssemesh_clients_total", nil); got != clients+1 {
		t.Errorf("clients total = %v, want %d", got, clients+1)
	}
	if got := metricValue(fams, "ssemesh_clients_connected", nil); got != clients {
		t.Errorf("clients connected = %v, want %d", got, clients)
	}
	if got := metricValue(fams, "ssemesh_events_received_total", nil); got != float64(id) {
		t.Errorf("events received = %v, want %d", got, id)
	}

	// Refusals by code, and resume points ignored.
	for i := 0; i < 2; i++ {
		if st, code, _ := status(t, "http://"+n.Addr()+"/webservice/..;/x", nil); st != http.StatusBadRequest || code != codeBadPath {
			t.Fatalf("hostile path: %d %s", st, code)
		}
	}
	ssetest.Dial(t, url+"?lastEventId=a%0d%0ab", nil).Close()
	fams = scrape(t, n, token)
	if got := metricValue(fams, "ssemesh_requests_refused_total", map[string]string{"reason": codeBadPath}); got != 2 {
		t.Errorf("requests refused (bad_path) = %v, want 2", got)
	}
	if got := metricValue(fams, "ssemesh_last_event_ids_ignored_total", nil); got != 1 {
		t.Errorf("last event ids ignored = %v, want 1", got)
	}
}

// checkHistogram asserts the buckets are cumulative and end at the count.
func checkHistogram(t *testing.T, f *dto.MetricFamily) {
	t.Helper()
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM || len(f.GetMetric()) != 1 {
		t.Fatalf("latency histogram: %v", f)
	}
	h := f.GetMetric()[0].GetHistogram()
	// The text format carries the +Inf bucket too.
	bs := h.GetBucket()
	if len(bs) != len(relay.LatencyBuckets)+1 || !math.IsInf(bs[len(bs)-1].GetUpperBound(), 1) || bs[len(bs)-1].GetCumulativeCount() != h.GetSampleCount() {
		t.Fatalf("latency histogram buckets: %v, want %d and +Inf holding the count %d", bs, len(relay.LatencyBuckets), h.GetSampleCount())
	}
	prev := uint64(0)
	for i, b := range bs[:len(bs)-1] {
		if b.GetUpperBound() != relay.LatencyBuckets[i] || b.GetCumulativeCount() < prev {
			t.Fatalf("bucket %d: le=%v count %d after %d", i, b.GetUpperBound(), b.GetCumulativeCount(), prev)
		}
		prev = b.GetCumulativeCount()
	}
	if prev > h.GetSampleCount() || h.GetSampleSum() <= 0 {
		t.Fatalf("buckets end at %d of %d samples, sum %v", prev, h.GetSampleCount(), h.GetSampleSum())
	}
}

func TestLatencyHistogramIsCumulative(t *testing.T) {
	counts := make([]uint64, len(relay.LatencyBuckets)+1)
	counts[0], counts[2], counts[len(counts)-1] = 3, 4, 5 // 5 beyond the last bound
	desc := prometheus.NewDesc("h", "h", nil, nil)
	var m dto.Metric
	if err := latencyHistogram(desc, relay.HistogramSnapshot{Counts: counts, SumSeconds: 1.5}).Write(&m); err != nil {
		t.Fatal(err)
	}
	h := m.GetHistogram()
	if h.GetSampleCount() != 12 || h.GetSampleSum() != 1.5 {
		t.Fatalf("count %d sum %v, want 12 and 1.5", h.GetSampleCount(), h.GetSampleSum())
	}
	want := []uint64{3, 3, 7}
	for i, w := range want {
		if got := h.GetBucket()[i].GetCumulativeCount(); got != w {
			t.Errorf("bucket %d: %d, want %d", i, got, w)
		}
	}
	if last := h.GetBucket()[len(relay.LatencyBuckets)-1].GetCumulativeCount(); last != 7 {
		t.Errorf("last finite bucket %d, want 7", last)
	}
}

// fakeMesh stands in for the mesh layer's statistics.
type fakeMesh struct{}

func (fakeMesh) MembersByState() map[string]int { return map[string]int{"alive": 4, "suspect": 1} }
func (fakeMesh) ConsulErrors() uint64           { return 3 }
func (fakeMesh) RefusedMembers() uint64         { return 5 }

func TestMetricsFromMesh(t *testing.T) {
	n, err := New(testConfig(), ssetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.relay.Close() })
	c := newNodeCollector(n)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(meshOverride{c, fakeMesh{}})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ssemesh_mesh_members", map[string]string{"state": "alive"}, 4},
		{"ssemesh_mesh_members", map[string]string{"state": "suspect"}, 1},
		{"ssemesh_consul_request_errors_total", nil, 3},
		{"ssemesh_gossip_refusals_total", nil, 5},
	}
	for _, ck := range checks {
		if got := metricValue(byName, ck.name, ck.labels); got != ck.want {
			t.Errorf("%s%v = %v, want %v", ck.name, ck.labels, got, ck.want)
		}
	}
}

// meshOverride collects c's metrics with ms as the mesh source.
type meshOverride struct {
	c  *nodeCollector
	ms meshStats
}

func (o meshOverride) Describe(ch chan<- *prometheus.Desc) { o.c.Describe(ch) }
func (o meshOverride) Collect(ch chan<- prometheus.Metric) { o.c.collect(ch, o.ms) }
