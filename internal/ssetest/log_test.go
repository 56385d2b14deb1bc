package ssetest

import (
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestLogger(t *testing.T) {
	tests := []struct {
		name     string
		logger   func(t testing.TB) *logrus.Logger
		fail     bool
		want     []string // in the test log
		wantNone []string // not in the test log
	}{
		{"warnings and errors", Logger, false, []string{"level=warning msg=\"upstream slow\"", "level=error msg=broken"}, []string{"chatter"}},
		{"buffered, passed: silent", func(t testing.TB) *logrus.Logger { return BufferedLogger(t, logrus.DebugLevel) }, false, nil, []string{"chatter", "broken"}},
		{"buffered, failed: all of it", func(t testing.TB) *logrus.Logger { return BufferedLogger(t, logrus.DebugLevel) }, true, []string{"log:\n", "msg=chatter", "msg=broken"}, nil},
		{"buffered at info", func(t testing.TB) *logrus.Logger { return BufferedLogger(t, logrus.InfoLevel) }, true, []string{"msg=broken"}, []string{"chatter"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeT{}
			f.run(func(tb testing.TB) {
				l := tc.logger(tb)
				l.Debug("chatter")
				l.Warn("upstream slow")
				l.Error("broken")
				if tc.fail {
					tb.Fatalf("failed")
				}
			})
			log := f.log()
			for _, w := range tc.want {
				if !strings.Contains(log, w) {
					t.Errorf("test log lacks %q:\n%s", w, log)
				}
			}
			for _, w := range tc.wantNone {
				if strings.Contains(log, w) {
					t.Errorf("test log has %q:\n%s", w, log)
				}
			}
		})
	}
}

func TestBufferedLoggerKeepsTheEnd(t *testing.T) {
	f := &fakeT{}
	f.run(func(tb testing.TB) {
		l := BufferedLogger(tb, logrus.InfoLevel)
		l.Info("first")
		l.Info(strings.Repeat("x", BufferedLogMax))
		l.Info("last")
		tb.Fatalf("failed")
	})
	log := f.log()
	if strings.Contains(log, "first") || !strings.Contains(log, "msg=last") {
		t.Fatalf("a long log shows its start or lacks its end: %.200q...", log)
	}
}
