package consultest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Tunables for agent lifecycles. They are constants rather than Options
// fields because no caller has needed to vary them; a dev agent elects itself
// in one or two seconds, so the deadlines leave a wide margin for a loaded
// machine.
const (
	startAttempts  = 3
	leaderTimeout  = 30 * time.Second
	stopGrace      = 5 * time.Second
	pollInterval   = 50 * time.Millisecond
	wanTimeout     = 60 * time.Second
	logDumpLimit   = 64 << 10
	restartTimeout = 10 * time.Second
)

// Options configures an agent started by Start.
type Options struct {
	// Datacenter defaults to "dc1".
	Datacenter string
	// NodeName defaults to "consul-<datacenter>".
	NodeName string
	// JoinWAN lists serf WAN addresses (Agent.SerfWANAddr) of agents in other
	// data centres to join; the join is retried until it succeeds.
	JoinWAN []string
	// ACLManagementToken, when set (a UUID), enables ACLs with default
	// policy "deny" and makes this the initial management token. The agent
	// uses it as its own agent token too, as an operator's agent token would
	// be set, so the agent can keep its node in the catalog. Client sends it;
	// Start returns once it is accepted.
	ACLManagementToken string
}

// Agent is a running Consul -dev agent (a single-server data centre).
type Agent struct {
	// HTTPAddr is the HTTP API address, 127.0.0.1:port.
	HTTPAddr string
	// SerfLANAddr is the LAN gossip address (TCP and UDP).
	SerfLANAddr string
	// SerfWANAddr is the WAN gossip address other data centres join.
	SerfWANAddr string
	// ServerAddr is the server RPC address.
	ServerAddr string
	// Datacenter is the agent's data centre.
	Datacenter string
	// NodeName is the agent's node name.
	NodeName string
	// LogPath is the file holding the agent's combined output.
	LogPath string
	// ConfigDir is the agent's -config-dir: service definitions written
	// there (WriteService) are loaded at every start, the way operators
	// register services on an agent that is down.
	ConfigDir string

	bin   string
	opts  Options
	ports ports

	mu   sync.Mutex
	proc *process // nil while stopped
}

// errBind marks an agent start that failed because a picked port was taken
// between picking and binding; Start retries those with fresh ports.
var errBind = errors.New("port already in use")

type ports struct {
	http, serfLAN, serfWAN, server int
}

// Start runs a Consul agent in -dev mode on 127.0.0.1 and waits until it has
// elected itself leader. The agent is stopped when the test ends, also when
// it fails or panics; its log is written to the test's log on failure.
func Start(t testing.TB, o Options) *Agent {
	t.Helper()
	bin := Require(t)
	if o.Datacenter == "" {
		o.Datacenter = "dc1"
	}
	if o.NodeName == "" {
		o.NodeName = "consul-" + o.Datacenter
	}
	o.JoinWAN = slices.Clone(o.JoinWAN)

	a := &Agent{
		Datacenter: o.Datacenter,
		NodeName:   o.NodeName,
		LogPath:    filepath.Join(t.TempDir(), "consul-"+sanitize(o.NodeName)+".log"),
		ConfigDir:  t.TempDir(),
		bin:        bin,
		opts:       o,
	}
	// Cleanups run last-registered first: the agent is stopped before its
	// log is dumped, so the dump includes the shutdown.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("consul agent %s (dc %s) log, %s:\n%s", a.NodeName, a.Datacenter, a.LogPath, a.logTail())
		}
	})
	t.Cleanup(a.Stop)

	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		p, err := pickPorts()
		if err != nil {
			t.Fatalf("consultest: picking ports: %v", err)
		}
		a.setPorts(p)
		lastErr = a.start(leaderTimeout)
		if lastErr == nil {
			return a
		}
		if !errors.Is(lastErr, errBind) {
			break
		}
		t.Logf("consultest: agent %s attempt %d: %v; retrying with fresh ports", a.NodeName, attempt, lastErr)
	}
	t.Fatalf("consultest: starting agent %s: %v", a.NodeName, lastErr)
	return nil
}

func (a *Agent) setPorts(p ports) {
	a.ports = p
	a.HTTPAddr = hostPort(p.http)
	a.SerfLANAddr = hostPort(p.serfLAN)
	a.SerfWANAddr = hostPort(p.serfWAN)
	a.ServerAddr = hostPort(p.server)
}

// Stop terminates the agent: SIGTERM, then SIGKILL after a grace period. It
// returns once the process has exited and is safe to call more than once.
func (a *Agent) Stop() {
	a.mu.Lock()
	p := a.proc
	a.proc = nil
	a.mu.Unlock()
	if p != nil {
		p.stop(stopGrace)
	}
}

// Restart stops the agent and starts it again on the same ports, then waits
// for a leader. A -dev agent keeps its state in memory, so the restarted
// agent starts empty; that mirrors a Consul server losing its data.
func (a *Agent) Restart(t testing.TB) {
	t.Helper()
	a.Stop()
	// The old process has exited, but the kernel may briefly hold a port;
	// retry on bind failures for a while instead of moving ports, since
	// callers rely on the addresses staying the same.
	var lastErr error
	err := poll(context.Background(), restartTimeout, func(context.Context) (bool, error) {
		lastErr = a.start(leaderTimeout)
		if errors.Is(lastErr, errBind) {
			return false, nil
		}
		return true, lastErr
	})
	if err != nil {
		if lastErr != nil {
			err = fmt.Errorf("%w (last attempt: %w)", err, lastErr)
		}
		t.Fatalf("consultest: restarting agent %s: %v", a.NodeName, err)
	}
}

// WriteService writes a service definition into the agent's config
// directory. The agent loads it at its next start or restart; a running agent
// does not see it (use the HTTP API for that).
func (a *Agent) WriteService(t testing.TB, reg *api.AgentServiceRegistration) {
	t.Helper()
	def := map[string]any{"service": map[string]any{
		"id": reg.ID, "name": reg.Name, "address": reg.Address, "port": reg.Port,
		"tags": reg.Tags, "meta": reg.Meta,
	}}
	b, err := json.Marshal(def)
	if err != nil {
		t.Fatalf("consultest: encoding service %s: %v", reg.ID, err)
	}
	path := filepath.Join(a.ConfigDir, "service-"+sanitize(reg.ID)+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatalf("consultest: writing service %s: %v", reg.ID, err)
	}
}

// Client returns a consul/api client for the agent. Address and scheme are
// set explicitly, so CONSUL_HTTP_ADDR or CONSUL_HTTP_SSL in the developer's
// environment cannot point it at another Consul.
func (a *Agent) Client(t testing.TB) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr, Scheme: "http", Token: a.opts.ACLManagementToken})
	if err != nil {
		t.Fatalf("consultest: consul client for %s: %v", a.HTTPAddr, err)
	}
	return c
}

// WaitWAN waits until the agent's catalog lists every one of dcs, i.e. the
// WAN gossip has joined those data centres.
func WaitWAN(t testing.TB, a *Agent, dcs ...string) {
	t.Helper()
	c := a.Client(t)
	var last []string
	err := poll(context.Background(), wanTimeout, func(context.Context) (bool, error) {
		got, err := c.Catalog().Datacenters()
		if err != nil {
			return false, nil // transient: the agent may be busy joining
		}
		last = got
		for _, dc := range dcs {
			if !slices.Contains(got, dc) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("consultest: agent %s: waiting for data centres %v (last seen %v): %v", a.NodeName, dcs, last, err)
	}
}

// start launches the process on a.ports and waits for a leader. Failures
// that look like a port clash wrap errBind.
func (a *Agent) start(timeout time.Duration) error {
	logFile, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening log: %w", err)
	}
	// The child holds its own descriptor, so the parent's copy can close
	// as soon as the process has started.
	defer logFile.Close()
	logOffset, _ := logFile.Seek(0, io.SeekEnd)
	fmt.Fprintf(logFile, "==== consultest: starting %s at %s\n", a.bin, time.Now().Format(time.RFC3339Nano))

	cmd := exec.Command(a.bin, a.args()...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = agentEnv(os.Environ())
	cmd.SysProcAttr = sysProcAttr()
	p, err := startProcess(cmd)
	if err != nil {
		return fmt.Errorf("running %s: %w", a.bin, err)
	}

	a.mu.Lock()
	a.proc = p
	a.mu.Unlock()

	if err := a.waitLeader(p, timeout); err != nil {
		a.Stop()
		if a.logSince(logOffset, "address already in use") {
			return fmt.Errorf("%w: %w", errBind, err)
		}
		return err
	}
	if err := a.waitACL(timeout); err != nil {
		a.Stop()
		return err
	}
	return nil
}

// waitACL waits until the management token is accepted: a new leader
// creates it shortly after its election. Without ACLs it returns at once.
func (a *Agent) waitACL(timeout time.Duration) error {
	token := a.opts.ACLManagementToken
	if token == "" {
		return nil
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + a.HTTPAddr + "/v1/acl/token/self"
	err := poll(context.Background(), timeout, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("X-Consul-Token", token)
		resp, err := hc.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the ACL management token to be accepted at %s: %w", url, err)
	}
	return nil
}

func (a *Agent) args() []string {
	args := []string{
		"agent", "-dev",
		"-datacenter", a.opts.Datacenter,
		"-node", a.opts.NodeName,
		"-bind", "127.0.0.1",
		"-advertise", "127.0.0.1",
		"-advertise-wan", "127.0.0.1",
		"-client", "127.0.0.1",
		"-http-port", strconv.Itoa(a.ports.http),
		"-serf-lan-port", strconv.Itoa(a.ports.serfLAN),
		"-serf-wan-port", strconv.Itoa(a.ports.serfWAN),
		"-server-port", strconv.Itoa(a.ports.server),
		// Ports left at their defaults would clash between agents (8600,
		// 8502, 8503) and are not needed by the mesh.
		"-dns-port", "-1",
		"-grpc-port", "-1",
		"-grpc-tls-port", "-1",
		"-log-level", "info",
		// Tests must not reach the Internet.
		"-hcl", "disable_update_check = true",
	}
	if a.ConfigDir != "" {
		args = append(args, "-config-dir", a.ConfigDir)
	}
	if tok := a.opts.ACLManagementToken; tok != "" {
		args = append(args, "-hcl", fmt.Sprintf(
			`acl { enabled = true default_policy = "deny" enable_token_persistence = true tokens { initial_management = %q agent = %q } }`,
			tok, tok))
	}
	for _, addr := range a.opts.JoinWAN {
		args = append(args, "-retry-join-wan", addr)
	}
	if len(a.opts.JoinWAN) > 0 {
		// The default 30 s between WAN join attempts would dominate a test
		// whose peer is still starting.
		args = append(args, "-retry-interval-wan", "1s")
	}
	return args
}

// agentEnv drops CONSUL_* variables so the developer's own Consul settings
// cannot leak into the agent.
func agentEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if strings.HasPrefix(kv, "CONSUL_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "CHECKPOINT_DISABLE=1")
}

func (a *Agent) waitLeader(p *process, timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + a.HTTPAddr + "/v1/status/leader"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Ends the wait at once when the agent dies instead of polling a
		// dead port until the deadline.
		select {
		case <-p.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := poll(ctx, timeout, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false, nil // not listening yet
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
		if err != nil || resp.StatusCode != http.StatusOK {
			return false, nil
		}
		leader := strings.Trim(strings.TrimSpace(string(body)), `"`)
		return leader != "", nil
	})
	select {
	case <-p.exited:
		return fmt.Errorf("agent exited before electing a leader: %v", p.err)
	default:
	}
	if err != nil {
		return fmt.Errorf("waiting for leader at %s: %w", url, err)
	}
	return nil
}

func (a *Agent) logSince(offset int64, needle string) bool {
	f, err := os.Open(a.LogPath)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return false
	}
	b, err := io.ReadAll(f)
	return err == nil && bytes.Contains(b, []byte(needle))
}

func (a *Agent) logTail() string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return fmt.Sprintf("(reading log: %v)", err)
	}
	if len(b) > logDumpLimit {
		b = append([]byte("...\n"), b[len(b)-logDumpLimit:]...)
	}
	return string(b)
}

// poll calls cond every pollInterval until it reports done, returns an
// error, ctx ends, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		done, err := cond(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// pickPorts reserves four distinct loopback ports that are free for both TCP
// and UDP (serf gossips over both), then releases them for the agent. The
// listeners are held until all four are chosen so the kernel cannot hand the
// same port out twice.
func pickPorts() (ports, error) {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	const maxTries = 32
	var got []int
	for try := 0; len(got) < 4; try++ {
		if try == maxTries {
			return ports{}, fmt.Errorf("no port free for both TCP and UDP in %d tries", maxTries)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return ports{}, fmt.Errorf("listening on 127.0.0.1:0: %w", err)
		}
		closers = append(closers, l)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", hostPort(port))
		if err != nil {
			continue // UDP side taken; keep the TCP listener so it is not offered again
		}
		closers = append(closers, u)
		got = append(got, port)
	}
	return ports{http: got[0], serfLAN: got[1], serfWAN: got[2], server: got[3]}, nil
}

func hostPort(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

// process owns one agent process: its goroutine starts it, reaps it and
// closes exited.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // valid once exited is closed
}

func (p *process) stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.exited:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// StartTied starts cmd so that it does not outlive the test binary (on
// Linux the kernel kills it when the binary dies, however it dies) and
// reaps it in the background: exited is closed once it has exited, and
// exitErr then returns what Wait returned. It is how the agents here are
// started, for other tests' processes too.
func StartTied(cmd *exec.Cmd) (exited <-chan struct{}, exitErr func() error, err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = sysProcAttr()
	}
	p, err := startProcess(cmd)
	if err != nil {
		return nil, nil, err
	}
	return p.exited, func() error { <-p.exited; return p.err }, nil
}
