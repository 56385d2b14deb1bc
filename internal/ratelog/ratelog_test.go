package ratelog

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestLogWritesOncePerIntervalAndCountsTheRest(t *testing.T) {
	var out bytes.Buffer
	l := logrus.New()
	l.SetOutput(&out)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	now := time.Unix(100, 0)
	r := New(10 * time.Second)
	r.now = func() time.Time { return now }

	wrote := 0
	for i := 0; i < 1000; i++ {
		if r.Log("refused:max_clients", l, logrus.InfoLevel, "refused") {
			wrote++
		}
	}
	if !r.Log("refused:loop", l, logrus.InfoLevel, "loop") {
		t.Fatal("another key was suppressed")
	}
	now = now.Add(10 * time.Second)
	if !r.Log("refused:max_clients", l, logrus.InfoLevel, "refused") {
		t.Fatal("line after the interval was suppressed")
	}
	if wrote != 1 {
		t.Fatalf("wrote %d lines of 1000 in one interval, want 1", wrote)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], "suppressed=999") || strings.Contains(lines[0], "suppressed") {
		t.Fatalf("log:\n%s\nwant three lines, the last with suppressed=999", out.String())
	}
}
