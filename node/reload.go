package node

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"sort"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// ReloadResult says what a reload did.
type ReloadResult struct {
	// Result is "ok" (the new configuration is in force, with the keys in
	// Kept left as they were) or "refused" (nothing changed; Error says
	// why).
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
	// Changed lists the keys whose new values are now in force.
	Changed []string `json:"changed"`
	// Kept lists the keys that changed in the file but take effect only
	// at a restart; their old values stay in force.
	Kept []string `json:"kept"`
	// TLS reports TLS files that could not be re-read; the old ones are
	// kept.
	TLS string `json:"tls_error,omitempty"`
}

// reloadable are the keys a running node takes from a new configuration,
// each with how to copy it.
var reloadable = []struct {
	key  string
	copy func(dst *Config, src Config)
}{
	{"limits", func(d *Config, s Config) { d.Limits = s.Limits }},
	{"cors", func(d *Config, s Config) { d.CORS = s.CORS }},
	{"expose_mounts", func(d *Config, s Config) { d.ExposeMounts = s.ExposeMounts }},
	{"trusted_proxies", func(d *Config, s Config) { d.TrustedProxies = s.TrustedProxies }},
	{"backends", func(d *Config, s Config) { d.Backends = s.Backends }},
	{"auth", func(d *Config, s Config) { d.Auth = s.Auth }},
	{"admin.token", func(d *Config, s Config) { d.Admin.Token = s.Admin.Token }},
	{"mesh.secret", func(d *Config, s Config) { d.Mesh.Secret, d.Mesh.AcceptSecrets = s.Mesh.Secret, s.Mesh.AcceptSecrets }},
	{"drain", func(d *Config, s Config) { d.Drain = s.Drain }},
	{"log.level", func(d *Config, s Config) { d.Log.Level = s.Log.Level }},
	{"access_log", func(d *Config, s Config) { d.AccessLog = s.AccessLog }},
}

// restartOnly are the keys reported when a reload finds them changed:
// listeners, identity and place in the mesh, and what the relay and the
// mesh were built with.
var restartOnly = []struct {
	key string
	get func(Config) any
}{
	{"listen", func(c Config) any { return c.Listen }},
	{"tls", func(c Config) any { return c.TLS }},
	{"proxy_protocol", func(c Config) any { return c.ProxyProtocol }},
	{"node_id", func(c Config) any { return c.NodeID }},
	{"admin.listen", func(c Config) any { return c.Admin.Listen }},
	{"admin.tls", func(c Config) any { return c.Admin.TLS }},
	{"admin.pprof", func(c Config) any { return c.Admin.PprofEnabled() }},
	{"admin.metrics_open", func(c Config) any { return c.Admin.MetricsOpen }},
	{"admin.allowed_hosts", func(c Config) any { return c.Admin.AllowedHosts }},
	{"admin.insecure_no_token", func(c Config) any { return c.Admin.InsecureNoToken }},
	{"log.format", func(c Config) any { return c.Log.Format }},
	{"relay", func(c Config) any { return c.Relay }},
	{"mesh.dc", func(c Config) any { return c.Mesh.DC }},
	{"mesh.tier", func(c Config) any { return c.Mesh.Tier }},
	{"mesh.advertise", func(c Config) any { return c.Mesh.Advertise }},
	{"mesh.gossip", func(c Config) any { return c.Mesh.Gossip }},
	{"mesh.consul", func(c Config) any { return c.Mesh.Consul }},
	{"mesh.tls", func(c Config) any { return c.Mesh.TLS }},
	{"mesh.settle", func(c Config) any { return c.Mesh.Settle }},
	{"mesh.avoid_for", func(c Config) any { return c.Mesh.AvoidFor }},
	{"mesh.handoff", func(c Config) any { return c.Mesh.Handoff }},
}

// EnableReload lets the node re-read its configuration. source builds it
// the way the command did at start (file, environment, flags); setLevel
// applies a new log level (nil: the level is kept).
func (n *Node) EnableReload(source func() (Config, error), setLevel func(logrus.Level)) {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	n.source, n.setLevel = source, setLevel
}

// reloads counts reloads by result, for ssemesh_config_reloads_total.
type reloadCounts struct{ ok, refused atomic.Uint64 }

// errNoSource is a reload of a node that was given no configuration
// source (a node built in a program rather than by the command).
var errNoSource = errors.New("this node was started without a configuration file to re-read")

// Reload re-reads the TLS files and the configuration, and puts in force
// what may change while running: back ends (the streams of one removed are
// closed with a retry hint; one whose uri, headers, credentials or TLS
// changed reconnects make-before-break, resuming from the last event), the
// limits, CORS, trusted proxies, auth, the admin token, the mesh secret,
// the drain period, the log level and the access log (reopened, for log
// rotation). A configuration that fails its checks changes nothing.
func (n *Node) Reload() ReloadResult {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	res := ReloadResult{Changed: []string{}, Kept: []string{}}
	if err := n.tls.reload(); err != nil {
		res.TLS = err.Error()
	}
	refuse := func(err error) ReloadResult {
		n.reloadCounts.refused.Add(1)
		res.Result, res.Error = "refused", err.Error()
		n.log.WithError(err).Warn("configuration reload refused: nothing changed")
		return res
	}
	if n.source == nil {
		return refuse(errNoSource)
	}
	next, err := n.source()
	if err == nil {
		if next.NodeID == "" {
			h, _ := os.Hostname()
			next.NodeID = h + "-" + portOf(next.Listen)
		}
		err = next.Validate()
	}
	if err != nil {
		return refuse(err)
	}
	old := n.live()
	eff := old.cfg
	for _, r := range reloadable {
		r.copy(&eff, next)
	}
	for _, r := range restartOnly {
		if !reflect.DeepEqual(r.get(n.cfg), r.get(next)) {
			res.Kept = append(res.Kept, r.key)
		}
	}
	// What goes in force is a mix of the new file and what the node keeps
	// until a restart: the mix must pass the checks too (a token removed
	// while the admin listener stays off loopback, say).
	if err := eff.Validate(); err != nil {
		return refuse(fmt.Errorf("with the keys a reload cannot change kept as they are: %w", err))
	}
	lvl, err := parseLevel(eff.Log.Level)
	if err != nil {
		return refuse(&ConfigError{Key: "log.level", Reason: err.Error()})
	}
	if _, err := n.staticMounts(eff.Backends); err != nil {
		return refuse(err)
	}
	st, err := newSettings(eff, old, n.log)
	if err != nil {
		return refuse(err)
	}
	// Reopened on every reload, changed or not: after logrotate moved the
	// file away, SIGHUP makes the node write to a new one.
	if err := n.access.configure(eff.AccessLog); err != nil {
		if st.auth != old.auth {
			st.auth.close()
		}
		return refuse(err)
	}
	for _, r := range reloadable {
		var a, b Config
		r.copy(&a, old.cfg)
		r.copy(&b, eff)
		if !reflect.DeepEqual(a, b) {
			res.Changed = append(res.Changed, r.key)
		}
	}

	before := map[string]*mount{}
	for _, m := range n.mountList() {
		before[m.spec.Name] = m
	}
	n.cur.Store(st)
	if st.auth != old.auth {
		old.auth.close()
	}
	n.mountsMu.Lock()
	n.rebuildMountsLocked()
	n.mountsMu.Unlock()
	n.moveStreams(before)
	if n.view != nil && eff.Limits.MaxClients != old.cfg.Limits.MaxClients {
		// Peers choose parents by free capacity: they must see the new one.
		n.view.SetCapacity(eff.Limits.MaxClients)
	}
	if n.setLevel != nil && eff.Log.Level != old.cfg.Log.Level {
		n.setLevel(lvl)
	}
	sort.Strings(res.Changed)
	n.reloadCounts.ok.Add(1)
	res.Result = "ok"
	l := n.log.WithField("changed", res.Changed)
	if len(res.Kept) > 0 {
		l = l.WithField("restart_needed", res.Kept)
	}
	l.Info("configuration reloaded")
	return res
}

// moveStreams brings the open streams in line with the new mount table:
// a stream whose back end is gone (or mounted elsewhere now) is ended with
// a retry hint; one whose back end's requests changed reconnects.
func (n *Node) moveStreams(before map[string]*mount) {
	for _, rt := range n.routing.all() {
		now := n.findMount(rt.path)
		was := before[rt.backend]
		switch {
		case now == nil || now.spec.Name != rt.backend:
			n.log.WithField("stream", rt.key).WithField("backend", rt.backend).Info("back end removed or moved: closing its stream")
			n.relay.End(rt.key)
		case was == nil || was.version != now.version || !sameInstances(was, now):
			n.relay.Retarget(rt.key)
		}
	}
}

func sameInstances(a, b *mount) bool {
	if len(a.instances) != len(b.instances) {
		return false
	}
	for i := range a.instances {
		if a.instances[i].String() != b.instances[i].String() {
			return false
		}
	}
	return true
}

// reloadHandler serves POST /v1/reload.
func (n *Node) reloadHandler(w http.ResponseWriter, _ *http.Request) {
	res := n.Reload()
	status := http.StatusOK
	if res.Result != "ok" {
		status = http.StatusUnprocessableEntity
	}
	writeJSON(w, status, res)
}
