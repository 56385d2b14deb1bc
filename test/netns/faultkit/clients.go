package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/retry"
	"github.com/ssemesh/ssemesh/internal/sse"
)

// urlList is a repeatable --url flag.
type urlList []string

func (u *urlList) String() string     { return strings.Join(*u, ",") }
func (u *urlList) Set(v string) error { *u = append(*u, v); return nil }

// clientsCommand holds --clients SSE clients spread round-robin over the
// --url values. Each resumes with Last-Event-ID after every disconnect and
// checks the ids it receives (the bench back end numbers each stream's
// events 1, 2, 3, ...): an id at or below the last one is a duplicate, a
// jump is a loss of the ids skipped. The counters are served as JSON at
// GET /stats on the --stats Unix socket; GET /stats?reset=1 also starts a
// new latency window.
func clientsCommand(fs *flag.FlagSet) func(context.Context, logrus.FieldLogger) error {
	var urls urlList
	fs.Var(&urls, "url", "SSE URL; repeatable, clients are spread over them")
	n := fs.Int("clients", 100, "number of clients")
	stats := fs.String("stats", "", "Unix socket serving the counters")
	ramp := fs.Duration("ramp", 2*time.Second, "time over which the clients connect")
	idle := fs.Duration("idle", 45*time.Second, "reconnect after this long without a byte")
	maxReconnects := fs.Int("max-reconnects", 1000, "reconnections per client before it gives up")
	return func(ctx context.Context, log logrus.FieldLogger) error {
		if len(urls) == 0 || *stats == "" || *n < 1 || *n > 5000 {
			return errors.New("need --url, --stats and 1..5000 --clients")
		}
		groups := make(map[string]*group, len(urls))
		for _, u := range urls {
			groups[u] = &group{url: u}
		}
		_ = os.Remove(*stats)
		ln, err := net.Listen("unix", *stats)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: statsHandler(groups), ReadHeaderTimeout: 5 * time.Second}
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { _ = srv.Serve(ln) })
		defer srv.Close()

		tr := &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			ResponseHeaderTimeout: 10 * time.Second,
			DisableCompression:    true,
			MaxIdleConnsPerHost:   -1, // every stream is its own connection
		}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		log.WithFields(logrus.Fields{"clients": *n, "urls": len(urls)}).Info("faultkit: clients starting")
		for i := range *n {
			g := groups[urls[i%len(urls)]]
			c := &client{g: g, hc: hc, idle: *idle, maxReconnects: *maxReconnects}
			g.add(c)
			delay := time.Duration(int64(*ramp) * int64(i) / int64(*n))
			wg.Go(func() {
				if !retry.Sleep(ctx, delay) {
					return
				}
				c.run(ctx, log)
			})
		}
		<-ctx.Done()
		return nil
	}
}

// group is the clients of one URL.
type group struct {
	url string

	mu      sync.Mutex
	clients []*client
	latency []float64 // ms, this window
}

func (g *group) add(c *client) {
	g.mu.Lock()
	g.clients = append(g.clients, c)
	g.mu.Unlock()
}

// client is one SSE client. Its fields are guarded by its group's mutex.
type client struct {
	g             *group
	hc            *http.Client
	idle          time.Duration
	maxReconnects int

	connected  bool
	sessions   int
	first      int64 // first id received, 0 before any
	last       int64 // last id received
	lastAt     time.Time
	received   int64
	duplicates int64
	lost       int64
	gapEvents  int64
	errs       int64
	lastErr    string
}

func (c *client) run(ctx context.Context, log logrus.FieldLogger) {
	backoff := 250 * time.Millisecond
	for attempt := 0; attempt <= c.maxReconnects && ctx.Err() == nil; attempt++ {
		got, err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		c.g.mu.Lock()
		c.connected = false
		if err != nil {
			c.errs++
			c.lastErr = err.Error()
		}
		c.g.mu.Unlock()
		if got {
			backoff = 250 * time.Millisecond
		} else {
			backoff = min(2*backoff, 2*time.Second)
		}
		if !retry.Sleep(ctx, backoff/2+rand.N(backoff/2)) {
			return
		}
	}
	log.WithField("url", c.g.url).Warn("faultkit: client gave up after its reconnections")
}

// session runs one connection; it reports whether any event arrived.
func (c *client) session(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.g.url, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	c.g.mu.Lock()
	if c.last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(c.last, 10))
	}
	c.g.mu.Unlock()
	resp, err := c.hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return false, fmt.Errorf("status %d, content type %q", resp.StatusCode, ct)
	}
	c.g.mu.Lock()
	c.connected = true
	c.sessions++
	c.g.mu.Unlock()

	// Any byte, heartbeats included, proves the connection alive.
	watchdog := time.AfterFunc(c.idle, cancel)
	defer watchdog.Stop()
	rd := sse.NewReader(readFunc(func(p []byte) (int, error) {
		n, err := resp.Body.Read(p)
		if n > 0 {
			watchdog.Reset(c.idle)
		}
		return n, err
	}), 1<<20)
	got := false
	for {
		ev, err := rd.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return got, errors.New("stream closed")
			}
			return got, err
		}
		if !ev.HasData {
			continue
		}
		got = true
		c.observe(ev, time.Now())
	}
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// observe accounts for one dispatched event.
func (c *client) observe(ev sse.Event, now time.Time) {
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if ev.Type == "ssemesh-gap" {
		c.gapEvents++
		return
	}
	id, err := strconv.ParseInt(ev.ID, 10, 64)
	if err != nil || id <= 0 {
		c.errs++
		c.lastErr = fmt.Sprintf("event without a numeric id: %q", ev.ID)
		return
	}
	c.received++
	switch {
	case c.first == 0:
		c.first = id
	case id <= c.last:
		c.duplicates++
		return
	case id > c.last+1:
		c.lost += id - c.last - 1
	}
	c.last = id
	c.lastAt = now
	var p struct {
		T int64 `json:"t"`
	}
	if json.Unmarshal([]byte(ev.Data), &p) == nil && p.T > 0 && len(g.latency) < 1<<20 {
		g.latency = append(g.latency, float64(now.UnixNano()-p.T)/1e6)
	}
}

// GroupStats is one URL's counters.
type GroupStats struct {
	URL        string  `json:"url"`
	Clients    int     `json:"clients"`
	Connected  int     `json:"connected"`
	Started    int     `json:"started"`    // clients that received an event
	Sessions   int     `json:"sessions"`   // successful connections, all clients
	Received   int64   `json:"received"`   // events, duplicates included
	Duplicates int64   `json:"duplicates"` // events at or below the client's last id
	Lost       int64   `json:"lost"`       // ids skipped
	GapEvents  int64   `json:"gapEvents"`  // ssemesh-gap events
	Errors     int64   `json:"errors"`     // failed connections and reads
	LastError  string  `json:"lastError,omitempty"`
	MinLast    int64   `json:"minLast"` // lowest last id among started clients
	MaxLast    int64   `json:"maxLast"`
	StaleMs    float64 `json:"staleMs"` // longest time since a started client's last event
	Latency    Summary `json:"latency"` // this window
}

// Summary summarises latencies in ms.
type Summary struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func summarise(v []float64) Summary {
	if len(v) == 0 {
		return Summary{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(q float64) float64 { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return Summary{N: len(s), P50: at(0.50), P99: at(0.99), Max: s[len(s)-1]}
}

func (g *group) stats(now time.Time, reset bool) GroupStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := GroupStats{URL: g.url, Clients: len(g.clients), Latency: summarise(g.latency)}
	if reset {
		g.latency = g.latency[:0]
	}
	first := true
	for _, c := range g.clients {
		st.Sessions += c.sessions
		st.Received += c.received
		st.Duplicates += c.duplicates
		st.Lost += c.lost
		st.GapEvents += c.gapEvents
		st.Errors += c.errs
		if c.lastErr != "" {
			st.LastError = c.lastErr
		}
		if c.connected {
			st.Connected++
		}
		if c.first == 0 {
			continue
		}
		st.Started++
		if first || c.last < st.MinLast {
			st.MinLast = c.last
		}
		st.MaxLast = max(st.MaxLast, c.last)
		st.StaleMs = max(st.StaleMs, float64(now.Sub(c.lastAt).Microseconds())/1000)
		first = false
	}
	return st
}

func statsHandler(groups map[string]*group) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stats" {
			http.NotFound(w, r)
			return
		}
		reset := r.URL.Query().Get("reset") == "1"
		now := time.Now()
		out := make([]GroupStats, 0, len(groups))
		for _, g := range groups {
			out = append(out, g.stats(now, reset))
		}
		slices.SortFunc(out, func(a, b GroupStats) int { return strings.Compare(a.URL, b.URL) })
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}
