package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/backend"
)

// asMainEnv makes the test binary behave as ssemesh-bench, so that "load"
// can re-execute it (os.Executable) as "worker" processes.
const asMainEnv = "SSEMESH_BENCH_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func startBackend(t *testing.T, cfg backend.Config) (*backend.Backend, *httptest.Server) {
	t.Helper()
	b := backend.New(cfg, quietLog())
	srv := httptest.NewServer(b)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { b.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		b.Close()
		srv.Close()
	})
	return b, srv
}

// poll waits up to 10s for cond, which depends on other goroutines that
// announce nothing, and reports whether it came true.
func poll(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// runLoadJSON runs "load --json" with args and decodes the report.
func runLoadJSON(t *testing.T, args ...string) (*Report, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"load", "--json"}, args...), &out, &errOut)
	if code != 0 {
		t.Fatalf("load exited %d: %s", code, errOut.String())
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("decoding report %q: %v", out.String(), err)
	}
	return &rep, errOut.String()
}

// TestLoadEndToEnd runs a small load over two worker processes and two
// source addresses directly against the back end, cutting every connection
// in the middle of the window: clients must resume with Last-Event-ID and
// lose nothing.
func TestLoadEndToEnd(t *testing.T) {
	t.Setenv(asMainEnv, "1")
	const clients, rate = 50, 50
	b, srv := startBackend(t, backend.Config{Rate: rate, PayloadSize: 200, Format: backend.FormatBench})

	// Cut once all clients are in and the window is running: it starts 1s
	// (settle + start delay) after the ramp and lasts 2.5s, so 75 events
	// (1.5s) after the last client connected is in its middle.
	cutDone := cutMidWindow(b, "/bench", clients, 75)
	rep, _ := runLoadJSON(t,
		"--url", srv.URL+"/bench", "--clients", strconv.Itoa(clients), "--procs", "2",
		"--sources", "127.0.0.1,127.0.0.2", "--ramp", "500ms", "--settle", "500ms",
		"--duration", "2500ms", "--drain", "500ms", "--node-pid", strconv.Itoa(os.Getpid()))
	cut := <-cutDone

	if rep.Connected != clients || rep.Failed != 0 || rep.LateConnects != 0 {
		t.Fatalf("connected %d failed %d late %d (%v)", rep.Connected, rep.Failed, rep.LateConnects, rep.FailReasons)
	}
	if rep.Procs != 2 || len(rep.Sources) != 2 {
		t.Fatalf("procs %d sources %v", rep.Procs, rep.Sources)
	}
	// ~2.5s at 50/s; generous bounds for a loaded machine.
	if rep.EventsPerClient < 80 || rep.EventsPerClient > 170 {
		t.Fatalf("events per client %d, want ~125", rep.EventsPerClient)
	}
	if rep.Expected != rep.EventsPerClient*clients || rep.Delivered != rep.Expected || rep.Lost != 0 || rep.Duplicated != 0 {
		t.Fatalf("expected %d delivered %d lost %d dup %d", rep.Expected, rep.Delivered, rep.Lost, rep.Duplicated)
	}
	if cut != clients || rep.Reconnects < clients {
		t.Fatalf("cut %d connections, clients reconnected %d times", cut, rep.Reconnects)
	}
	if rep.Latency.Count != uint64(rep.Delivered) || rep.Latency.P50Ms <= 0 || rep.Latency.P50Ms > rep.Latency.P99Ms || rep.Latency.MaxMs > 2000 {
		t.Fatalf("latency %+v", rep.Latency)
	}
	if n := rep.Node; n == nil || n.RSSBeforeKB <= 0 || n.RSSStartKB <= 0 || n.CPUSeconds < 0 {
		t.Fatalf("node report %+v (%s)", rep.Node, rep.NodeError)
	}
	if rep.LoadCPUTotalSeconds <= 0 {
		t.Fatalf("load CPU %v", rep.LoadCPUTotalSeconds)
	}
	// Every resumed connection carried the id of an event received before.
	st := b.Stats("/bench")
	resumed := 0
	for _, id := range st.LastEventIDs {
		if id != "" {
			n, err := strconv.ParseInt(id, 10, 64)
			if err != nil || n < 1 || n > st.LastID {
				t.Fatalf("bad Last-Event-ID %q", id)
			}
			resumed++
		}
	}
	if resumed < clients {
		t.Fatalf("%d resumed connections, want >= %d", resumed, clients)
	}
}

// lossyWriter drops the frames of every 10th id and repeats those of every
// 15th on their way from the back end to the client.
type lossyWriter struct {
	http.ResponseWriter
	pending []byte
}

func (l *lossyWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }

func (l *lossyWriter) Write(p []byte) (int, error) {
	l.pending = append(l.pending, p...)
	var out []byte
	for {
		i := bytes.Index(l.pending, []byte("\n\n"))
		if i < 0 {
			break
		}
		frame := l.pending[:i+2]
		l.pending = l.pending[i+2:]
		copies := 1
		if rest, ok := bytes.CutPrefix(frame, []byte("id: ")); ok {
			id, _ := strconv.Atoi(string(rest[:bytes.IndexByte(rest, '\n')]))
			switch {
			case id%10 == 0:
				copies = 0
			case id%15 == 0:
				copies = 2
			}
		}
		for range copies {
			out = append(out, frame...)
		}
	}
	if _, err := l.ResponseWriter.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// lossyServer serves the back end at 100 events/s; every second connection
// goes through a lossyWriter.
func lossyServer(t *testing.T) *httptest.Server {
	b := backend.New(backend.Config{Rate: 100, Format: backend.FormatBench}, quietLog())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { b.Run(ctx) })
	var conns atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if conns.Add(1)%2 == 1 {
			w = &lossyWriter{ResponseWriter: w}
		}
		b.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		b.Close()
		srv.Close()
	})
	return srv
}

func TestLoadCountsLossAndDuplicates(t *testing.T) {
	srv := lossyServer(t)
	rep, _ := runLoadJSON(t, "--url", srv.URL+"/x", "--clients", "20", "--procs", "1",
		"--ramp", "200ms", "--settle", "300ms", "--duration", "2s", "--drain", "300ms")
	if rep.Connected != 20 || rep.Failed != 0 {
		t.Fatalf("connected %d failed %d", rep.Connected, rep.Failed)
	}
	// Half the clients miss 1 in 10 events: 5% of the expected total.
	ratio := float64(rep.Lost) / float64(rep.Expected)
	if ratio < 0.035 || ratio > 0.065 {
		t.Fatalf("lost %d of %d (%.3f), want ~5%%", rep.Lost, rep.Expected, ratio)
	}
	// Half the clients see 1 in 15 events twice (less those that fall on
	// skipped seqs, which are multiples of 30).
	perClient := float64(rep.EventsPerClient)
	wantDups := 10 * (perClient/15 - perClient/30)
	if d := float64(rep.Duplicated); d < wantDups*0.7 || d > wantDups*1.3 {
		t.Fatalf("duplicated %d, want ~%.0f", rep.Duplicated, wantDups)
	}
	if rep.Delivered+rep.Lost != rep.Expected {
		t.Fatalf("delivered %d + lost %d != expected %d", rep.Delivered, rep.Lost, rep.Expected)
	}
}

func TestLoadReportsFailures(t *testing.T) {
	b, srv := startBackend(t, backend.Config{Format: backend.FormatBench})
	b.SetStatus("/gone", http.StatusNotFound, "text/plain")
	rep, _ := runLoadJSON(t, "--url", srv.URL+"/gone", "--clients", "3", "--procs", "1",
		"--ramp", "0s", "--settle", "100ms", "--duration", "500ms", "--drain", "0s")
	if rep.Connected != 0 || rep.Failed != 3 || rep.FailReasons["http status 404"] != 3 {
		t.Fatalf("connected %d failed %d reasons %v", rep.Connected, rep.Failed, rep.FailReasons)
	}
	if rep.Lost != 0 || rep.Expected != 0 {
		t.Fatalf("failed clients counted as loss: %+v", rep)
	}
}

func TestLoadRefusesBadCommandLines(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--url", "http://10.0.0.1:8080/x"}, "outside 127.0.0.0/8"},
		{[]string{"--url", "http://example.com/x"}, "not an IP address"},
		{[]string{"--url", "http://[::1]:80/x"}, "outside 127.0.0.0/8"},
		{[]string{"--url", "ftp://127.0.0.1/x"}, "only http:// and https://"},
		{[]string{"--url", "https://10.0.0.1/x"}, "outside 127.0.0.0/8"},
		{[]string{"--url", "http://127.0.0.1/x", "--proto", "h2"}, "needs an https:// URL"},
		{[]string{"--url", "https://127.0.0.1/x", "--proto", "h3"}, `--proto "h3"`},
		{[]string{"--url", "http://127.0.0.1/x", "--insecure"}, "https:// URLs only"},
		{[]string{"--url", "https://127.0.0.1/x", "--insecure", "--ca", "ca.pem"}, "exclude each other"},
		{[]string{"--url", "https://127.0.0.1/x", "--ca", "/nonexistent/ca.pem"}, "--ca: reading CA bundle"},
		{[]string{"--url", "https://127.0.0.1/x", "--ca", "main_test.go"}, "holds no PEM certificate"},
		{[]string{"--url", "https://127.0.0.1/x", "--proto", "h2", "--h2-streams", "0"}, "--h2-streams 0"},
		{[]string{"--url", "https://127.0.0.1/x", "--proto", "h2", "--clients", "300", "--procs", "4"}, "the 3 HTTP/2 connections"},
		{[]string{"--url", "https://127.0.0.1/x", "--proto", "h2", "--clients", "3000000", "--h2-streams", "100", "--procs", "1"}, "30000 HTTP/2 connections over 1 processes"},
		{[]string{"--url", "http://127.0.0.1/x", "--sources", "10.1.1.1"}, "not an address in 127.0.0.0/8"},
		{[]string{"--url", "http://127.0.0.1/x", "--clients", "40000", "--procs", "2", "--sources", "127.0.0.2,127.0.0.3"}, "per process"},
		{[]string{"--url", "http://127.0.0.1/x", "--clients", "30000"}, "per address"},
		{[]string{"--url", "http://127.0.0.1/x", "--duration", "0s"}, "--duration"},
		{[]string{}, "--url is required"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), append([]string{"load"}, tc.args...), &out, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut.String(), tc.want)
			}
		})
	}
	var errOut bytes.Buffer
	if code := run(context.Background(), []string{"backend", "--listen", "0.0.0.0:7000"}, io.Discard, &errOut); code != 2 {
		t.Fatalf("backend on 0.0.0.0: exit %d, %s", code, errOut.String())
	}
}

func TestLoadInterrupted(t *testing.T) {
	b, srv := startBackend(t, backend.Config{Rate: 20, Format: backend.FormatBench})
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut bytes.Buffer
	done := make(chan int, 1)
	start := time.Now()
	go func() {
		done <- run(ctx, []string{"load", "--json", "--url", srv.URL + "/i", "--clients", "5", "--procs", "1",
			"--ramp", "0s", "--settle", "200ms", "--duration", "30s"}, &out, &errOut)
	}()
	if !poll(func() bool { return b.Stats("/i").Open == 5 }) {
		t.Fatal("clients did not connect")
	}
	cancel()
	select {
	case code := <-done:
		if code != 1 || time.Since(start) > 10*time.Second {
			t.Fatalf("exit %d after %v: %s", code, time.Since(start), errOut.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("load did not stop after interruption")
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || !rep.Interrupted || rep.Connected != 5 {
		t.Fatalf("report %+v, err %v", rep, err)
	}
}
