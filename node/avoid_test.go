package node

import (
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/relay"
)

func TestClassifyParentFailures(t *testing.T) {
	parent := relay.Target{Parent: "relay-1"}
	tests := []struct {
		name    string
		attempt relay.Attempt
		want    avoidScope
		hidden  bool // what hideFromParent says of the same refusal
	}{
		{"cannot connect", relay.Attempt{Target: parent, Code: relay.CodeUpstreamUnreachable}, avoidParent, true},
		{"silent", relay.Attempt{Target: parent, Code: relay.CodeUpstreamIdle}, avoidParent, false},
		{"draining", relay.Attempt{Target: parent, Status: 503, Code: relay.CodeShuttingDown}, avoidParent, true},
		{"refuses this node's proof", relay.Attempt{Target: parent, Status: 401, Code: codeMeshAuth}, avoidParent, true},
		{"loop for this stream", relay.Attempt{Target: parent, Status: 508, Code: codeLoop}, avoidStream, true},
		{"full", relay.Attempt{Target: parent, Status: 503, Code: codeMaxClients}, avoidStream, true},
		{"no upstream of its own yet", relay.Attempt{Target: parent, Status: 502, Code: relay.CodeNoUpstream}, avoidNone, true},
		{"relays the back end's 503", relay.Attempt{Target: parent, Status: 503, Code: relay.CodeUpstreamStatus}, avoidNone, false},
		{"relays an unreachable back end", relay.Attempt{Target: parent, Status: 502, Code: relay.CodeUpstreamUnreachable}, avoidNone, false},
		{"relays 204", relay.Attempt{Target: parent, Status: 204, Code: relay.CodeStreamEnded}, avoidNone, false},
		{"relays a content type refusal", relay.Attempt{Target: parent, Status: 502, Code: relay.CodeUpstreamContentType}, avoidNone, false},
		{"closed the stream between events", relay.Attempt{Target: parent}, avoidNone, false},
		{"connection reset mid-stream", relay.Attempt{Target: parent, Code: relay.CodeUpstreamRead}, avoidNone, false},
		{"a back end is never a parent", relay.Attempt{Code: relay.CodeUpstreamUnreachable}, avoidNone, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(&tc.attempt); got != tc.want {
				t.Errorf("classify = %v, want %v", got, tc.want)
			}
			e := &relay.Error{Upstream: tc.attempt.Status, Code: tc.attempt.Code}
			if tc.attempt.Code != "" && tc.attempt.Code != relay.CodeUpstreamIdle && tc.attempt.Code != relay.CodeUpstreamRead {
				if got := hideFromParent(e); got != tc.hidden {
					t.Errorf("hideFromParent = %v, want %v", got, tc.hidden)
				}
			}
		})
	}
}

func TestAvoidList(t *testing.T) {
	l := newAvoidList()
	now := time.Unix(1000, 0)
	if !l.add("p1", "/a", avoidStream, now.Add(time.Second)) {
		t.Fatal("first entry not new")
	}
	if l.add("p1", "/a", avoidStream, now.Add(2*time.Second)) {
		t.Fatal("renewed entry reported new")
	}
	l.add("p2", "", avoidParent, now.Add(time.Second))
	if got := l.set("/a", now); !got["p1"] || !got["p2"] || len(got) != 2 {
		t.Fatalf("set(/a) = %v, want p1 (this stream) and p2 (all)", got)
	}
	if got := l.set("/b", now); got["p1"] || !got["p2"] {
		t.Fatalf("set(/b) = %v: a per-stream entry leaked to another stream", got)
	}
	if l.add("p3", "/a", avoidNone, now.Add(time.Second)) || l.set("/a", now)["p3"] {
		t.Fatal("avoidNone added an entry")
	}
	later := now.Add(1500 * time.Millisecond)
	if got := l.set("/a", later); got["p2"] || !got["p1"] {
		t.Fatalf("set after p2 expired = %v", got)
	}
	if !l.expire(later) {
		t.Fatal("expire dropped nothing")
	}
	l.forgetStream("/a")
	if got := l.set("/a", now); len(got) != 0 {
		t.Fatalf("after forgetStream: %v", got)
	}
	l.add("p1", "", avoidParent, now.Add(time.Hour))
	if n := l.clear(); n != 1 || len(l.set("/a", now)) != 0 {
		t.Fatalf("clear dropped %d", n)
	}
}
