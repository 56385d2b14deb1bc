package node

import (
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// TestAdmissionIsPaced: a burst of new clients is let in at limits.admit's
// pace; those whose turn is further than max_wait are refused at once with
// 503 busy and a Retry-After, and every admitted client gets the events.
func TestAdmissionIsPaced(t *testing.T) {
	be, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "f", URI: "http://" + addr + "/f", Mount: "/f"})
	cfg.Limits.Admit = AdmitLimits{Rate: 10, Burst: 5, MaxWait: Duration(time.Second)}
	n := startNode(t, cfg)
	url := "http://" + n.Addr() + "/f"
	first := ssetest.Dial(t, url, nil) // opens the stream
	be.Publish("/f", 1)
	first.IDs(t, 1, 5*time.Second)

	const storm = 30
	var mu sync.Mutex
	var admitted []*ssetest.Client
	var admittedAt []time.Duration
	refused := map[string]int{}
	start := time.Now()
	parallel(storm, func(int) {
		c, resp, err := ssetest.DialStatus(url, nil)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			refused["error "+err.Error()]++
		case c == nil:
			ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || ra < 1 {
				refused["unexpected "+resp.Status]++
				return
			}
			refused["busy"]++
		default:
			admitted = append(admitted, c)
			admittedAt = append(admittedAt, time.Since(start))
		}
	})
	t.Cleanup(func() {
		for _, c := range admitted {
			c.Close()
		}
	})
	// The first client took one token: 4 at once, then 10 a second for
	// up to a second (a little more as the requests arrive over time).
	if len(admitted) < 12 || len(admitted) > 20 || refused["busy"] != storm-len(admitted) {
		t.Fatalf("admitted %d, refused %v; want 4 + about 10 admitted and the rest refused busy", len(admitted), refused)
	}
	var late int
	for _, at := range admittedAt {
		if at >= 500*time.Millisecond {
			late++
		}
	}
	if late < 3 {
		t.Fatalf("admitted at %v: want admissions spread over the second, not at once", admittedAt)
	}
	be.Publish("/f", 1)
	for _, c := range admitted {
		c.IDs(t, 1, 5*time.Second)
	}
	snap := n.Relay().Metrics().Snapshot().Refused
	if snap[codeBusy] != uint64(refused["busy"]) {
		t.Fatalf("refusals counted %v, want %d busy", snap, refused["busy"])
	}
	if n.admitWaits.Load() == 0 {
		t.Fatal("no admission counted as waited")
	}
}
