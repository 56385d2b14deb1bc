package netns

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/consultest"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// Ports every host uses; each host has an address of its own.
const (
	clientPort = 8080
	adminPort  = 9090
	gossipPort = 7946
	consulPort = 8500
	backendURL = "/feed/"
	nsPrefix   = "ssm-"
)

// host is one row of `scripts/netns-faults.sh hosts`.
type host struct {
	name, dc, ip string
}

func (h host) ns() string { return nsPrefix + h.name }

// drill owns the namespaces, the processes in them and the ways to look
// at them from outside.
type drill struct {
	t      *testing.T
	repo   string
	script string
	state  string // logs, sockets, binaries
	hosts  map[string]host

	ssemesh, faultkit, consul string

	secret, gossipKey, token string

	obs *http.Client // through the observer namespace

	mu    sync.Mutex
	procs map[string]*proc

	probes int // streams opened by probeNewStream, each under a new path
}

// requireDrill ends the test unless the drill was asked for: it skips
// without SSEMESH_NETNS=1, and fails (never skips) when it was asked for
// but something it needs is missing.
func requireDrill(t *testing.T) *drill {
	t.Helper()
	if os.Getenv("SSEMESH_NETNS") != "1" {
		t.Skip("network-namespace drill: set SSEMESH_NETNS=1 and run as root (or use scripts/netns-faults.sh)")
	}
	if runtime.GOOS != "linux" {
		t.Fatalf("SSEMESH_NETNS=1 but network namespaces need Linux, not %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("SSEMESH_NETNS=1 but not root (euid %d): network namespaces need root", os.Geteuid())
	}
	for _, c := range []string{"ip", "ss", "go"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("SSEMESH_NETNS=1 but %s is not on PATH: %v", c, err)
		}
	}
	_, errLegacy := exec.LookPath("iptables-legacy")
	_, errNft := exec.LookPath("iptables")
	if errLegacy != nil && errNft != nil {
		t.Fatalf("SSEMESH_NETNS=1 but neither iptables-legacy nor iptables is on PATH")
	}
	consul, err := consultest.Binary()
	if err != nil {
		t.Fatalf("SSEMESH_NETNS=1 but no Consul agent: %v", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Clean(filepath.Join(wd, "..", ".."))
	d := &drill{
		t:      t,
		repo:   repo,
		script: filepath.Join(repo, "scripts", "netns-faults.sh"),
		consul: consul,
		procs:  map[string]*proc{},
	}
	d.state = t.TempDir()
	if s := os.Getenv("SSM_STATE"); s != "" {
		// The script's state directory: logs stay there after the run.
		d.state = filepath.Join(s, "run")
		if err := os.RemoveAll(d.state); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{"bin", "logs", "consul-dc1.d", "consul-dc2.d"} {
		if err := os.MkdirAll(filepath.Join(d.state, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d.secret = randomString(t, 32)
	d.token = randomString(t, 24)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	d.gossipKey = base64.StdEncoding.EncodeToString(key)
	return d
}

func randomString(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// build compiles the node and the drill's helper.
func (d *drill) build() {
	d.t.Helper()
	d.ssemesh = filepath.Join(d.state, "bin", "ssemesh")
	d.faultkit = filepath.Join(d.state, "bin", "faultkit")
	for out, pkg := range map[string]string{d.ssemesh: "./cmd/ssemesh", d.faultkit: "./test/netns/faultkit"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = d.repo
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		if b, err := cmd.CombinedOutput(); err != nil {
			d.t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
}

// sh runs the script with args.
func (d *drill) sh(args ...string) string {
	d.t.Helper()
	cmd := exec.Command("bash", append([]string{d.script}, args...)...)
	cmd.Env = append(os.Environ(), "SSM_STATE="+d.state, "SSM_FAULTKIT="+d.faultkit)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		d.t.Fatalf("netns-faults.sh %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// network builds the namespaces, after removing what a previous run left,
// and removes them when the test ends.
func (d *drill) network() {
	d.t.Helper()
	d.sh("down")
	d.t.Cleanup(func() {
		d.killAll()
		cmd := exec.Command("bash", d.script, "down")
		cmd.Env = append(os.Environ(), "SSM_STATE="+d.state)
		if b, err := cmd.CombinedOutput(); err != nil {
			d.t.Errorf("netns-faults.sh down: %v\n%s", err, b)
		}
	})
	d.sh("up")
	d.hosts = map[string]host{}
	for line := range strings.Lines(d.sh("hosts")) {
		f := strings.Fields(line)
		if len(f) != 3 {
			d.t.Fatalf("netns-faults.sh hosts: bad line %q", line)
		}
		d.hosts[f[0]] = host{name: f[0], dc: f[1], ip: f[2]}
	}
	for _, want := range []string{"consul1", "consul2", "backend", "root1", "leaf1a", "leaf1b", "relay2", "leaf2a", "leaf2b", "clients1", "clients2"} {
		if _, ok := d.hosts[want]; !ok {
			d.t.Fatalf("netns-faults.sh hosts has no %s", want)
		}
	}
}

func (d *drill) host(name string) host {
	h, ok := d.hosts[name]
	if !ok {
		d.t.Fatalf("no host %s", name)
	}
	return h
}

func (d *drill) addr(name string, port int) string {
	return net.JoinHostPort(d.host(name).ip, strconv.Itoa(port))
}

// proc is one process started in a namespace. Its goroutine starts it,
// reaps it and closes exited.
type proc struct {
	name    string
	cmd     *exec.Cmd
	log     string
	exited  <-chan struct{}
	exitErr func() error // what Wait returned; blocks until exited
}

// childEnv is the environment of every process the drill starts: the
// caller's, without Consul or ssemesh settings that could point a process
// elsewhere, plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CONSUL_") || strings.HasPrefix(kv, "SSEMESH_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// start runs bin with args inside namespace ns. `ip netns exec` replaces
// itself with bin, so the process is bin itself: a signal to it reaches
// bin. The kernel kills it if the test binary dies.
func (d *drill) start(name, ns, bin string, env []string, args ...string) *proc {
	d.t.Helper()
	logPath := filepath.Join(d.state, "logs", name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "==== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited, exitErr, err := consultest.StartTied(cmd)
	if err != nil {
		d.t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: exited, exitErr: exitErr}
	d.mu.Lock()
	d.procs[name] = p
	d.mu.Unlock()
	return p
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends sig and waits up to grace for the process to exit, then
// kills it.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (d *drill) killAll() {
	d.mu.Lock()
	ps := make([]*proc, 0, len(d.procs))
	for _, p := range d.procs {
		ps = append(ps, p)
	}
	d.mu.Unlock()
	for _, p := range ps {
		if p.alive() {
			_ = p.cmd.Process.Kill()
		}
	}
	for _, p := range ps {
		<-p.exited
	}
}

func (d *drill) proc(name string) *proc {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.procs[name]
	if p == nil {
		d.t.Fatalf("no process %s", name)
	}
	return p
}

// logTail is the end of a process's log, for failure messages.
func (d *drill) logTail(name string, lines int) string {
	b, err := os.ReadFile(filepath.Join(d.state, "logs", name+".log"))
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// startObserver runs the proxy in the observer namespace and points the
// drill's HTTP client at it.
func (d *drill) startObserver() {
	d.t.Helper()
	sock := filepath.Join(d.state, "obs.sock")
	p := d.start("observer", nsPrefix+"obs", d.faultkit, childEnv(), "proxy", "--unix", sock)
	ssetest.EventuallyEvery(d.t, "observer proxy socket", 10*time.Second, 100*time.Millisecond, func() bool {
		_, err := os.Stat(sock)
		return err == nil && p.alive()
	})
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		var dl net.Dialer
		c, err := dl.DialContext(ctx, "unix", sock)
		if err != nil {
			return nil, err
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		if _, err := io.WriteString(c, addr+"\n"); err != nil {
			c.Close()
			return nil, err
		}
		// Byte by byte: nothing after the answer's newline may be consumed.
		var line []byte
		b := make([]byte, 1)
		for len(line) < 512 {
			if _, err := c.Read(b); err != nil {
				c.Close()
				return nil, fmt.Errorf("observer proxy: %w", err)
			}
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
		}
		_ = c.SetDeadline(time.Time{})
		if string(line) != "ok" {
			c.Close()
			return nil, fmt.Errorf("observer proxy to %s: %s", addr, line)
		}
		return c, nil
	}
	d.obs = &http.Client{
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true},
		Timeout:   5 * time.Second,
	}
}

// get fetches url through the observer; admin requests carry the token.
func (d *drill) get(url string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err := d.obs.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

func (d *drill) getJSON(url string, v any) error {
	b, err := d.get(url)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// unixClient reads a faultkit clients process's counters.
func unixClient(sock string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		}},
		Timeout: 5 * time.Second,
	}
}

// metrics parses a Prometheus text exposition into name{labels} -> value.
func parseMetrics(b []byte) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// sum adds every series of metric name, whatever its labels.
func sum(m map[string]float64, name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// ssEstablished lists the established TCP connections of a namespace as
// local and peer addresses.
func ssEstablished(ns string) ([][2]string, error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "ss", "-Htn", "state", "established").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("ss in %s: %v: %s", ns, err, ee.Stderr)
		}
		return nil, fmt.Errorf("ss in %s: %w", ns, err)
	}
	var conns [][2]string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) >= 4 {
			conns = append(conns, [2]string{f[2], f[3]})
		}
	}
	return conns, nil
}

func execOut(name string, args ...string) (string, error) {
	b, err := exec.Command(name, args...).CombinedOutput()
	return string(b), err
}
