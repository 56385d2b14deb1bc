package node

import (
	"net/http"
	"sort"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ssemesh/ssemesh/internal/buildinfo"
	"github.com/ssemesh/ssemesh/internal/clientauth"
	"github.com/ssemesh/ssemesh/relay"
)

// meshStats is what the metrics need from the mesh layer. A node without a
// mesh has none, and the mesh metrics are then left out rather than shown
// as zeros that would look like an empty mesh.
type meshStats interface {
	// MembersByState counts the gossip members by topology state name
	// (alive, suspect, draining, left, unreachable).
	MembersByState() map[string]int
	// ConsulErrors counts failed Consul requests since start.
	ConsulErrors() uint64
	// RefusedMembers counts gossip alive messages refused.
	RefusedMembers() uint64
}

// meshStatsSource returns the mesh's statistics, or nil when the node runs
// without a mesh.
func (n *Node) meshStatsSource() meshStats {
	if n.mesh == nil {
		return nil
	}
	return meshSource{n}
}

// meshSource reads membership and Consul health from the node's mesh.
type meshSource struct{ n *Node }

func (m meshSource) MembersByState() map[string]int {
	out := map[string]int{}
	if v := m.n.mesh.View(); v != nil {
		for _, mem := range v.Members {
			out[string(mem.State)]++
		}
	}
	return out
}

func (m meshSource) ConsulErrors() uint64 { return m.n.mesh.ConsulErrors() }

func (m meshSource) RefusedMembers() uint64 { return m.n.mesh.RefusedMembers() }

const metricsNamespace = "ssemesh"

// nodeCollector reads the relay's counters and the node's state at scrape
// time: nothing is copied into client_golang metric objects on the hot path.
type nodeCollector struct {
	n *Node

	info, ready, clients, capacity, streams          *prometheus.Desc
	clientsTotal, refused, eventsIn, deliveries      *prometheus.Desc
	latency, disconnects, slowPath, upstreamConnects *prometheus.Desc
	upstreamErrors, reparents, gaps, catchUps        *prometheus.Desc
	catchUpRefused, ignoredIDs, streamRequests       *prometheus.Desc
	admitWaits, admitWaitSeconds                     *prometheus.Desc
	members, consulErrors, gossipRefused             *prometheus.Desc
	authAllowed, authRefused, authLatency            *prometheus.Desc
	authRequests, authCacheHits, reloads             *prometheus.Desc
	buildInfo, proxyConns                            *prometheus.Desc
	build                                            buildinfo.Info
}

func newNodeCollector(n *Node) *nodeCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", name), help, labels, nil)
	}
	return &nodeCollector{
		n:                n,
		build:            buildinfo.Get(),
		buildInfo:        d("build_info", "The running build; always 1.", "version", "revision", "goversion"),
		proxyConns:       d("proxy_protocol_connections_total", "Client connections by PROXY protocol outcome (proxy_protocol on): proxied, local (kept the real addresses), untrusted (not from a trusted proxy: read as they are), failed (missing or bad header: closed), shed (too many headers awaited: closed).", "result"),
		info:             d("node_info", "Identity of this node; always 1.", "node", "dc", "tier"),
		ready:            d("node_ready", "1 while the node accepts clients, 0 while it drains."),
		clients:          d("clients_connected", "Subscribers attached now."),
		capacity:         d("clients_capacity", "The node's client limit (limits.max_clients)."),
		streams:          d("streams_active", "Upstream subscriptions open now."),
		clientsTotal:     d("clients_total", "Subscribers ever attached."),
		refused:          d("requests_refused_total", "Requests refused before their stream started, by reason (the error code clients get).", "reason"),
		eventsIn:         d("events_received_total", "Events received from upstreams, all streams."),
		deliveries:       d("events_delivered_total", "Events written to subscribers (one per event and subscriber)."),
		latency:          d("delivery_latency_seconds", "Delay from an event's arrival at this node to its write to a subscriber, weighted by subscribers."),
		disconnects:      d("slow_consumer_disconnects_total", "Subscribers disconnected by the node, by reason.", "reason"),
		slowPath:         d("slow_path_total", "Moves of a subscriber whose socket was full to the catch-up path."),
		upstreamConnects: d("upstream_connects_total", "Successful upstream connections."),
		upstreamErrors:   d("upstream_errors_total", "Failed upstream connections and reads, by kind.", "kind"),
		reparents:        d("reparents_total", "Make-before-break switches of a stream to a new upstream."),
		gaps:             d("gaps_total", "Subscribers told of events that could not be replayed."),
		catchUps:         d("catchup_fetches_total", "Upstream requests for history older than the buffer, made for resuming subscribers."),
		catchUpRefused:   d("catchup_refused_total", "History fetches not made because a budget was spent (scope: stream, node or client); the subscriber got a gap event.", "scope"),
		ignoredIDs:       d("last_event_ids_ignored_total", "Last-Event-IDs from clients ignored for CR, LF or NUL, or for being over 1 KiB."),
		admitWaits:       d("admission_waits_total", "Subscribers admitted after waiting for their turn (limits.admit): the node was pacing a burst of new clients."),
		admitWaitSeconds: d("admission_wait_seconds_total", "Time subscribers spent waiting for their turn (limits.admit), summed."),
		streamRequests:   d("stream_requests_total", "Requests on the client listener for mounted paths, by protocol (http/1.1 or h2).", "protocol"),
		members:          d("mesh_members", "Gossip members by state.", "state"),
		consulErrors:     d("consul_request_errors_total", "Failed Consul requests."),
		authAllowed:      d("auth_allowed_total", "Clients admitted by a back end's auth (backend \"default\" is the top-level auth).", "backend"),
		authRefused:      d("auth_refused_total", "Clients refused by a back end's auth, by reason.", "backend", "reason"),
		authLatency:      d("auth_latency_seconds", "Time to decide whether a client may read a stream.", "backend"),
		authRequests:     d("auth_requests_total", "Requests made to an auth server (delegate), after caching and merging.", "backend"),
		authCacheHits:    d("auth_cache_hits_total", "Auth verdicts answered from the cache (delegate).", "backend"),
		reloads:          d("config_reloads_total", "Configuration reloads (SIGHUP, POST /v1/reload), by result: ok or refused.", "result"),
		gossipRefused:    d("gossip_refusals_total", "Gossip alive messages refused: the member's advertised client or admin address is not on its gossip address, or its metadata is unreadable."),
	}
}

// Describe sends every descriptor, the mesh ones included, so the registry
// can check the names even on scrapes that leave the mesh metrics out.
func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.info, c.ready, c.clients, c.capacity, c.streams, c.clientsTotal, c.refused, c.eventsIn, c.deliveries,
		c.latency, c.disconnects, c.slowPath, c.upstreamConnects, c.upstreamErrors, c.reparents, c.gaps, c.catchUps,
		c.catchUpRefused, c.ignoredIDs, c.streamRequests, c.admitWaits, c.admitWaitSeconds, c.members, c.consulErrors, c.gossipRefused,
		c.authAllowed, c.authRefused, c.authLatency, c.authRequests, c.authCacheHits, c.reloads, c.buildInfo, c.proxyConns,
	} {
		ch <- d
	}
}

// Collect reads one snapshot of the relay's counters.
func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(ch, c.n.meshStatsSource())
}

// collect is Collect with the mesh source as a parameter; ms may be nil.
func (c *nodeCollector) collect(ch chan<- prometheus.Metric, ms meshStats) {
	n := c.n
	s := n.relay.Metrics().Snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	byLabel := func(d *prometheus.Desc, m map[string]uint64) {
		for _, k := range metricKeys(m) {
			counter(d, m[k], k)
		}
	}

	gauge(c.buildInfo, 1, c.build.Version, c.build.Revision, c.build.GoVersion)
	gauge(c.info, 1, n.cfg.NodeID, n.cfg.Mesh.DC, strconv.Itoa(n.cfg.Mesh.Tier))
	ready := 0.0
	if n.ready.Load() {
		ready = 1
	}
	gauge(c.ready, ready)
	gauge(c.clients, float64(n.relay.Clients()))
	gauge(c.capacity, float64(n.live().cfg.Limits.MaxClients))
	gauge(c.streams, float64(n.relay.Streams()))
	counter(c.clientsTotal, s.ClientsTotal)
	byLabel(c.refused, s.Refused)
	counter(c.eventsIn, s.EventsIn)
	counter(c.deliveries, s.Deliveries)
	ch <- latencyHistogram(c.latency, s.Latency)
	byLabel(c.disconnects, s.Disconnects)
	counter(c.slowPath, s.SlowPath)
	counter(c.upstreamConnects, s.UpstreamConnects)
	byLabel(c.upstreamErrors, s.UpstreamErrors)
	counter(c.reparents, s.Reparents)
	counter(c.gaps, s.Gaps)
	counter(c.catchUps, s.CatchUps)
	byLabel(c.catchUpRefused, s.CatchUpRefused)
	counter(c.ignoredIDs, n.ignoredIDs.Load())
	counter(c.admitWaits, n.admitWaits.Load())
	ch <- prometheus.MustNewConstMetric(c.admitWaitSeconds, prometheus.CounterValue, float64(n.admitWaitNanos.Load())/1e9)
	counter(c.streamRequests, n.h1Requests.Load(), "http/1.1")
	counter(c.streamRequests, n.h2Requests.Load(), "h2")
	counter(c.reloads, n.reloadCounts.ok.Load(), "ok")
	counter(c.reloads, n.reloadCounts.refused.Load(), "refused")
	if n.proxyStats != nil {
		ps := n.proxyStats()
		counter(c.proxyConns, ps.Proxied, "proxied")
		counter(c.proxyConns, ps.Local, "local")
		counter(c.proxyConns, ps.Untrusted, "untrusted")
		counter(c.proxyConns, ps.Failed, "failed")
		counter(c.proxyConns, ps.Shed, "shed")
	}
	n.live().auth.each(func(label string, au *clientauth.Auth) {
		st := au.Stats()
		counter(c.authAllowed, st.Allowed, label)
		for _, reason := range clientauth.Reasons() {
			counter(c.authRefused, st.Refused[reason], label, reason)
		}
		counter(c.authRequests, st.AuthRequests, label)
		counter(c.authCacheHits, st.CacheHits, label)
		ch <- prometheus.MustNewConstHistogram(c.authLatency, st.Latency.Count, st.Latency.Sum, st.Latency.Cumulative(), label)
	})

	if ms == nil {
		return
	}
	members := ms.MembersByState()
	for _, k := range metricKeys(members) {
		gauge(c.members, float64(members[k]), k)
	}
	counter(c.consulErrors, ms.ConsulErrors())
	counter(c.gossipRefused, ms.RefusedMembers())
}

// latencyHistogram turns the relay's per-bucket counts into Prometheus's
// cumulative ones. The relay's last count is the +Inf bucket, which
// Prometheus carries as the total count instead.
func latencyHistogram(d *prometheus.Desc, h relay.HistogramSnapshot) prometheus.Metric {
	buckets := make(map[float64]uint64, len(relay.LatencyBuckets))
	var cum uint64
	for i, upper := range relay.LatencyBuckets {
		if i < len(h.Counts) {
			cum += h.Counts[i]
		}
		buckets[upper] = cum
	}
	for i := len(relay.LatencyBuckets); i < len(h.Counts); i++ {
		cum += h.Counts[i]
	}
	return prometheus.MustNewConstHistogram(d, cum, h.SumSeconds, buckets)
}

// newMetricsRegistry is the node's private registry: two nodes in one
// process (tests, the demo) each report only their own counters.
func (n *Node) newMetricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newNodeCollector(n),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// metricsHandler serves the registry in the Prometheus exposition formats.
func (n *Node) metricsHandler() http.Handler {
	reg := n.newMetricsRegistry()
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      n.log.WithField("component", "metrics"),
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	})
}

func metricKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
