package admit

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"off", Config{}, true},
		{"paced", Config{Rate: 1000, Burst: 200, MaxWait: 10 * time.Second}, true},
		{"negative rate", Config{Rate: -1, Burst: 1}, false},
		{"rate without burst", Config{Rate: 10}, false},
		{"negative wait", Config{Rate: 10, Burst: 1, MaxWait: -time.Second}, false},
	}
	for _, tc := range tests {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestPacing: a storm of 100 callers against 10/s with a burst of 10 and
// 5 s of patience: 10 at once, then one every 100 ms up to the 5 s bound,
// and the rest refused with the time their turn would have come.
func TestPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(Config{Rate: 10, Burst: 10, MaxWait: 5 * time.Second})
		start := time.Now()
		var mu sync.Mutex
		var admitted []time.Duration
		var refused []time.Duration
		var wg sync.WaitGroup
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, _, retry := p.Wait(context.Background())
				mu.Lock()
				defer mu.Unlock()
				if ok {
					admitted = append(admitted, time.Since(start))
				} else {
					refused = append(refused, retry)
				}
			}()
			synctest.Wait() // one caller at a time, in order
		}
		wg.Wait()
		if len(admitted) != 60 || len(refused) != 40 {
			t.Fatalf("admitted %d, refused %d; want 60 and 40", len(admitted), len(refused))
		}
		counts := map[time.Duration]int{}
		for _, at := range admitted {
			counts[at]++
		}
		if counts[0] != 10 {
			t.Errorf("%d admitted at once, want the burst of 10", counts[0])
		}
		for k := 1; k <= 50; k++ {
			if at := time.Duration(k) * 100 * time.Millisecond; counts[at] != 1 {
				t.Errorf("%d admitted at %v, want 1", counts[at], at)
			}
		}
		for _, r := range refused {
			if r <= 5*time.Second || r > 6*time.Second {
				t.Errorf("refused with retry after %v, want just over the 5 s bound", r)
			}
		}
	})
}

// TestRefill: after a quiet spell the burst is available again, and no
// more than the burst.
func TestRefill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(Config{Rate: 100, Burst: 5, MaxWait: 0})
		for i := 0; i < 5; i++ {
			if ok, _, _ := p.Wait(context.Background()); !ok {
				t.Fatalf("caller %d of the first burst refused", i)
			}
		}
		if ok, _, retry := p.Wait(context.Background()); ok || retry != 10*time.Millisecond {
			t.Fatalf("sixth caller: ok=%v retry=%v, want refused with 10ms", ok, retry)
		}
		time.Sleep(time.Hour)
		n := 0
		for {
			ok, _, _ := p.Wait(context.Background())
			if !ok {
				break
			}
			n++
		}
		if n != 5 {
			t.Fatalf("%d admitted after an hour's quiet, want the burst of 5", n)
		}
	})
}

// TestCancelGivesTheTurnBack: a caller that goes away while waiting does
// not cost the callers behind it.
func TestCancelGivesTheTurnBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(Config{Rate: 1, Burst: 1, MaxWait: time.Minute})
		if ok, _, _ := p.Wait(context.Background()); !ok {
			t.Fatal("first caller refused")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan bool)
		go func() {
			ok, _, _ := p.Wait(ctx)
			done <- ok
		}()
		synctest.Wait()
		cancel()
		if <-done {
			t.Fatal("a cancelled caller was admitted")
		}
		start := time.Now()
		if ok, waited, _ := p.Wait(context.Background()); !ok || waited != time.Second || time.Since(start) != time.Second {
			t.Fatalf("next caller: ok=%v waited %v, want its turn after 1s", ok, waited)
		}
	})
}

func TestOffAdmitsEveryone(t *testing.T) {
	p := New(Config{})
	for i := 0; i < 1000; i++ {
		if ok, waited, _ := p.Wait(context.Background()); !ok || waited != 0 {
			t.Fatalf("caller %d: ok=%v waited %v with pacing off", i, ok, waited)
		}
	}
}
