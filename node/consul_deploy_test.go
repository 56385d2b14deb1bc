package node

import (
	"bytes"
	"cmp"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/consultest"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/mesh"
)

// The Consul files an operator loads, as shipped in deploy/consul.
var (
	shippedBackendHCL  = filepath.Join("..", "deploy", "consul", "backend.hcl")
	shippedBackendJSON = filepath.Join("..", "deploy", "consul", "backend.json")
	shippedNodePolicy  = filepath.Join("..", "deploy", "consul", "ssemesh-node-policy.hcl")
)

// shippedBackend decodes backend.json (the agent's configuration format,
// {"service": {...}}) into the registration the agent API takes. Every key
// must map to a field, and the meta keys must be ones the mesh reads.
func shippedBackend(t *testing.T) *api.AgentServiceRegistration {
	t.Helper()
	raw, err := os.ReadFile(shippedBackendJSON)
	if err != nil {
		t.Fatal(err)
	}
	var def struct {
		Service *api.AgentServiceRegistration `json:"service"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&def); err != nil || def.Service == nil {
		t.Fatalf("%s: want {\"service\": {...}} with registration fields only: %v", shippedBackendJSON, err)
	}
	reg := def.Service
	if !slices.Contains(reg.Tags, mesh.DefaultConsulTag) {
		t.Errorf("%s: tags %v lack %q", shippedBackendJSON, reg.Tags, mesh.DefaultConsulTag)
	}
	known := []string{mesh.MetaPath, mesh.MetaMount, mesh.MetaPrefix, mesh.MetaScheme}
	for k := range reg.Meta {
		if !slices.Contains(known, k) {
			t.Errorf("%s: meta key %q is not one the mesh reads (%v)", shippedBackendJSON, k, known)
		}
	}
	if reg.Meta[mesh.MetaPath] == "" {
		t.Errorf("%s: no %s meta", shippedBackendJSON, mesh.MetaPath)
	}
	if reg.Check == nil || reg.Check.HTTP == "" {
		t.Fatalf("%s: no HTTP check", shippedBackendJSON)
	}
	// The test moves the service and its check together.
	if u, err := url.Parse(reg.Check.HTTP); err != nil || u.Host != net.JoinHostPort(reg.Address, strconv.Itoa(reg.Port)) {
		t.Fatalf("%s: check URL %q is not on the service's address and port", shippedBackendJSON, reg.Check.HTTP)
	}
	if t.Failed() {
		t.FailNow()
	}
	return reg
}

// mountOf is where nodes serve the shipped back end.
func mountOf(reg *api.AgentServiceRegistration) string {
	if m := reg.Meta[mesh.MetaMount]; m != "" {
		return m
	}
	return reg.Meta[mesh.MetaPath]
}

// pointDefinitionAt rewrites the address and port of a shipped definition's
// text (HCL or JSON), in the service and in its check URL, to host:port;
// the rest of the file is loaded as it is.
func pointDefinitionAt(t *testing.T, src []byte, reg *api.AgentServiceRegistration, host string, port int) []byte {
	t.Helper()
	s := string(src)
	s = strings.ReplaceAll(s, net.JoinHostPort(reg.Address, strconv.Itoa(reg.Port)), net.JoinHostPort(host, strconv.Itoa(port)))
	s = strings.ReplaceAll(s, `"`+reg.Address+`"`, `"`+host+`"`)
	portRE := regexp.MustCompile(`(?m)^(\s*"?port"?\s*[:=]\s*)` + strconv.Itoa(reg.Port) + `\b`)
	s = portRE.ReplaceAllString(s, "${1}"+strconv.Itoa(port))
	if strings.Contains(s, reg.Address) || portRE.MatchString(s) {
		t.Fatalf("could not move every address and port of the definition:\n%s", s)
	}
	return []byte(s)
}

// pointRegistrationAt is pointDefinitionAt for the decoded registration.
func pointRegistrationAt(reg *api.AgentServiceRegistration, host string, port int) *api.AgentServiceRegistration {
	r := *reg
	r.Address, r.Port = host, port
	chk := *reg.Check
	u, _ := url.Parse(chk.HTTP)
	u.Host = net.JoinHostPort(host, strconv.Itoa(port))
	chk.HTTP = u.String()
	r.Check = &chk
	return &r
}

// consulCLI runs the consul command against agent with token ("" for
// none), isolated from the developer's CONSUL_* settings; it returns
// stdout and fails the test when the command fails.
func consulCLI(t *testing.T, agent *consultest.Agent, token string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(consultest.Require(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONSUL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "CONSUL_HTTP_ADDR=http://"+agent.HTTPAddr)
	if token != "" {
		cmd.Env = append(cmd.Env, "CONSUL_HTTP_TOKEN="+token)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("consul %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// healthServedBackend is a synthetic back end that also answers its
// Consul check: method and path of checkURL get 200, as a back end's health
// page would; every other request is the back end's.
func healthServedBackend(t *testing.T, checkURL, method string) (*backend.Backend, string, int) {
	t.Helper()
	u, err := url.Parse(checkURL)
	if err != nil {
		t.Fatal(err)
	}
	be := backend.New(backend.Config{}, ssetest.Logger(t))
	t.Cleanup(be.Close)
	mux := http.NewServeMux()
	mux.HandleFunc(method+" "+u.Path, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.Handle("/", be)
	addr := serve(t, mux)
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return be, host, p
}

// agentCheck is the agent's own account of a check (/v1/agent/checks has
// fields that api.AgentCheck leaves out).
type agentCheck struct {
	CheckID, Name, Status, Output, ServiceID, Type string
	Interval, Timeout                              string
}

func TestShippedServiceDefinitionIsMounted(t *testing.T) {
	// The back-end definition in deploy/consul, loaded the ways an operator
	// would: each registration, moved only to a test back end's address and
	// port, is what the agent ends up with, passes its check, and makes a
	// node serve the stream at the mount its meta names.
	consultest.Require(t)
	reg := shippedBackend(t)
	loaders := []struct {
		name     string
		register func(t *testing.T, agent *consultest.Agent, host string, port int)
	}{
		{"hcl with consul services register", func(t *testing.T, agent *consultest.Agent, host string, port int) {
			loadFile(t, agent, shippedBackendHCL, reg, host, port)
		}},
		{"json with consul services register", func(t *testing.T, agent *consultest.Agent, host string, port int) {
			loadFile(t, agent, shippedBackendJSON, reg, host, port)
		}},
		{"json with the agent API", func(t *testing.T, agent *consultest.Agent, host string, port int) {
			if err := agent.Client(t).Agent().ServiceRegister(pointRegistrationAt(reg, host, port)); err != nil {
				t.Fatalf("registering %s: %v", shippedBackendJSON, err)
			}
		}},
	}
	for _, l := range loaders {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			agent := consultest.Start(t, consultest.Options{Datacenter: "dc1"})
			method := cmp.Or(reg.Check.Method, http.MethodGet)
			be, host, port := healthServedBackend(t, reg.Check.HTTP, method)
			l.register(t, agent, host, port)
			c := agent.Client(t)

			svc, _, err := c.Agent().Service(reg.ID, nil)
			if err != nil {
				t.Fatalf("reading the registration back: %v", err)
			}
			if svc.Service != reg.Name || svc.Address != host || svc.Port != port ||
				!slices.Equal(svc.Tags, reg.Tags) || !maps.Equal(svc.Meta, reg.Meta) {
				t.Fatalf("agent has %s %s:%d tags %v meta %v; backend.json says %s tags %v meta %v",
					svc.Service, svc.Address, svc.Port, svc.Tags, svc.Meta, reg.Name, reg.Tags, reg.Meta)
			}

			// Only passing instances are mounted: the node serves the
			// stream once the check has passed, and the agent runs the
			// first check at a random point of its interval.
			n := meshNode(t, meshSpec{id: "root", dc: "dc1", tier: 0, consul: agent.HTTPAddr}, nil)
			mount := mountOf(reg)
			ssetest.Eventually(t, "shipped back end mounted at "+mount, 25*time.Second, func() bool { return n.findMount(mount) != nil })

			var checks map[string]agentCheck
			if _, err := c.Raw().Query("/v1/agent/checks", &checks, nil); err != nil {
				t.Fatal(err)
			}
			var chk *agentCheck
			for _, ch := range checks {
				if ch.ServiceID == reg.ID {
					chk = &ch
				}
			}
			wantOutput := "HTTP " + method + " " + pointRegistrationAt(reg, host, port).Check.HTTP + ": 200 OK"
			if chk == nil || chk.Status != api.HealthPassing || chk.Type != "http" || chk.Name != reg.Check.Name ||
				chk.Interval != reg.Check.Interval || chk.Timeout != reg.Check.Timeout || !strings.HasPrefix(chk.Output, wantOutput) {
				t.Fatalf("agent's check %+v; want passing, http, %q, interval %s, timeout %s, output %q...",
					chk, reg.Check.Name, reg.Check.Interval, reg.Check.Timeout, wantOutput)
			}

			cl := ssetest.Dial(t, "http://"+n.Addr()+mount, nil)
			upstream := reg.Meta[mesh.MetaPath]
			ssetest.Eventually(t, "stream open on the back end at "+upstream, 10*time.Second, func() bool { return be.Stats(upstream).Open == 1 })
			be.Publish(upstream, 3)
			if got := cl.IDs(t, 3, 5*time.Second); !slices.Equal(got, seq(1, 3)) {
				t.Fatalf("client of %s got %v, want 1..3", mount, got)
			}
		})
	}
}

// loadFile registers a copy of the shipped definition at path, moved to
// host:port, with `consul services register`.
func loadFile(t *testing.T, agent *consultest.Agent, path string, reg *api.AgentServiceRegistration, host string, port int) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(moved, pointDefinitionAt(t, src, reg, host, port), 0o644); err != nil {
		t.Fatal(err)
	}
	consulCLI(t, agent, "", "services", "register", moved)
}

// consulErrorsOf is the node's ssemesh_consul_request_errors_total.
func consulErrorsOf(t *testing.T, n *Node) float64 {
	t.Helper()
	f := scrape(t, n, "")["ssemesh_consul_request_errors_total"]
	if f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("no ssemesh_consul_request_errors_total on %s's /metrics", n.ID())
	}
	return f.GetMetric()[0].GetCounter().GetValue()
}

// registeredNodes lists the IDs registered under the nodes' service.
func registeredNodes(t *testing.T, c *api.Client) []string {
	t.Helper()
	entries, _, err := c.Health().Service(mesh.DefaultConsulService, "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.ID)
	}
	return ids
}

func TestMeshFormsWithTheShippedACLPolicy(t *testing.T) {
	// A Consul with ACLs on and everything denied by default: nodes whose
	// token carries the shipped policy (created with the commands of
	// deploy/consul/README.md) register, find the back end and each other
	// through Consul alone (no gossip seeds), and serve a leaf's client
	// through the root, without a single refused Consul request. A token
	// without the policy's write rule, or none, cannot register.
	consultest.Require(t)
	const management = "5d2f7a3e-8c41-4b6e-9f0a-1e2d3c4b5a69"
	agent := consultest.Start(t, consultest.Options{Datacenter: "dc1", ACLManagementToken: management})
	admin := agent.Client(t)

	policy, err := filepath.Abs(shippedNodePolicy)
	if err != nil {
		t.Fatal(err)
	}
	consulCLI(t, agent, management, "acl", "policy", "create", "-name", "ssemesh-node", "-rules", "@"+policy)
	var token struct{ SecretID string }
	out := consulCLI(t, agent, management, "acl", "token", "create", "-description", "ssemesh nodes", "-policy-name", "ssemesh-node", "-format", "json")
	if err := json.Unmarshal(out, &token); err != nil || token.SecretID == "" {
		t.Fatalf("token create printed %q: %v", out, err)
	}

	be, addr := startBackend(t, backend.Config{})
	registerBackend(t, admin, "changelog", addr, streamPath)

	withToken := func(tok string) func(*Config) {
		return func(c *Config) { c.Mesh.Consul.Token = tok }
	}
	root := meshNode(t, meshSpec{id: "root", dc: "dc1", tier: 0, consul: agent.HTTPAddr}, withToken(token.SecretID))
	leaf := meshNode(t, meshSpec{id: "leaf", dc: "dc1", tier: 2, consul: agent.HTTPAddr}, withToken(token.SecretID))
	nodes := []*Node{root, leaf}

	ssetest.Eventually(t, "both nodes registered in the catalog", 10*time.Second, func() bool {
		ids := registeredNodes(t, admin)
		return slices.Contains(ids, root.ID()) && slices.Contains(ids, leaf.ID())
	})
	// The nodes were given no gossip seeds: they can only have found each
	// other through the health of the ssemesh service.
	waitMembers(t, 2, nodes...)
	for _, n := range nodes {
		ssetest.Eventually(t, "back end mounted from Consul on "+n.ID(), 10*time.Second, func() bool { return n.findMount(streamPath) != nil })
	}

	c := ssetest.Dial(t, "http://"+leaf.Addr()+streamPath, nil)
	ssetest.Eventually(t, "leaf's stream taken from the root", 10*time.Second, func() bool {
		return upstreamOf(leaf, streamPath) == root.ID() && upstreamOf(root, streamPath) == "" && be.Stats(streamPath).Open == 1
	})
	be.Publish(streamPath, 5)
	if got := c.IDs(t, 5, 5*time.Second); !slices.Equal(got, seq(1, 5)) {
		t.Fatalf("leaf's client got %v, want 1..5", got)
	}
	if st := be.Stats(streamPath); st.Total != 1 {
		t.Fatalf("back end saw %d connections, want 1", st.Total)
	}
	// The policy is enough: Consul refused nothing the nodes asked.
	for _, n := range nodes {
		if v := n.MeshView(); !v.ConsulOK || v.ConsulError != "" {
			t.Errorf("%s: consul ok %v, error %q", n.ID(), v.ConsulOK, v.ConsulError)
		}
		if e := consulErrorsOf(t, n); e != 0 {
			t.Errorf("%s: %v failed consul requests with the shipped policy", n.ID(), e)
		}
	}

	// Without the write rule (a token that may only read) or without any
	// token, the registration is refused, visibly.
	readOnly, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{
		Name:  "ssemesh-read-only",
		Rules: `service_prefix "" { policy = "read" } node_prefix "" { policy = "read" }`,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ro, _, err := admin.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: readOnly.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ id, token string }{{"leaf-read-only", ro.SecretID}, {"leaf-anonymous", ""}} {
		n := meshNode(t, meshSpec{id: tc.id, dc: "dc1", tier: 2, consul: agent.HTTPAddr}, withToken(tc.token))
		ssetest.Eventually(t, tc.id+" reporting a refused registration", 10*time.Second, func() bool {
			return consulErrorsOf(t, n) > 0 && strings.Contains(n.MeshView().ConsulError, "403")
		})
		if ids := registeredNodes(t, admin); slices.Contains(ids, tc.id) {
			t.Errorf("%s is in the catalog (%v) although its token may not register it", tc.id, ids)
		}
		if svc, _, err := admin.Agent().Service(tc.id, nil); err == nil {
			t.Errorf("%s is registered on the agent: %+v", tc.id, svc)
		}
	}
}
