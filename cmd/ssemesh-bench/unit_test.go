package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSeqTracker(t *testing.T) {
	tests := []struct {
		name string
		seqs []int64
		want string // n = new, d = repeated
	}{
		{"in order", []int64{1, 2, 3}, "nnn"},
		{"repeat", []int64{5, 6, 6, 5}, "nndd"},
		{"gap filled late", []int64{1, 4, 2, 3, 4}, "nnnnd"},
		{"jump beyond window forgets", []int64{1, 1 + 2*trackWindow, 2, 1 + 2*trackWindow}, "nndd"},
		{"late within window", []int64{100, 100 + trackWindow - 1, 101, 100}, "nnnd"},
		{"slot reuse after wrap", []int64{1, 1 + trackWindow, 1 + trackWindow - 1}, "nnn"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tr seqTracker
			var got strings.Builder
			for _, s := range tc.seqs {
				if tr.add(s) {
					got.WriteByte('n')
				} else {
					got.WriteByte('d')
				}
			}
			if got.String() != tc.want {
				t.Fatalf("got %s, want %s", got.String(), tc.want)
			}
		})
	}
}

func TestParseBench(t *testing.T) {
	tests := []struct {
		in        string
		seq, sent int64
		ok        bool
	}{
		{`{"seq":42,"t":1700000000000000000,"pad":"xx"}`, 42, 1700000000000000000, true},
		{`{"t":7,"seq":3}`, 3, 7, true},
		{`http://cs.example/webservice/escenic/changelog/entry/5`, 0, 0, false},
		{`{"seq":,"t":1}`, 0, 1, false},
	}
	for _, tc := range tests {
		seq, sent, ok := parseBench([]byte(tc.in))
		if ok != tc.ok || (ok && (seq != tc.seq || sent != tc.sent)) {
			t.Errorf("parseBench(%s) = %d, %d, %v", tc.in, seq, sent, ok)
		}
	}
}

func TestSSERead(t *testing.T) {
	long := strings.Repeat("y", 10000)
	tests := []struct {
		name   string
		in     string
		want   []string
		lastID string
	}{
		{"basic", "id: 1\ndata: a\n\nid: 2\ndata: b\n\n", []string{"a", "b"}, "2"},
		{"crlf and multi-line", "data: a\r\ndata: b\r\nid: 7\r\n\r\n", []string{"a\nb"}, "7"},
		{"no space after colon, comments, named events", ": hi\nevent: x\ndata:z\n\n", []string{"z"}, ""},
		{"incomplete event discarded, id not adopted", "id: 1\ndata: a\n\nid: 99\ndata: partial", []string{"a"}, "1"},
		{"id without data still counts", "id: 3\n\n", nil, "3"},
		{"empty id resets", "id: 3\ndata: a\n\nid\ndata: b\n\n", []string{"a", "b"}, ""},
		{"line longer than the buffer", "data: " + long + "\n\n", []string{long}, ""},
		{"retry ignored", "retry: 100\ndata: a\n\n", []string{"a"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &streamConn{}
			var got []string
			err := c.read(strings.NewReader(tc.in), func(d []byte) { got = append(got, string(d)) })
			if !errors.Is(err, io.EOF) {
				t.Fatalf("err = %v, want EOF", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
			if c.lastEventID != tc.lastID {
				t.Fatalf("lastEventID %q, want %q", c.lastEventID, tc.lastID)
			}
		})
	}
}

func TestProcParsing(t *testing.T) {
	status := []byte("Name:\tssemesh\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n")
	if kb, err := parseVmRSS(status); err != nil || kb != 12345 {
		t.Fatalf("parseVmRSS = %d, %v", kb, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tkthread\n")); err == nil {
		t.Fatal("missing VmRSS accepted")
	}
	// A command name with spaces and parentheses; utime 250, stime 50.
	stat := []byte("1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 200")
	if cpu, err := parseCPUSeconds(stat); err != nil || cpu != 3 {
		t.Fatalf("parseCPUSeconds = %v, %v", cpu, err)
	}
	if _, err := parseCPUSeconds([]byte("1 (x) S 1 2")); err == nil {
		t.Fatal("short stat accepted")
	}
	self, err := readProc("self")
	if err != nil || self.RSSKB <= 0 {
		t.Fatalf("readProc(self) = %+v, %v", self, err)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{statusError{code: 503}, "http status 503"},
		{statusError{code: 200, ctype: "text/plain"}, `content type "text/plain"`},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), "connection refused"},
		{fmt.Errorf("dial: %w", syscall.EADDRNOTAVAIL), "no free source port (add --sources)"},
		{fmt.Errorf("dial: %w", syscall.EMFILE), "too many open files (add --procs)"},
		{io.EOF, "stream ended (EOF)"},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), "stream broken (unexpected EOF)"},
		{notH2Error{proto: "HTTP/1.1"}, "response over HTTP/1.1, not HTTP/2"},
		{errNoH2Stream, errNoH2Stream.Error()},
		{errHeaderTimeout, "timeout"},
		{fmt.Errorf("tls handshake: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), "TLS: certificate signed by unknown authority (check --ca)"},
		{fmt.Errorf("tls handshake: %w", &tls.CertificateVerificationError{Err: x509.HostnameError{Host: "127.0.0.2"}}), "TLS: certificate not valid for 127.0.0.2"},
		{errors.New("read: stream error: stream ID 3; INTERNAL_ERROR; received from peer"), "stream reset (HTTP/2)"},
	}
	for _, tc := range tests {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestCheckLoopbackHost(t *testing.T) {
	for host, want := range map[string]string{"localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1", "127.1.2.3": "127.1.2.3", "::ffff:127.0.0.1": "127.0.0.1"} {
		if got, err := checkLoopbackHost(host); err != nil || got != want {
			t.Errorf("checkLoopbackHost(%q) = %q, %v", host, got, err)
		}
	}
	for _, host := range []string{"10.0.0.1", "::1", "0.0.0.0", "example.com", ""} {
		if _, err := checkLoopbackHost(host); err == nil {
			t.Errorf("checkLoopbackHost(%q) accepted", host)
		}
	}
}

func TestWorkerSpecClients(t *testing.T) {
	tests := []struct {
		name         string
		total, block int
		procs        int
		want         []string // each process's clients
	}{
		{"one by one", 10, 0, 3, []string{"[0 3 6 9]", "[1 4 7]", "[2 5 8]"}},
		{"blocks, short last one", 10, 3, 2, []string{"[0 1 2 6 7 8]", "[3 4 5 9]"}},
		{"one block each", 6, 3, 2, []string{"[0 1 2]", "[3 4 5]"}},
		{"a process beyond the blocks", 4, 2, 3, []string{"[0 1]", "[2 3]", "[]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			total := 0
			for id, want := range tc.want {
				s := workerSpec{First: id, Stride: tc.procs, Total: tc.total, Block: tc.block}
				got := fmt.Sprint(slices.Collect(s.clientIDs()))
				if got != want {
					t.Errorf("process %d runs %s, want %s", id, got, want)
				}
				total += s.clients()
			}
			if total != tc.total {
				t.Fatalf("processes cover %d of %d clients", total, tc.total)
			}
		})
	}
}

func TestConnectCPU(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int, cpu float64) cpuSample {
		return cpuSample{at: t0.Add(time.Duration(ms) * time.Millisecond), cpu: cpu}
	}
	samples := []cpuSample{at(0, 10), at(50, 10.5), at(100, 11), at(150, 11.25)}
	tests := []struct {
		name        string
		samples     []cpuSample
		lastConnect time.Time
		connects    int
		want        NodeReport
	}{
		{"ends at the first sample after the last connect", samples, t0.Add(60 * time.Millisecond), 500,
			NodeReport{Connects: 500, ConnectSeconds: 0.1, ConnectCPUSeconds: 1, ConnectCPUMsPer1000: 2000}},
		{"last connect after the samples", samples, t0.Add(time.Second), 2000,
			NodeReport{Connects: 2000, ConnectSeconds: 0.15, ConnectCPUSeconds: 1.25, ConnectCPUMsPer1000: 625}},
		{"no connects", samples, t0, 0, NodeReport{}},
		{"one sample", samples[:1], t0, 10, NodeReport{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var n NodeReport
			n.fillConnect(tc.samples, tc.lastConnect.UnixNano(), tc.connects)
			if n != tc.want {
				t.Fatalf("got %+v, want %+v", n, tc.want)
			}
		})
	}
}
