package relay

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ssemesh/ssemesh/internal/sse"
)

// These tests run the relay's timers on a synctest bubble's clock: the
// stream's fan-out side is driven through its publish seam, with no
// upstream connection and no socket.

// offlineStream opens a live stream whose upstream side is not running:
// only its dispatcher is.
func offlineStream(t *testing.T, r *Relay, key string) *stream {
	t.Helper()
	s := newStream(r, key, func(*Attempt) (Target, error) { return Target{}, errors.New("offline") }, "", false)
	r.mu.Lock()
	r.streams[key] = s
	r.mu.Unlock()
	if !r.goOwned(s.runDispatcher) {
		t.Fatal("relay refused the dispatcher")
	}
	s.setLive(Target{Label: "offline"})
	return s
}

func event(id string) sse.Event {
	return sse.Event{ID: id, HasID: true, Data: "x", HasData: true, Retry: -1}
}

func TestRingAgeOnTheHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.RingAge = 10 * time.Second
		cfg.Heartbeat = time.Second
		r := newTestRelay(t, cfg)
		s := offlineStream(t, r, "/s")
		s.ref()
		defer s.unref()
		buffered := func() int {
			synctest.Wait()
			s.mu.Lock()
			defer s.mu.Unlock()
			n, _, _ := s.ring.span()
			return n
		}
		// Beats come every whole second; events arrive between them.
		time.Sleep(500 * time.Millisecond)
		s.publish(event("1"), time.Now())
		time.Sleep(5 * time.Second)
		s.publish(event("2"), time.Now())
		s.publish(event("3"), time.Now())
		if n := buffered(); n != 3 {
			t.Fatalf("buffered %d, want 3", n)
		}
		// Event 1 is past ring_age from 10.5s; the beat at 11s drops it.
		time.Sleep(5*time.Second + 100*time.Millisecond)
		if n := buffered(); n != 3 {
			t.Fatalf("buffered %d before the beat after ring_age, want 3", n)
		}
		time.Sleep(500 * time.Millisecond)
		if n := buffered(); n != 2 {
			t.Fatalf("buffered %d after the beat past ring_age, want 2", n)
		}
		// The newest entry is always kept: the id in force.
		time.Sleep(time.Minute)
		if n := buffered(); n != 1 {
			t.Fatalf("buffered %d long after ring_age, want the newest only", n)
		}
	})
}

func TestLingerClosesAnIdleStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Linger = 30 * time.Second
		r := newTestRelay(t, cfg)
		s := offlineStream(t, r, "/s")
		open := func() bool {
			synctest.Wait()
			return r.Has("/s") && !s.isFinished()
		}
		s.ref()
		s.unref()
		time.Sleep(20 * time.Second)
		if !open() {
			t.Fatal("closed before the linger period")
		}
		// A subscriber that comes and goes starts the linger over.
		s.ref()
		time.Sleep(20 * time.Second)
		s.unref()
		time.Sleep(29 * time.Second)
		if !open() {
			t.Fatal("closed 29s after its last subscriber left; linger is 30s")
		}
		time.Sleep(time.Second)
		if open() {
			t.Fatal("still open a linger period after its last subscriber left")
		}
		s.mu.Lock()
		state := s.state
		s.mu.Unlock()
		if state != stateClosed {
			t.Fatalf("state %d, want closed", state)
		}
	})
}

func TestLingerKeepsAStreamWithSubscribers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Linger = time.Second
		r := newTestRelay(t, cfg)
		s := offlineStream(t, r, "/s")
		s.ref()
		s.ref()
		s.unref()
		time.Sleep(time.Hour)
		synctest.Wait()
		if s.isFinished() {
			t.Fatal("a stream with a subscriber closed")
		}
		s.unref()
		time.Sleep(time.Second)
		synctest.Wait()
		if !s.isFinished() || r.Has("/s") {
			t.Fatal("the stream outlived its linger")
		}
	})
}

// TestBackoffSequence runs the upstream loop of a live stream against a
// target that keeps failing: the waits grow from backoff_min to
// backoff_max within [d/2, d], and a retarget ends a wait at once.
func TestBackoffSequence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.BackoffMin, cfg.BackoffMax = 100*time.Millisecond, 800*time.Millisecond
		r := newTestRelay(t, cfg)
		asked := make(chan time.Time, 64)
		s := newStream(r, "/s", func(*Attempt) (Target, error) {
			asked <- time.Now()
			return Target{}, errors.New("no parent")
		}, "", false)
		s.setLive(Target{Label: "was live"})
		r.goOwned(s.runUpstream)

		prev := <-asked
		for i, ceiling := range []time.Duration{100, 200, 400, 800, 800, 800} {
			ceiling *= time.Millisecond
			at := <-asked
			if d := at.Sub(prev); d < ceiling/2 || d > ceiling {
				t.Fatalf("wait %d: %s, want within [%s, %s]", i, d, ceiling/2, ceiling)
			}
			prev = at
		}
		synctest.Wait() // the loop is in its next wait
		s.retargetSignal()
		if at := <-asked; !at.Equal(prev) {
			t.Fatalf("retarget ended the wait after %s, want at once", at.Sub(prev))
		}
		s.shutdown(errors.New("test over"))
	})
}
