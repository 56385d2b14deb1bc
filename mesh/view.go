package mesh

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// MemberState is a member's liveness as this node sees it.
type MemberState string

// Member states. Precedence when several apply: dead, left, suspect,
// draining, alive.
const (
	// StateAlive: answering probes and accepting children.
	StateAlive MemberState = "alive"
	// StateSuspect: this node's probes of the member failed; it is declared
	// dead unless it refutes within the suspicion timeout.
	StateSuspect MemberState = "suspect"
	// StateDraining: alive but shutting down; take no new children.
	StateDraining MemberState = "draining"
	// StateLeft: left gossip gracefully.
	StateLeft MemberState = "left"
	// StateDead: declared failed by gossip.
	StateDead MemberState = "dead"
)

// Member sources.
const (
	SourceGossip = "gossip"
	SourceConsul = "consul"
)

// Member is one node of the mesh.
type Member struct {
	ID, DC                string
	Tier                  int
	ClientAddr, AdminAddr string
	Clients, Capacity     int
	Streams               int
	Draining              bool
	State                 MemberState
	// Source is SourceGossip for this data centre and SourceConsul for
	// nodes of other data centres, known from Consul's catalog (their load
	// is not known: Clients and Streams are zero).
	Source string
}

// Instance is one passing instance of a back end.
type Instance struct {
	ID      string
	Address string // host:port
	Scheme  string // "http" or "https"
	Path    string // upstream path on the instance
}

// URL is the upstream base URL of the instance, built field by field: the
// path (with its query, when the registration gives one) can never change
// the host, whatever the service meta says.
func (i Instance) URL() string {
	p, q, _ := strings.Cut(i.Path, "?")
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	u := url.URL{Scheme: i.Scheme, Host: i.Address, Path: p, RawQuery: q}
	return u.String()
}

// Backend is an SSE back end discovered in Consul.
type Backend struct {
	Name string
	DC   string
	// Mount is the client-facing path; with Prefix, every path below it.
	Mount  string
	Prefix bool
	// Instances holds the passing instances sorted by ID. It is empty while
	// none passes, so the mount stays known (and answers 503, not 404).
	Instances []Instance
}

// View is an immutable snapshot of the mesh as this node sees it. It is
// never modified after it is published; callers must not modify it either.
type View struct {
	// Version increases by one with every published view.
	Version uint64
	// Members is sorted by ID and includes this node. Members that left or
	// died stay with that state for Config.Retain, then disappear.
	Members []Member
	// Backends is sorted by name.
	Backends []Backend
	// ConsulOK is true when Consul is configured and its last queries
	// succeeded; ConsulError holds the cause of the current outage. While
	// Consul is unreachable the last known back ends and remote members are
	// kept.
	ConsulOK    bool
	ConsulError string
	// BackendsSynced is true once the back ends in Consul (this data
	// centre's and the others') have all been read at least once.
	BackendsSynced bool
	// Serving is false while this node warms up or drains: peers see it
	// as draining and give it no children.
	Serving bool
}

// Member returns the member with the given ID.
func (v *View) Member(id string) (Member, bool) {
	for _, m := range v.Members {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// Backend returns the back end with the given name.
func (v *View) Backend(name string) (Backend, bool) {
	for _, b := range v.Backends {
		if b.Name == name {
			return b, true
		}
	}
	return Backend{}, false
}

// nodeMeta is the gossiped node metadata. Short JSON keys keep it compact
// and readable in packet dumps; Validate bounds every string so the worst
// case stays under memberlist's 512 bytes.
type nodeMeta struct {
	ID         string `json:"i"`
	DC         string `json:"d"`
	Tier       int    `json:"t"`
	ClientAddr string `json:"c"`
	AdminAddr  string `json:"a,omitempty"`
	Clients    int    `json:"n,omitempty"`
	Capacity   int    `json:"k,omitempty"`
	Streams    int    `json:"s,omitempty"`
	Draining   bool   `json:"r,omitempty"`
}

func (c *Config) metaFor(clients, streams int, draining bool) nodeMeta {
	return nodeMeta{
		ID: c.NodeID, DC: c.DC, Tier: c.Tier,
		ClientAddr: c.ClientAddr, AdminAddr: c.AdminAddr,
		Clients: clients, Capacity: c.Capacity, Streams: streams,
		Draining: draining,
	}
}

func encodeMeta(m nodeMeta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("mesh: encoding node metadata: %w", err)
	}
	return b, nil
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nodeMeta{}, fmt.Errorf("mesh: decoding node metadata (%d bytes): %w", len(b), err)
	}
	return m, nil
}
