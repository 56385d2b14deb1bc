package netns

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// The mesh: a root and two leaves in dc1 next to the back end; a relay
// (dc2's gateway) and two leaves in dc2. Clients of each data centre read
// two streams from the leaves of their own data centre.
var (
	meshNodes = []meshNode{
		{"root1", "dc1", 0, ""},
		{"leaf1a", "dc1", 2, "root1"},
		{"leaf1b", "dc1", 2, "root1"},
		{"relay2", "dc2", 1, ""},
		{"leaf2a", "dc2", 2, "relay2"},
		{"leaf2b", "dc2", 2, "relay2"},
	}
	streams = []string{"/feed/a", "/feed/b"}
)

const (
	eventRate      = 5   // events per second per stream
	clientsPerDC   = 100 // spread over the DC's two leaves and both streams
	consulNodeID1  = "5a1c0d1e-0000-4000-8000-000000000001"
	consulNodeID2  = "5a1c0d1e-0000-4000-8000-000000000002"
	readyTimeout   = 60 * time.Second
	steadyTimeout  = 120 * time.Second
	consulSerfWAN  = 8302
	clientsIdleFor = 45 * time.Second
)

type meshNode struct {
	name string
	dc   string
	tier int
	seed string // gossip seed in the same DC
}

func consulHost(dc string) string { return "consul" + strings.TrimPrefix(dc, "dc") }

// startConsul runs dc's Consul server. Both servers keep retrying to join
// each other over WAN, so a restarted one finds the other by itself. dc1's
// configuration directory holds the back end's service definition, so the
// back end is in the catalog at every start, as on a real agent.
func (d *drill) startConsul(dc string) *proc {
	d.t.Helper()
	h := d.host(consulHost(dc))
	other, id := "dc2", consulNodeID1
	if dc == "dc2" {
		other, id = "dc1", consulNodeID2
	}
	args := []string{
		"agent", "-dev",
		"-datacenter", dc, "-node", "consul-" + dc, "-node-id", id,
		"-bind", h.ip, "-advertise", h.ip, "-advertise-wan", h.ip, "-client", h.ip,
		"-http-port", strconv.Itoa(consulPort),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-log-level", "info",
		"-hcl", "disable_update_check = true",
		"-config-dir", filepath.Join(d.state, "consul-"+dc+".d"),
		"-retry-join-wan", net.JoinHostPort(d.host(consulHost(other)).ip, strconv.Itoa(consulSerfWAN)),
		"-retry-interval-wan", "1s",
	}
	p := d.start("consul-"+dc, h.ns(), d.consul, childEnv("CHECKPOINT_DISABLE=1"), args...)
	ssetest.EventuallyEvery(d.t, "Consul "+dc+" leader", 60*time.Second, 100*time.Millisecond, func() bool {
		b, err := d.get("http://" + d.addr(h.name, consulPort) + "/v1/status/leader")
		return err == nil && strings.Contains(string(b), ":")
	})
	return p
}

// writeBackendService puts the back end's definition into dc1's Consul
// configuration directory: a prefix mount /feed/, checked over HTTP.
func (d *drill) writeBackendService() {
	d.t.Helper()
	be := d.host("backend")
	def := map[string]any{"service": map[string]any{
		"id": "feed-1", "name": "feed", "address": be.ip, "port": clientPort,
		"tags": []string{"ssemesh"},
		"meta": map[string]string{
			"ssemesh-path": backendURL, "ssemesh-mount": backendURL,
			"ssemesh-prefix": "true", "ssemesh-scheme": "http",
		},
		"check": map[string]any{
			"name": "feed HTTP", "http": "http://" + d.addr("backend", clientPort) + "/_backend/stats",
			"method": "GET", "interval": "2s", "timeout": "1s",
		},
	}}
	b, err := json.Marshal(def)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.state, "consul-dc1.d", "feed.json"), b, 0o644); err != nil {
		d.t.Fatal(err)
	}
}

func (d *drill) consulDatacenters(dc string) []string {
	var dcs []string
	_ = d.getJSON("http://"+d.addr(consulHost(dc), consulPort)+"/v1/catalog/datacenters", &dcs)
	return dcs
}

// passing counts the passing instances of service in dc, asked of dc's
// own server.
func (d *drill) passing(dc, service string) int {
	var entries []json.RawMessage
	u := "http://" + d.addr(consulHost(dc), consulPort) + "/v1/health/service/" + service + "?passing=1"
	if err := d.getJSON(u, &entries); err != nil {
		return -1
	}
	return len(entries)
}

func (d *drill) startBackend() {
	d.t.Helper()
	d.start("backend", d.host("backend").ns(), d.faultkit, childEnv(),
		"backend", "--listen", d.addr("backend", clientPort), "--rate", strconv.Itoa(eventRate))
	ssetest.EventuallyEvery(d.t, "back end", 20*time.Second, 100*time.Millisecond, func() bool {
		_, err := d.get("http://" + d.addr("backend", clientPort) + "/_backend/stats")
		return err == nil
	})
}

func (d *drill) startNode(n meshNode) {
	d.t.Helper()
	h := d.host(n.name)
	args := []string{"run",
		"--listen", d.addr(n.name, clientPort),
		"--admin", d.addr(n.name, adminPort),
		"--gossip", d.addr(n.name, gossipPort),
		"--node-id", n.name, "--dc", n.dc, "--tier", strconv.Itoa(n.tier),
		"--consul", d.addr(consulHost(n.dc), consulPort),
	}
	if n.seed != "" {
		args = append(args, "--seed", d.addr(n.seed, gossipPort))
	}
	env := childEnv("SSEMESH_MESH_SECRET="+d.secret, "SSEMESH_GOSSIP_KEY="+d.gossipKey, "SSEMESH_ADMIN_TOKEN="+d.token)
	d.start(n.name, h.ns(), d.ssemesh, env, args...)
}

func (d *drill) waitReady(name string) {
	d.t.Helper()
	p := d.proc(name)
	err := func() error {
		deadline := time.Now().Add(readyTimeout)
		for time.Now().Before(deadline) {
			if !p.alive() {
				return fmt.Errorf("exited: %v", p.exitErr())
			}
			if _, err := d.get("http://" + d.addr(name, adminPort) + "/readyz"); err == nil {
				return nil
			}
			time.Sleep(200 * time.Millisecond)
		}
		return fmt.Errorf("not ready after %v", readyTimeout)
	}()
	if err != nil {
		d.t.Fatalf("node %s: %v\n%s", name, err, d.logTail(name, 40))
	}
}

// clientURLs are the URLs the clients of dc read: both streams on both
// of its leaves.
func (d *drill) clientURLs(dc string) []string {
	var urls []string
	for _, n := range meshNodes {
		if n.dc != dc || n.tier != 2 {
			continue
		}
		for _, s := range streams {
			urls = append(urls, "http://"+d.addr(n.name, clientPort)+s)
		}
	}
	return urls
}

func (d *drill) clientsSock(dc string) string {
	return filepath.Join(d.state, "clients-"+dc+".sock")
}

func (d *drill) startClients(dc string) {
	d.t.Helper()
	name := "clients" + strings.TrimPrefix(dc, "dc")
	args := []string{"clients", "--clients", strconv.Itoa(clientsPerDC), "--stats", d.clientsSock(dc),
		"--idle", clientsIdleFor.String()}
	for _, u := range d.clientURLs(dc) {
		args = append(args, "--url", u)
	}
	p := d.start(name, d.host(name).ns(), d.faultkit, childEnv(), args...)
	ssetest.EventuallyEvery(d.t, "clients of "+dc, 10*time.Second, 100*time.Millisecond, func() bool {
		_, err := d.clientStats(dc, false)
		return err == nil && p.alive()
	})
}

// groupStats mirrors faultkit's GroupStats.
type groupStats struct {
	URL        string  `json:"url"`
	Clients    int     `json:"clients"`
	Connected  int     `json:"connected"`
	Started    int     `json:"started"`
	Sessions   int     `json:"sessions"`
	Received   int64   `json:"received"`
	Duplicates int64   `json:"duplicates"`
	Lost       int64   `json:"lost"`
	GapEvents  int64   `json:"gapEvents"`
	Errors     int64   `json:"errors"`
	LastError  string  `json:"lastError"`
	MinLast    int64   `json:"minLast"`
	MaxLast    int64   `json:"maxLast"`
	StaleMs    float64 `json:"staleMs"`
	Latency    struct {
		N   int     `json:"n"`
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"latency"`
}

func (g groupStats) stream() string {
	u, err := url.Parse(g.URL)
	if err != nil {
		return ""
	}
	return u.Path
}

// clientStats reads the counters of dc's clients; reset starts a new
// latency window.
func (d *drill) clientStats(dc string, reset bool) ([]groupStats, error) {
	u := "http://clients/stats"
	if reset {
		u += "?reset=1"
	}
	resp, err := unixClient(d.clientsSock(dc)).Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var gs []groupStats
	return gs, json.NewDecoder(resp.Body).Decode(&gs)
}

// tally is what the clients of one or more data centres counted.
type tally struct {
	clients, started, connected, sessions   int
	received, dups, lost, gapEvents, errors int64
	staleMs                                 float64
	lastError                               string
}

func (a tally) minus(b tally) tally {
	return tally{
		clients: a.clients, started: a.started, connected: a.connected,
		sessions: a.sessions - b.sessions, received: a.received - b.received,
		dups: a.dups - b.dups, lost: a.lost - b.lost, gapEvents: a.gapEvents - b.gapEvents,
		errors: a.errors - b.errors, staleMs: a.staleMs, lastError: a.lastError,
	}
}

func tallyOf(gs []groupStats) tally {
	var t tally
	for _, g := range gs {
		t.clients += g.Clients
		t.started += g.Started
		t.connected += g.Connected
		t.sessions += g.Sessions
		t.received += g.Received
		t.dups += g.Duplicates
		t.lost += g.Lost
		t.gapEvents += g.GapEvents
		t.errors += g.Errors
		t.staleMs = max(t.staleMs, g.StaleMs)
		if g.LastError != "" {
			t.lastError = g.LastError
		}
	}
	return t
}

func (d *drill) tally(dc string) tally {
	d.t.Helper()
	gs, err := d.clientStats(dc, false)
	if err != nil {
		d.t.Fatalf("clients of %s: %v\n%s", dc, err, d.logTail("clients"+strings.TrimPrefix(dc, "dc"), 20))
	}
	return tallyOf(gs)
}

// backendStream mirrors internal/backend.StreamStats.
type backendStream struct {
	Open   int   `json:"open"`
	Total  int   `json:"total"`
	LastID int64 `json:"last_id"`
}

func (d *drill) backendStats() map[string]backendStream {
	d.t.Helper()
	var m map[string]backendStream
	if err := d.getJSON("http://"+d.addr("backend", clientPort)+"/_backend/stats", &m); err != nil {
		d.t.Fatalf("back-end stats: %v", err)
	}
	return m
}

func (d *drill) lastIDs() map[string]int64 {
	out := map[string]int64{}
	for k, s := range d.backendStats() {
		out[k] = s.LastID
	}
	return out
}

// caughtUp reports whether every client of the given data centres has
// received, for its stream, every id up to want.
func (d *drill) caughtUp(want map[string]int64, dcs ...string) bool {
	for _, dc := range dcs {
		gs, err := d.clientStats(dc, false)
		if err != nil {
			return false
		}
		for _, g := range gs {
			if g.Started < g.Clients || g.MinLast < want[g.stream()] {
				return false
			}
		}
	}
	return true
}

// streamInfo is one entry of a node's /v1/streams.
type streamInfo struct {
	Stream      string `json:"stream"`
	Upstream    string `json:"upstream"`
	State       string `json:"state"`
	Clients     int    `json:"clients"`
	EventsIn    uint64 `json:"events_in"`
	Reconnects  uint64 `json:"reconnects"`
	LastEventID string `json:"last_event_id"`
}

func (d *drill) nodeStreams(name string) (map[string]streamInfo, error) {
	var body struct {
		Streams []streamInfo `json:"streams"`
	}
	if err := d.getJSON("http://"+d.addr(name, adminPort)+"/v1/streams", &body); err != nil {
		return nil, err
	}
	out := map[string]streamInfo{}
	for _, s := range body.Streams {
		out[s.Stream] = s
	}
	return out, nil
}

// upstreamHost names the host a stream's upstream label points at:
// "node ID (ip:port)" for a parent node, the back end's URL otherwise.
func (d *drill) upstreamHost(label string) host {
	s := label
	if i := strings.LastIndexByte(s, '('); i >= 0 {
		s = strings.TrimSuffix(s[i+1:], ")")
	} else if u, err := url.Parse(s); err == nil && u.Host != "" {
		s = u.Host
	}
	ip, _, err := net.SplitHostPort(s)
	if err != nil {
		return host{}
	}
	for _, h := range d.hosts {
		if h.ip == ip {
			return h
		}
	}
	return host{}
}

func (d *drill) alive(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.procs[name]
	return p != nil && p.alive()
}

// crossLinks is how the stream crosses into dc2: per stream, the dc2
// nodes whose upstream is a dc1 node (their own account, /v1/streams),
// and the established TCP connections between dc2 nodes and dc1 client
// listeners seen from each side (ss).
type crossLinks struct {
	perStream map[string][]string
	out, in   int
	sockets   []string // dc2 side, "local->peer"
	err       error
}

func (c crossLinks) oneEach() bool {
	if c.err != nil {
		return false
	}
	for _, s := range streams {
		if len(c.perStream[s]) != 1 {
			return false
		}
	}
	return c.out == len(streams) && c.in == len(streams)
}

func (c crossLinks) String() string {
	if c.err != nil {
		return "error: " + c.err.Error()
	}
	var parts []string
	for _, s := range streams {
		g := c.perStream[s]
		name := strings.Join(g, "+")
		if name == "" {
			name = "none"
		}
		parts = append(parts, fmt.Sprintf("%s: %d (%s)", strings.TrimPrefix(s, backendURL), len(g), name))
	}
	return fmt.Sprintf("%s; TCP %d out / %d in", strings.Join(parts, ", "), c.out, c.in)
}

func (d *drill) crossDC() crossLinks {
	c := crossLinks{perStream: map[string][]string{}}
	port := ":" + strconv.Itoa(clientPort)
	inDC := func(addr, dc string) bool {
		ip, _, err := net.SplitHostPort(addr)
		if err != nil {
			return false
		}
		for _, h := range d.hosts {
			if h.ip == ip {
				return h.dc == dc
			}
		}
		return false
	}
	for _, n := range meshNodes {
		if !d.alive(n.name) {
			continue
		}
		conns, err := ssEstablished(d.host(n.name).ns())
		if err != nil {
			c.err = err
			return c
		}
		for _, cn := range conns {
			local, peer := cn[0], cn[1]
			if n.dc == "dc2" && strings.HasSuffix(peer, port) && inDC(peer, "dc1") {
				c.out++
				c.sockets = append(c.sockets, local+"->"+peer)
			}
			if n.dc == "dc1" && strings.HasSuffix(local, port) && inDC(peer, "dc2") {
				c.in++
			}
		}
		if n.dc != "dc2" {
			continue
		}
		ss, err := d.nodeStreams(n.name)
		if err != nil {
			c.err = err
			return c
		}
		for _, s := range streams {
			if si, ok := ss[s]; ok && si.State == "live" && d.upstreamHost(si.Upstream).dc == "dc1" {
				c.perStream[s] = append(c.perStream[s], n.name)
			}
		}
	}
	slices.Sort(c.sockets)
	return c
}

// nodeMetrics reads a node's /metrics.
func (d *drill) nodeMetrics(name string) (map[string]float64, error) {
	b, err := d.get("http://" + d.addr(name, adminPort) + "/metrics")
	if err != nil {
		return nil, err
	}
	return parseMetrics(b), nil
}

// counters is what the drill compares per node before and after a fault:
// node-wide metrics, and each drill stream's upstream and reconnections
// as the node reports them (probe streams count in the metrics only).
type counters struct {
	reparents, connects, upstreamErrors, gaps, consulErrors float64
	streams                                                 map[string]string // stream -> "upstream, n reconnects"
}

func (d *drill) counters() map[string]counters {
	d.t.Helper()
	out := map[string]counters{}
	for _, n := range meshNodes {
		if !d.alive(n.name) {
			continue
		}
		m, err := d.nodeMetrics(n.name)
		if err != nil {
			d.t.Errorf("metrics of %s: %v", n.name, err)
			continue
		}
		c := counters{
			reparents:      sum(m, "ssemesh_reparents_total"),
			connects:       sum(m, "ssemesh_upstream_connects_total"),
			upstreamErrors: sum(m, "ssemesh_upstream_errors_total"),
			gaps:           sum(m, "ssemesh_gaps_total"),
			consulErrors:   sum(m, "ssemesh_consul_request_errors_total"),
			streams:        map[string]string{},
		}
		ss, err := d.nodeStreams(n.name)
		if err != nil {
			d.t.Errorf("streams of %s: %v", n.name, err)
		}
		for _, st := range streams {
			if si, ok := ss[st]; ok {
				c.streams[st] = fmt.Sprintf("%s, %d reconnects", si.Upstream, si.Reconnects)
			}
		}
		out[n.name] = c
	}
	return out
}

// tcpConnectMs times a TCP connect from one host to another's admin
// port, as seen by a shell in the first host's namespace (so it includes
// starting that shell).
func (d *drill) tcpConnectMs(from, to string) (float64, error) {
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", d.host(to).ip, adminPort)
	start := time.Now()
	if out, err := execOut("ip", "netns", "exec", d.host(from).ns(), "bash", "-c", script); err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	return float64(time.Since(start).Microseconds()) / 1000, nil
}

// tcpInfo is `ss -ti` for the established connections of a host's client
// listener whose peer is in dc: one line per connection with its send
// queue, retransmission timer and backoff.
func (d *drill) tcpInfo(name, dc string) string {
	var peers []string
	for _, h := range d.hosts {
		if h.dc == dc {
			peers = append(peers, "dst "+h.ip)
		}
	}
	out, err := execOut("ip", "netns", "exec", d.host(name).ns(), "ss", "-Htin", "state", "established",
		"( sport = :"+strconv.Itoa(clientPort)+" ) and ( "+strings.Join(peers, " or ")+" )")
	if err != nil {
		return fmt.Sprintf("ss: %v: %s", err, out)
	}
	var conns []string
	var cur string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		// A socket's line starts at the margin; its details follow on an
		// indented line.
		if len(f) >= 4 && line[0] != ' ' && line[0] != '\t' {
			if cur != "" {
				conns = append(conns, cur)
			}
			cur = fmt.Sprintf("%s->%s send-q %s", f[2], f[3], f[1])
			continue
		}
		for _, w := range f {
			for _, k := range []string{"rto:", "backoff:", "unacked:", "retrans:", "lastsnd:", "lastack:"} {
				if strings.HasPrefix(w, k) {
					cur += " " + w
				}
			}
		}
	}
	if cur != "" {
		conns = append(conns, cur)
	}
	return strings.Join(conns, " | ")
}

// members lists the members in a node's view with their states, as its
// /v1/nodes shows them.
func (d *drill) members(name string) string {
	var body struct {
		Nodes []struct {
			ID    string `json:"id"`
			DC    string `json:"dc"`
			State string `json:"state"`
		} `json:"nodes"`
	}
	if err := d.getJSON("http://"+d.addr(name, adminPort)+"/v1/nodes", &body); err != nil {
		return "(" + err.Error() + ")"
	}
	var out []string
	for _, n := range body.Nodes {
		out = append(out, n.ID+"/"+n.DC+"/"+n.State)
	}
	return strings.Join(out, " ")
}

// probeNewStream opens a stream no client holds yet on a node and
// reports the answer's status and error code: what a new client of that
// stream gets at that moment.
func (d *drill) probeNewStream(name string, n int) string {
	url := fmt.Sprintf("http://%s/feed/probe-%d", d.addr(name, clientPort), n)
	resp, err := d.obs.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	return fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("X-Ssemesh-Error"))
}
