package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// Floods: what one client address can make a node and its back end do.

// clientFrom returns an HTTP client whose connections come from the
// loopback source address src (127.0.0.0/8 is all local on Linux), as a
// second client machine would.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// statusFrom makes one request from src and closes it at once, returning
// the status and the Retry-After.
func statusFrom(t *testing.T, c *http.Client, url string, h http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

func TestStreamThatNeverWentLiveDoesNotLinger(t *testing.T) {
	var open atomic.Int32
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		open.Add(1)
		defer open.Add(-1)
		<-r.Context().Done() // never answers
	}))
	n := startNode(t, func() Config {
		c := testConfig(BackendSpec{Name: "hang", URI: "http://" + up + "/hang"})
		c.Relay.Linger = time.Duration(time.Minute)
		return c
	}())
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Addr()+"/hang", nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := ssetest.HTTPClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	ssetest.Eventually(t, "upstream request open", 5*time.Second, func() bool { return open.Load() == 1 })
	cancel()
	<-done
	// Well inside the minute of linger: nobody ever saw the stream work.
	ssetest.Eventually(t, "stream released", 5*time.Second, func() bool { return n.Relay().Streams() == 0 && open.Load() == 0 })
}

func TestDroppedQueryParametersOpenNoStreams(t *testing.T) {
	// 25 requests with distinct query strings, each closed at once, on a
	// node with room for 20 streams: one stream, one back-end connection,
	// and room for everyone else.
	be, n, url := oneBackend(t, backend.Config{}, func(c *Config) { c.Limits.MaxStreams = 20 })
	for i := 0; i < 25; i++ {
		c, resp, err := ssetest.DialStatus(fmt.Sprintf("%s?r=%d", url, i), nil)
		if err != nil || c == nil {
			t.Fatalf("request %d: %v %v", i, err, resp)
		}
		c.Close()
	}
	if got := n.Relay().Streams(); got != 1 {
		t.Fatalf("%d streams open, want 1", got)
	}
	if keys := be.StreamKeys(); len(keys) != 1 || be.Stats(streamPath).Total != 1 {
		t.Fatalf("back end streams %v with %d connections, want one stream and one connection", keys, be.Stats(streamPath).Total)
	}
	c := ssetest.Dial(t, url+"?r=legit", nil)
	be.Publish(streamPath, 1)
	c.IDs(t, 1, 5*time.Second)
}

func TestPerAddressLimits(t *testing.T) {
	be, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "f", URI: "http://" + addr + "/f/", Mount: "/f/", Prefix: true})
	cfg.Limits.PerIP = PerIPLimits{Connections: 3, NewStreams: 0.5, Burst: 2}
	cfg.Limits.RetryAfter = 7
	n := startNode(t, cfg)
	base := "http://" + n.Addr()
	here, other := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")

	// New streams: a burst of two, then one per two seconds.
	a := ssetest.Dial(t, base+"/f/a", nil)
	b := ssetest.Dial(t, base+"/f/b", nil)
	if st, ra := statusFrom(t, here, base+"/f/c", nil); st != http.StatusTooManyRequests || ra == "" || ra == "0" {
		t.Fatalf("third new stream: %d Retry-After %q, want 429 with Retry-After", st, ra)
	}
	if st, _ := statusFrom(t, other, base+"/f/c", nil); st != http.StatusOK {
		t.Fatalf("new stream from another address: %d", st)
	}
	// Joining open streams costs no upstream request: only the connection
	// limit applies.
	c := ssetest.Dial(t, base+"/f/a", nil)
	if st, ra := statusFrom(t, here, base+"/f/b", nil); st != http.StatusTooManyRequests || ra != "7" {
		t.Fatalf("fourth connection: %d Retry-After %q, want 429 after limits.retry_after", st, ra)
	}
	if st, _ := statusFrom(t, other, base+"/f/b", nil); st != http.StatusOK {
		t.Fatalf("connection from another address: %d", st)
	}
	// A departed client's slot is free once the node notices it left (at
	// its next write: an event or a heartbeat).
	// (A write to a socket the peer closed may still succeed once.)
	c.Close()
	ssetest.Eventually(t, "departed client noticed", 5*time.Second, func() bool {
		be.Publish("/f/a", 1)
		a.Next(t, 5*time.Second)
		for _, si := range n.Relay().StreamInfo() {
			if si.Key == "/f/a" {
				return si.Clients == 1
			}
		}
		return false
	})
	d := ssetest.Dial(t, base+"/f/b", nil)
	be.Publish("/f/b", 1)
	b.IDs(t, 1, 5*time.Second)
	d.IDs(t, 1, 5*time.Second)
	snap := n.Relay().Metrics().Snapshot().Refused
	if snap[codeIPNewStreams] != 1 || snap[codeIPConnections] != 1 {
		t.Fatalf("refusals counted %v, want one of each per-address code", snap)
	}
}

func TestTrustedProxyNamesTheClient(t *testing.T) {
	_, _, url := oneBackend(t, backend.Config{}, func(c *Config) {
		c.Limits.PerIP = PerIPLimits{Connections: 1}
		c.TrustedProxies = []string{"127.0.0.1"}
	})
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }
	ssetest.Dial(t, url, xff("203.0.113.1"))
	ssetest.Dial(t, url, xff("198.51.100.9, 203.0.113.2")) // the left entry is the client's own claim
	if st, code, _ := status(t, url, xff("203.0.113.1")); st != http.StatusTooManyRequests || code != codeIPConnections {
		t.Fatalf("second stream of 203.0.113.1 through the proxy: %d %s, want 429", st, code)
	}
	if st, _, _ := status(t, url, xff("203.0.113.3")); st != http.StatusOK {
		t.Fatalf("another client through the proxy: %d", st)
	}
	// From an untrusted peer the header is the client's own claim.
	untrusted := clientFrom("127.0.0.2")
	first, resp, err := ssetest.DialWith(untrusted, url, xff("203.0.113.10"), nil)
	if err != nil || first == nil {
		t.Fatalf("first stream of 127.0.0.2: %v %v", err, resp)
	}
	t.Cleanup(first.Close)
	if st, _ := statusFrom(t, untrusted, url, xff("203.0.113.11")); st != http.StatusTooManyRequests {
		t.Fatalf("127.0.0.2 escaped its limit with X-Forwarded-For: %d", st)
	}
}

func TestFloodFromOneAddress(t *testing.T) {
	// A few thousand requests from one address, each with its own query
	// string and resume id, each closed at once. The back end sees no more
	// connections than the per-address budget allows, and a legitimate
	// client elsewhere opens a new stream and gets its events at once.
	const requests, workers = 3000, 50
	be, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "f", URI: "http://" + addr + "/f/", Mount: "/f/", Prefix: true, QueryParams: []string{"q"}})
	cfg.Limits.PerIP = DefaultConfig().Limits.PerIP
	cfg.Limits.MaxStreams = 500
	n := startNode(t, cfg)
	base := "http://" + n.Addr()

	start := time.Now()
	var next atomic.Int64
	var refused atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > requests {
					return
				}
				url := fmt.Sprintf("%s/f/s%d?q=%d&x=%d", base, i%400, i, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				req.Header.Set("Last-Event-ID", "id-"+strconv.FormatInt(i, 10))
				resp, err := ssetest.HTTPClient.Do(req)
				if err == nil {
					if resp.StatusCode == http.StatusTooManyRequests {
						refused.Add(1)
					}
					resp.Body.Close()
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	total := 0
	for _, k := range be.StreamKeys() {
		total += be.Stats(k).Total
	}
	limit := float64(cfg.Limits.PerIP.Burst) + cfg.Limits.PerIP.NewStreams*elapsed.Seconds() + 1
	t.Logf("%d requests in %s: %d refused with 429, %d back-end connections (budget %.0f), %d streams open", requests, elapsed.Round(time.Millisecond), refused.Load(), total, limit, n.Relay().Streams())
	if float64(total) > limit {
		t.Fatalf("the back end got %d connections, over the per-address budget of %.0f", total, limit)
	}
	if refused.Load() < requests/2 {
		t.Fatalf("only %d of %d requests refused", refused.Load(), requests)
	}

	legit, resp, err := ssetest.DialWith(clientFrom("127.0.0.2"), base+"/f/legit?q=1", nil, nil)
	if err != nil || legit == nil {
		t.Fatalf("legitimate client: %v %v", err, resp)
	}
	t.Cleanup(legit.Close)
	ssetest.Eventually(t, "legit stream on the back end", 5*time.Second, func() bool { return be.Stats("/f/legit?q=1").Open == 1 })
	be.Publish("/f/legit?q=1", 1)
	if ev := legit.Next(t, time.Second); ev.ID != "1" {
		t.Fatalf("legitimate client got %+v", ev)
	}
}

func TestCatchUpsAreMergedAndBounded(t *testing.T) {
	release := make(chan struct{})
	var catchUps atomic.Int32
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Last-Event-ID") != "" {
			catchUps.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
			}
			http.Error(w, "history gone", http.StatusGone)
			return
		}
		eventStream(w, r)
	}))
	cfg := testConfig(BackendSpec{Name: "c", URI: "http://" + up + "/c"})
	cfg.Relay.CatchUpPerStream = 2
	n := startNode(t, cfg)
	url := "http://" + n.Addr() + "/c"
	ssetest.Dial(t, url, nil).Next(t, 5*time.Second)

	resume := func(id string) chan *ssetest.Client {
		ch := make(chan *ssetest.Client, 1)
		go func() {
			c, _, _ := ssetest.DialStatus(url, http.Header{"Last-Event-ID": {id}})
			ch <- c
		}()
		return ch
	}
	// Eight subscribers resuming from one unknown id share one request.
	var same []chan *ssetest.Client
	for i := 0; i < 8; i++ {
		same = append(same, resume("unknown"))
	}
	ssetest.Eventually(t, "eight subscribers attached", 5*time.Second, func() bool { return n.Relay().Clients() == 9 })
	ssetest.Eventually(t, "one catch-up upstream", 5*time.Second, func() bool { return catchUps.Load() == 1 })
	// Eight more, each from its own id: two fetches run; the other six are
	// told of their gap at once instead of asking upstream.
	var distinct []*ssetest.Client
	for i := 0; i < 8; i++ {
		c := <-resume("u" + strconv.Itoa(i))
		if c == nil {
			t.Fatal("resuming subscriber refused")
		}
		t.Cleanup(c.Close)
		distinct = append(distinct, c)
	}
	ssetest.Eventually(t, "budget spent", 5*time.Second, func() bool {
		return n.Relay().Metrics().Snapshot().CatchUpRefused["stream"] == 7
	})
	if got := catchUps.Load(); got != 2 {
		t.Fatalf("%d catch-up requests upstream, want 2 (one shared, one more within catch_up_per_stream)", got)
	}
	close(release)
	gaps := 0
	for _, c := range distinct {
		if ev := c.Next(t, 5*time.Second); ev.Type == "ssemesh-gap" {
			gaps++
		}
	}
	for _, ch := range same {
		c := <-ch
		if c == nil {
			t.Fatal("resuming subscriber refused")
		}
		if ev := c.Next(t, 5*time.Second); ev.Type != "ssemesh-gap" {
			t.Fatalf("subscriber of the shared fetch got %+v, want its gap", ev)
		}
		c.Close()
	}
	if gaps != 8 {
		t.Fatalf("%d of 8 subscribers with distinct ids told of a gap", gaps)
	}
	if got := catchUps.Load(); got != 2 {
		t.Fatalf("%d catch-up requests upstream in all, want 2", got)
	}
}
