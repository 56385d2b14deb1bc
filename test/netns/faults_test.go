// Package netns is a fault drill for a two-data-centre ssemesh mesh in
// network namespaces: real Consul servers, real `ssemesh run` processes, a
// synthetic back end and SSE clients, each on a host (namespace) of its own,
// with a router between the data centres whose link is cut, shaped and
// healed. It runs only with SSEMESH_NETNS=1 as root; see
// scripts/netns-faults.sh for the layout and the entry point.
package netns

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/topology"
)

const (
	partitionFor    = 30 * time.Second
	shapeDelay      = "50ms" // each way
	shapeLoss       = "0.01" // each way
	shapeFor        = 20 * time.Second
	consulOutageFor = 30 * time.Second
	recoverTimeout  = 120 * time.Second
	// linkSettle is how long after recovery the drill waits for exactly
	// one cross-DC link per stream before calling a duplicate a finding.
	linkSettle = 20 * time.Second
	// viewRefresh covers a node's poll of the other data centres' catalog
	// (5 s) twice, so every view has seen the restarted Consul.
	viewRefresh = 12 * time.Second
)

// TestFaultsAcrossDataCentres builds the mesh in namespaces, puts clients
// of both data centres on it with events flowing, and injects four faults
// in turn: a 30 s partition between the data centres, 50 ms (each way) of
// delay and 1 % loss on the link, a kill -9 of dc2's gateway, and dc1's
// Consul server stopped for 30 s. For each it measures the time to recover,
// events lost and duplicated at the clients, and the links crossing into
// dc2 before and after, and prints a table.
func TestFaultsAcrossDataCentres(t *testing.T) {
	d := requireDrill(t)
	runStart := time.Now()
	d.build()
	d.network()
	d.startObserver()

	setupStart := time.Now()
	d.writeBackendService()
	d.startConsul("dc1")
	d.startConsul("dc2")
	ssetest.EventuallyEvery(t, "WAN join of dc1 and dc2", 60*time.Second, 100*time.Millisecond, func() bool {
		return len(d.consulDatacenters("dc1")) == 2 && len(d.consulDatacenters("dc2")) == 2
	})
	consulUp := time.Since(setupStart)
	d.startBackend()
	for _, n := range meshNodes {
		d.startNode(n)
	}
	for _, n := range meshNodes {
		d.waitReady(n.name)
	}
	d.startClients("dc1")
	d.startClients("dc2")
	d.waitSteady()
	setup := time.Since(setupStart)
	t.Logf("set-up: Consul servers up and WAN-joined in %v, mesh steady with %d clients in %v", consulUp.Round(time.Millisecond), 2*clientsPerDC, setup.Round(time.Millisecond))
	t.Logf("tree before the faults: %s", d.crossDC())

	var results []result
	results = append(results, d.partitionPhase())
	results = append(results, d.shapePhase())
	results = append(results, d.killGatewayPhase())
	results = append(results, d.consulOutagePhase())

	// Whole run: every client's ids were contiguous from its first event.
	t1, t2 := d.tally("dc1"), d.tally("dc2")
	be := d.backendStats()
	var beNotes []string
	for _, s := range streams {
		beNotes = append(beNotes, fmt.Sprintf("%s: %d open, %d ever, last id %d", s, be[s].Open, be[s].Total, be[s].LastID))
	}
	summary := fmt.Sprintf("whole run: dc1 clients %d events, %d lost, %d duplicated, %d gap events, %d sessions; dc2 clients %d events, %d lost, %d duplicated, %d gap events, %d sessions; back end %s",
		t1.received, t1.lost, t1.dups, t1.gapEvents, t1.sessions,
		t2.received, t2.lost, t2.dups, t2.gapEvents, t2.sessions, strings.Join(beNotes, "; "))
	elapsed := time.Since(runStart)
	t.Logf("\n%s\n%s\nset-up %v (Consul %v); whole test %v, build included",
		renderTable(results), summary, setup.Round(time.Second), consulUp.Round(time.Second), elapsed.Round(time.Second))
	for _, s := range streams {
		if be[s].Open != 1 {
			t.Errorf("back end has %d open connections for %s at the end, want 1", be[s].Open, s)
		}
	}
	if t1.lost+t2.lost+t1.dups+t2.dups+t1.gapEvents+t2.gapEvents > 0 {
		t.Errorf("over the whole run clients lost %d, got %d duplicates and %d gap events", t1.lost+t2.lost, t1.dups+t2.dups, t1.gapEvents+t2.gapEvents)
	}
}

// waitSteady waits until every client has events, the back end serves
// exactly one connection per stream, exactly one dc2 node takes each
// stream from dc1, and every node's view holds every node alive (its own
// data centre through gossip, the other through Consul's health checks).
func (d *drill) waitSteady() {
	d.t.Helper()
	var last string
	_, ok := ssetest.Poll(steadyTimeout, 250*time.Millisecond, func() bool {
		t1, t2 := d.tally("dc1"), d.tally("dc2")
		be := d.backendStats()
		c := d.crossDC()
		last = fmt.Sprintf("dc1 clients started %d/%d (%s), dc2 %d/%d (%s), back end %+v, cross-DC %s",
			t1.started, t1.clients, t1.lastError, t2.started, t2.clients, t2.lastError, be, c)
		if t1.started < t1.clients || t2.started < t2.clients || !c.oneEach() {
			return false
		}
		for _, n := range meshNodes {
			m, err := d.nodeMetrics(n.name)
			if err != nil {
				return false
			}
			if v := m[`ssemesh_mesh_members{state="alive"}`]; v != float64(len(meshNodes)) {
				last += fmt.Sprintf("; %s sees %.0f alive members", n.name, v)
				return false
			}
		}
		for _, s := range streams {
			if be[s].Open != 1 {
				return false
			}
		}
		return true
	})
	if !ok {
		for _, n := range meshNodes {
			d.t.Logf("%s log:\n%s", n.name, d.logTail(n.name, 15))
		}
		d.t.Fatalf("mesh not steady after %v: %s", steadyTimeout, last)
	}
}

// result is one row of the table.
type result struct {
	phase, fault string
	recovery     string
	lost, dups   int64
	gapEvents    int64
	before       string
	after        string
	notes        []string
	took         time.Duration
}

// account fills the client counts of r from tallies taken before and
// after the phase and flags any loss.
func (d *drill) account(r *result, before1, before2 tally) {
	a1, a2 := d.tally("dc1").minus(before1), d.tally("dc2").minus(before2)
	r.lost = a1.lost + a2.lost
	r.dups = a1.dups + a2.dups
	r.gapEvents = a1.gapEvents + a2.gapEvents
	r.notes = append(r.notes, fmt.Sprintf("client reconnects dc1 %d, dc2 %d", a1.sessions, a2.sessions))
	if r.lost != 0 || r.dups != 0 || r.gapEvents != 0 {
		d.t.Errorf("%s: clients lost %d events (dc1 %d, dc2 %d), got %d duplicates and %d gap events",
			r.phase, r.lost, a1.lost, a2.lost, r.dups, r.gapEvents)
	}
}

// settleCatchUp waits until every client has every event published so far.
func (d *drill) settleCatchUp(phase string) time.Duration {
	want := d.lastIDs()
	took, ok := ssetest.Poll(recoverTimeout, 100*time.Millisecond, func() bool { return d.caughtUp(want, "dc1", "dc2") })
	if !ok {
		d.t.Errorf("%s: clients did not catch up with ids %v within %v (dc1 %+v, dc2 %+v)", phase, want, recoverTimeout, d.tally("dc1"), d.tally("dc2"))
	}
	return took
}

// during is what the drill saw while a fault lasted, sampled once a
// second: the longest any client of each data centre had waited for an
// event, and the fewest alive members in the views of a dc1 and a dc2
// node (each view holds its own data centre from gossip and the other
// from Consul).
type during struct {
	stale1, stale2       float64 // ms
	view1, view2         float64 // fewest alive members seen
	viewOf1, viewOf2     string
	view1At, view2At     float64 // first time the fewest was seen, s into the fault
	viewBase1, viewBase2 float64
	back1, back2         float64 // when a shrunk view had its members again, s into the fault; 0: never
	// When a view shrank: its members then, and what a new stream on
	// that node got at that moment.
	shrunk []string
}

// sampleDuring samples every `every` for at most dur. With until set, it
// also notes when until first holds (reached, and how long that took) and
// stops `after` later.
func (d *drill) sampleDuring(dur, every time.Duration, until func() bool, after time.Duration) (w during, reached time.Duration, ok bool) {
	for _, n := range meshNodes {
		if !d.alive(n.name) {
			continue
		}
		if n.dc == "dc1" && w.viewOf1 == "" {
			w.viewOf1 = n.name
		}
		if n.dc == "dc2" && w.viewOf2 == "" {
			w.viewOf2 = n.name
		}
	}
	alive := func(name string) float64 {
		m, err := d.nodeMetrics(name)
		if err != nil {
			return math.NaN()
		}
		return m[`ssemesh_mesh_members{state="alive"}`]
	}
	w.viewBase1, w.viewBase2 = alive(w.viewOf1), alive(w.viewOf2)
	w.view1, w.view2 = w.viewBase1, w.viewBase2
	start := time.Now()
	for time.Since(start) < dur && !(ok && time.Since(start) >= reached+after) {
		w.stale1 = max(w.stale1, d.tally("dc1").staleMs)
		w.stale2 = max(w.stale2, d.tally("dc2").staleMs)
		v1, v2 := alive(w.viewOf1), alive(w.viewOf2)
		if v1 < w.view1 {
			w.view1, w.view1At = v1, time.Since(start).Seconds()
			w.shrunk = append(w.shrunk, d.shrunkNote(w.viewOf1, w.view1At))
		}
		if v2 < w.view2 {
			w.view2, w.view2At = v2, time.Since(start).Seconds()
			w.shrunk = append(w.shrunk, d.shrunkNote(w.viewOf2, w.view2At))
		}
		if w.view1 < w.viewBase1 && w.back1 == 0 && v1 >= w.viewBase1 {
			w.back1 = time.Since(start).Seconds()
		}
		if w.view2 < w.viewBase2 && w.back2 == 0 && v2 >= w.viewBase2 {
			w.back2 = time.Since(start).Seconds()
		}
		if until != nil && !ok && until() {
			reached, ok = time.Since(start), true
		}
		time.Sleep(every)
	}
	return w, reached, ok
}

func (d *drill) shrunkNote(name string, at float64) string {
	d.probes++
	return fmt.Sprintf("%.1f s: %s sees [%s]; a new stream there got %s", at, name, d.members(name), d.probeNewStream(name, d.probes))
}

func (w during) viewNote() string {
	f := func(name string, base, low, at, back float64) string {
		if low >= base {
			return fmt.Sprintf("%s's view kept its %.0f alive members", name, base)
		}
		s := fmt.Sprintf("%s's view fell from %.0f to %.0f alive members %.1f s in", name, base, low, at)
		if back > 0 {
			return s + fmt.Sprintf(", back to %.0f at %.1f s", base, back)
		}
		return s + ", not back by the end"
	}
	note := f(w.viewOf1, w.viewBase1, w.view1, w.view1At, w.back1) + "; " + f(w.viewOf2, w.viewBase2, w.view2, w.view2At, w.back2)
	if len(w.shrunk) > 0 {
		note += " (" + strings.Join(w.shrunk, "; ") + ")"
	}
	return note
}

func (d *drill) partitionPhase() result {
	t := d.t
	start := time.Now()
	r := result{phase: "1 partition", fault: fmt.Sprintf("dc1-dc2 link drops everything for %v, then heals", partitionFor)}
	b1, b2 := d.tally("dc1"), d.tally("dc2")
	before := d.crossDC()
	r.before = before.String()
	cnt := d.counters()

	d.sh("partition", "on")
	w, _, _ := d.sampleDuring(partitionFor-time.Second, time.Second, nil, 0)
	// The sender's side of the cross-DC connections just before the heal:
	// retransmission timer and backoff.
	tcpState := d.tcpInfo("root1", "dc2")
	time.Sleep(time.Second)
	want := d.lastIDs()
	d.sh("partition", "off")
	healed := time.Now()
	rec, ok := ssetest.Poll(recoverTimeout, 100*time.Millisecond, func() bool { return d.caughtUp(want, "dc2") })
	r.recovery = fmt.Sprintf("%.1f s after the heal", rec.Seconds())
	if !ok {
		r.recovery = fmt.Sprintf("not within %v", recoverTimeout)
		t.Errorf("partition: dc2 clients did not get the events published during the partition within %v of the heal", recoverTimeout)
	}
	atRecovery := d.crossDC()
	settle, ok := ssetest.Poll(linkSettle, 500*time.Millisecond, func() bool { return d.crossDC().oneEach() })
	after := d.crossDC()
	r.after = after.String()
	if !ok {
		t.Errorf("partition: %v after recovery dc2 does not have exactly one cross-DC link per stream: %s (at recovery: %s)", linkSettle, after, atRecovery)
	} else if !atRecovery.oneEach() {
		r.notes = append(r.notes, fmt.Sprintf("at recovery %s; one link each %.1f s later", atRecovery, settle.Seconds()))
	}
	if slices.Equal(before.sockets, after.sockets) {
		r.notes = append(r.notes, "dc2's gateway kept its TCP connections to dc1 through the partition")
	} else {
		r.notes = append(r.notes, fmt.Sprintf("cross-DC sockets before %v, after %v", before.sockets, after.sockets))
	}
	r.notes = append(r.notes, fmt.Sprintf("longest wait for an event during the partition: dc1 clients %.0f ms", w.stale1))
	r.notes = append(r.notes, "during the partition "+w.viewNote())
	r.notes = append(r.notes, "root1's TCP state towards dc2 just before the heal: "+tcpState)
	r.notes = append(r.notes, d.counterNotes(cnt, d.counters())...)
	d.settleCatchUp(r.phase)
	d.account(&r, b1, b2)
	r.took = time.Since(start)
	t.Logf("partition healed at %s; %s; %s", healed.Format("15:04:05.000"), r.recovery, strings.Join(r.notes, "; "))
	return r
}

// edgeLag collects, per child node, the lag its edge showed in the
// topology reports sampled during the phase.
type edgeLag struct {
	parent       string
	samples      int
	positive     int
	minMs, maxMs float64
	sumMs        float64
	maxEvents    int64
}

func (d *drill) shapePhase() result {
	t := d.t
	start := time.Now()
	r := result{phase: "2 delay+loss", fault: fmt.Sprintf("link delays %s each way and drops %s%% each way for %v", shapeDelay, pct(shapeLoss), shapeFor)}
	b1, b2 := d.tally("dc1"), d.tally("dc2")
	before := d.crossDC()
	r.before = before.String()
	cnt := d.counters()
	plain := d.minConnectMs("leaf2a", "root1")

	d.sh("shape", "on", shapeDelay, shapeLoss)
	shaped := d.minConnectMs("leaf2a", "root1")
	_, _ = d.clientStats("dc1", true)
	_, _ = d.clientStats("dc2", true)
	// The report as a dc1 node and as a dc2 node gather it: each asks
	// the other data centre's nodes across the shaped link.
	vantages := []string{"root1", "leaf2a"}
	lags := map[string]*edgeLag{}
	var reportErrs, unreachable int
	end := time.Now().Add(shapeFor)
	for i := 0; time.Now().Before(end); i++ {
		v := vantages[i%len(vantages)]
		var rep topology.Report
		if err := d.getJSON("http://"+d.addr(v, adminPort)+"/v1/topology", &rep); err != nil {
			reportErrs++
		} else {
			unreachable += len(rep.Unreachable)
			for _, s := range rep.Streams {
				for _, e := range s.Edges {
					k := v + ": " + strings.TrimPrefix(s.Stream, backendURL) + " " + e.Child
					l := lags[k]
					if l == nil {
						l = &edgeLag{minMs: math.Inf(1), maxMs: math.Inf(-1)}
						lags[k] = l
					}
					l.parent = e.Parent
					l.samples++
					if e.LagMs > 0 || e.LagEvents > 0 {
						l.positive++
					}
					l.maxMs = math.Max(l.maxMs, e.LagMs)
					l.minMs = math.Min(l.minMs, e.LagMs)
					l.sumMs += e.LagMs
					l.maxEvents = max(l.maxEvents, e.LagEvents)
				}
			}
		}
		time.Sleep(time.Second / 2)
	}
	g1, _ := d.clientStats("dc1", true)
	g2, _ := d.clientStats("dc2", true)
	d.sh("shape", "off")
	r.recovery = fmt.Sprintf("%.1f s to catch up after the link was restored", d.settleCatchUp(r.phase).Seconds())
	r.after = d.crossDC().String()

	r.notes = append(r.notes, fmt.Sprintf("TCP connect dc2->dc1 %.0f ms shaped, %.0f ms unshaped (from a shell, spawn included)", shaped, plain))
	r.notes = append(r.notes, fmt.Sprintf("client latency p50/p99/max: dc1 %s, dc2 %s", latency(g1), latency(g2)))
	keys := make([]string, 0, len(lags))
	for k := range lags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var lagNotes []string
	for _, k := range keys {
		l := lags[k]
		parent := l.parent
		if parent == "" {
			parent = "back end"
		}
		lagNotes = append(lagNotes, fmt.Sprintf("%s<-%s lagMs min %.0f mean %.0f max %.0f, lagEvents max %d, positive in %d/%d reports",
			k, parent, l.minMs, l.sumMs/float64(max(1, l.samples)), l.maxMs, l.maxEvents, l.positive, l.samples))
	}
	if reportErrs > 0 || unreachable > 0 {
		lagNotes = append(lagNotes, fmt.Sprintf("%d topology requests failed; %d unreachable nodes in the reports", reportErrs, unreachable))
	}
	t.Logf("topology lag per edge during the shaping (/v1/topology of root1 and leaf2a, alternately, two reports a second):\n  %s", strings.Join(lagNotes, "\n  "))
	r.notes = append(r.notes, "lag per edge in /v1/topology: see the test log")
	var crossEdge []string
	for _, k := range keys {
		if strings.HasSuffix(k, " relay2") {
			l := lags[k]
			crossEdge = append(crossEdge, fmt.Sprintf("%s: %.0f..%.0f ms, positive %d/%d", k, l.minMs, l.maxMs, l.positive, l.samples))
		}
	}
	r.notes = append(r.notes, "cross-DC edge lag in /v1/topology: "+strings.Join(crossEdge, "; "))
	// Every edge stays in every report, and the cross-DC edge shows a lag
	// in the reports gathered from dc2's side.
	wantEdges := len(meshNodes) * len(streams)
	perVantage := map[string]int{}
	for k := range lags {
		perVantage[strings.SplitN(k, ":", 2)[0]]++
	}
	for _, v := range vantages {
		if perVantage[v] != wantEdges {
			t.Errorf("delay+loss: %s's reports showed %d distinct edges, want %d", v, perVantage[v], wantEdges)
		}
	}
	for k, l := range lags {
		if l.samples != lags[vantageKey(k)].samples {
			t.Errorf("delay+loss: edge %s is missing from some reports (%d of %d)", k, l.samples, lags[vantageKey(k)].samples)
		}
	}
	if reportErrs > 0 || unreachable > 0 {
		t.Errorf("delay+loss: %d topology requests failed, %d unreachable nodes in the reports", reportErrs, unreachable)
	}
	for _, st := range streams {
		k := "leaf2a: " + strings.TrimPrefix(st, backendURL) + " relay2"
		if l := lags[k]; l == nil || l.positive == 0 {
			t.Errorf("delay+loss: the cross-DC edge %s never showed a lag in dc2's reports", k)
		}
	}
	r.notes = append(r.notes, d.counterNotes(cnt, d.counters())...)
	d.account(&r, b1, b2)
	r.took = time.Since(start)
	return r
}

// vantageKey is the key of the owner root's edge in the same vantage's
// reports: every report has it, so its sample count is the report count.
func vantageKey(k string) string {
	v, rest, _ := strings.Cut(k, ": ")
	stream, _, _ := strings.Cut(rest, " ")
	return v + ": " + stream + " root1"
}

func pct(fraction string) string {
	var f float64
	_, _ = fmt.Sscanf(fraction, "%g", &f)
	return fmt.Sprintf("%g", f*100)
}

func latency(gs []groupStats) string {
	var n int
	var p50, p99, mx float64
	for _, g := range gs {
		n += g.Latency.N
		p50 = max(p50, g.Latency.P50)
		p99 = max(p99, g.Latency.P99)
		mx = max(mx, g.Latency.Max)
	}
	return fmt.Sprintf("%.0f/%.0f/%.0f ms (n %d)", p50, p99, mx, n)
}

// minConnectMs is the fastest of five TCP connects from one host to
// another, each timed around a shell started in the first host.
func (d *drill) minConnectMs(from, to string) float64 {
	best := math.Inf(1)
	for range 5 {
		ms, err := d.tcpConnectMs(from, to)
		if err != nil {
			d.t.Errorf("connect %s -> %s: %v", from, to, err)
			return 0
		}
		best = math.Min(best, ms)
	}
	return best
}

func (d *drill) killGatewayPhase() result {
	t := d.t
	start := time.Now()
	r := result{phase: "3 gateway kill", fault: "kill -9 of dc2's gateway"}
	b1, b2 := d.tally("dc1"), d.tally("dc2")
	before := d.crossDC()
	r.before = before.String()
	gw := ""
	for _, s := range streams {
		if g := before.perStream[s]; len(g) == 1 && (gw == "" || gw == g[0]) {
			gw = g[0]
		} else {
			t.Fatalf("gateway kill: no single dc2 gateway before the kill: %s", before)
		}
	}
	var survivors []string
	aliveBefore := map[string]float64{}
	for _, n := range meshNodes {
		if n.dc == "dc2" && n.name != gw {
			survivors = append(survivors, n.name)
			m, err := d.nodeMetrics(n.name)
			if err != nil {
				t.Fatalf("metrics of %s: %v", n.name, err)
			}
			aliveBefore[n.name] = m[`ssemesh_mesh_members{state="alive"}`]
		}
	}
	want := d.lastIDs()
	for k := range want {
		want[k]++ // an event published after the kill
	}

	killed := time.Now()
	d.proc(gw).stop(syscall.SIGKILL, 5*time.Second)
	var detect, detectLast, takeover, recovered time.Duration
	var newGW crossLinks
	// Per survivor: when its view lost the gateway, and when each stream
	// was live again on a new upstream.
	seen := map[string]time.Duration{}
	moved := map[string]string{}
	_, ok := ssetest.Poll(60*time.Second, 100*time.Millisecond, func() bool {
		now := time.Since(killed)
		for _, s := range survivors {
			if _, ok := seen[s]; !ok {
				if m, err := d.nodeMetrics(s); err == nil && m[`ssemesh_mesh_members{state="alive"}`] < aliveBefore[s] {
					seen[s] = now
					if detect == 0 {
						detect = now
					}
					detectLast = now
				}
			}
			ss, err := d.nodeStreams(s)
			if err != nil {
				continue
			}
			for _, st := range streams {
				k := s + " " + strings.TrimPrefix(st, backendURL)
				if si, ok := ss[st]; ok && moved[k] == "" && si.State == "live" && d.upstreamHost(si.Upstream).name != gw {
					moved[k] = fmt.Sprintf("%s from %s at %.2f s", k, d.upstreamHost(si.Upstream).name, now.Seconds())
				}
			}
		}
		if takeover == 0 {
			if c := d.crossDC(); c.err == nil && c.oneEach() {
				takeover, newGW = now, c
			}
		}
		if recovered == 0 && d.caughtUp(want, "dc2") {
			recovered = now
		}
		return len(seen) == len(survivors) && takeover > 0 && recovered > 0
	})
	if !ok {
		t.Errorf("gateway kill: after 60 s detection %v, takeover %v, clients recovered %v (cross-DC now %s)", detect, takeover, recovered, d.crossDC())
	}
	r.recovery = fmt.Sprintf("new gateway %.2f s, clients %.2f s after the kill; detection %.2f-%.2f s", takeover.Seconds(), recovered.Seconds(), detect.Seconds(), detectLast.Seconds())
	r.notes = append(r.notes, fmt.Sprintf("gossip marked %s not alive %.2f s after the kill on the first survivor, %.2f s on the last (the detection time)", gw, detect.Seconds(), detectLast.Seconds()))
	var per []string
	for _, s := range survivors {
		per = append(per, fmt.Sprintf("%s lost %s from its view at %.2f s", s, gw, seen[s].Seconds()))
	}
	keys := make([]string, 0, len(moved))
	for k := range moved {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		per = append(per, moved[k])
	}
	r.notes = append(r.notes, strings.Join(per, "; "))
	// Every survivor has to see the gateway gone before the new one can be
	// agreed on; after that, the settle period and a reconnection remain.
	if takeover > detectLast+2*time.Second {
		t.Errorf("gateway kill: the new gateway took over %.2f s after the kill, more than 2 s after the last survivor saw %s gone (%.2f s)", takeover.Seconds(), gw, detectLast.Seconds())
	}
	r.after = newGW.String()
	d.settleCatchUp(r.phase)
	if c := d.crossDC(); !c.oneEach() {
		t.Errorf("gateway kill: cross-DC links after settling: %s", c)
	}
	d.account(&r, b1, b2)
	r.took = time.Since(start)
	t.Logf("gateway %s killed; %s; %s", gw, r.recovery, strings.Join(r.notes, "; "))
	return r
}

func (d *drill) consulOutagePhase() result {
	t := d.t
	start := time.Now()
	r := result{phase: "4 Consul dc1 down", fault: fmt.Sprintf("dc1's Consul server stopped (SIGTERM) for %v, then started again (empty: -dev)", consulOutageFor)}
	b1, b2 := d.tally("dc1"), d.tally("dc2")
	before := d.crossDC()
	r.before = before.String()
	cnt := d.counters()

	d.proc("consul-dc1").stop(syscall.SIGTERM, 10*time.Second)
	stopped := time.Now()
	w, _, _ := d.sampleDuring(consulOutageFor-time.Since(stopped), time.Second, nil, 0)
	restart := time.Now()
	d.startConsul("dc1")
	dc1Nodes := 0
	for _, n := range meshNodes {
		if n.dc == "dc1" {
			dc1Nodes++
		}
	}
	// The restarted server starts empty and fills as nodes register again:
	// watch the views while the nodes read it, and for a while after it is
	// whole, so every node has polled it.
	wAfter, rec, ok := d.sampleDuring(recoverTimeout, 250*time.Millisecond, func() bool {
		return d.passing("dc1", "ssemesh") == dc1Nodes && d.passing("dc1", "feed") == 1 &&
			len(d.consulDatacenters("dc1")) == 2 && len(d.consulDatacenters("dc2")) == 2
	}, viewRefresh)
	r.recovery = fmt.Sprintf("catalog whole again %.1f s after the restart", rec.Seconds())
	if !ok {
		r.recovery = fmt.Sprintf("catalog not whole within %v", recoverTimeout)
		t.Errorf("Consul outage: dc1's catalog did not list its %d nodes and the back end as passing within %v", dc1Nodes, recoverTimeout)
	}
	d.settleCatchUp(r.phase)
	after := d.crossDC()
	r.after = after.String()
	if !after.oneEach() {
		t.Errorf("Consul outage: cross-DC links afterwards: %s", after)
	}
	cnt2 := d.counters()
	r.notes = append(r.notes, fmt.Sprintf("longest wait for an event during the outage: dc1 clients %.0f ms, dc2 clients %.0f ms", w.stale1, w.stale2))
	r.notes = append(r.notes, "during the outage "+w.viewNote())
	r.notes = append(r.notes, fmt.Sprintf("from the restart to %v after the catalog was whole again %s", viewRefresh, wAfter.viewNote()))
	r.notes = append(r.notes, d.counterNotes(cnt, cnt2)...)
	for _, m := range reparentedWithoutCause(cnt, cnt2) {
		t.Errorf("Consul outage: re-parented without cause: %s", m)
	}
	d.account(&r, b1, b2)
	r.took = time.Since(start)
	t.Logf("Consul dc1 stopped at %s, restarted at %s; %s; %s", stopped.Format("15:04:05.000"), restart.Format("15:04:05.000"), r.recovery, strings.Join(r.notes, "; "))
	return r
}

// counterNotes lists the nodes whose counters moved between two readings.
func (d *drill) counterNotes(before, after map[string]counters) []string {
	var names []string
	for n := range after {
		names = append(names, n)
	}
	sort.Strings(names)
	var moved []string
	for _, n := range names {
		a, b := after[n], before[n]
		var parts []string
		if a.reparents != b.reparents {
			parts = append(parts, fmt.Sprintf("reparents +%.0f", a.reparents-b.reparents))
		}
		for _, st := range streams {
			if a.streams[st] != b.streams[st] {
				parts = append(parts, fmt.Sprintf("%s upstream %q -> %q", st, b.streams[st], a.streams[st]))
			}
		}
		if a.connects != b.connects {
			parts = append(parts, fmt.Sprintf("upstream connects +%.0f", a.connects-b.connects))
		}
		if a.upstreamErrors != b.upstreamErrors {
			parts = append(parts, fmt.Sprintf("upstream errors +%.0f", a.upstreamErrors-b.upstreamErrors))
		}
		if a.gaps != b.gaps {
			parts = append(parts, fmt.Sprintf("gaps +%.0f", a.gaps-b.gaps))
		}
		if len(parts) > 0 {
			moved = append(moved, n+": "+strings.Join(parts, ", "))
		}
	}
	if len(moved) == 0 {
		return []string{"no node re-parented or reconnected (reparents_total, upstream_connects_total and each stream's upstream unchanged)"}
	}
	return []string{"counters moved (probe streams count in upstream connects): " + strings.Join(moved, "; ")}
}

// reparentedWithoutCause reports the nodes whose reparents_total moved or
// whose drill streams changed upstream or reconnected.
func reparentedWithoutCause(before, after map[string]counters) []string {
	var out []string
	for name, a := range after {
		b := before[name]
		changed := a.reparents != b.reparents
		for _, st := range streams {
			changed = changed || a.streams[st] != b.streams[st]
		}
		if changed {
			out = append(out, fmt.Sprintf("%s: reparents_total %.0f -> %.0f, streams %v -> %v", name, b.reparents, a.reparents, b.streams, a.streams))
		}
	}
	sort.Strings(out)
	return out
}

// renderTable prints the results as a Markdown table, with the notes
// below it.
func renderTable(rs []result) string {
	var b strings.Builder
	b.WriteString("| fault | time to recover | lost | duplicated | gap events | cross-DC links before | cross-DC links after | phase took |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s: %s | %s | %d | %d | %d | %s | %s | %.0f s |\n",
			r.phase, r.fault, r.recovery, r.lost, r.dups, r.gapEvents, r.before, r.after, r.took.Seconds())
	}
	for _, r := range rs {
		fmt.Fprintf(&b, "\n%s:\n", r.phase)
		for _, n := range r.notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	return b.String()
}
