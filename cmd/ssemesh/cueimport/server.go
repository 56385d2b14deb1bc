package cueimport

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Dropwizard's defaults where a key is absent: the "default" server type
// listens for clients on 8080 and for operators on 8081, on every
// interface; the "simple" type serves both on one connector, clients
// under /application and admin pages under /admin.
const (
	defaultAppPort       = "8080"
	defaultAdminPort     = "8081"
	simpleAppContextPath = "/application"
)

const (
	// ssemeshDefaultAdmin is ssemesh's own default admin listener.
	ssemeshDefaultAdmin = "127.0.0.1:9090"
	// adminTokenVar supplies the token an admin listener off loopback needs.
	adminTokenVar = "SSEMESH_ADMIN_TOKEN"
	// tlsDir is where the warnings put the PEM files of a converted keystore.
	tlsDir = "/etc/ssemesh/tls"
)

// connector is one of Dropwizard's connectors, read.
type connector struct {
	it       item
	typ      string
	host     text // bindHost; empty means every interface
	port     text
	keyStore text
	ksType   string
}

// addr is the connector's address as ssemesh writes a listener.
func (k connector) addr() text {
	host := k.host
	if len(host.segs) == 0 {
		host = literal("0.0.0.0")
	} else if !host.hasRefs() && strings.Contains(host.plain(), ":") {
		host = literal("[" + strings.Trim(host.plain(), "[]") + "]") // IPv6
	}
	return concat(host, literal(":"), k.port)
}

// loopback reports a connector only this machine can reach. A host that
// comes from the environment is not known to be one.
func (k connector) loopback() bool {
	if len(k.host.segs) == 0 || k.host.hasRefs() {
		return false
	}
	h := strings.Trim(k.host.plain(), "[]")
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

func (k connector) secure() bool { return k.typ == "https" || k.typ == "h2" }

// readConnector reads one entry of a connector list.
func (c *conv) readConnector(it item, defPort string) (connector, error) {
	ps, err := c.mapping(it)
	if err != nil {
		return connector{}, err
	}
	k := connector{it: it, typ: "http", port: literal(defPort), ksType: "JKS"}
	var ignored []string
	for _, p := range ps {
		switch p.name {
		case "type":
			t, err := c.scalar(p.val)
			if err != nil {
				return k, err
			}
			k.typ = strings.ToLower(t.plain())
		case "port":
			t, err := c.scalar(p.val)
			if err != nil {
				return k, err
			}
			if !t.hasRefs() {
				if n, err := strconv.Atoi(t.plain()); err != nil || n < 0 || n > 65535 {
					return k, c.errAt(p.val, "want a port from 0 to 65535, got %q", t.plain())
				}
			}
			k.port = t
		case "bindHost":
			t, err := c.scalar(p.val)
			if err != nil {
				return k, err
			}
			k.host = t
		case "keyStorePath":
			if k.keyStore, err = c.scalar(p.val); err != nil {
				return k, err
			}
		case "keyStoreType":
			t, err := c.scalar(p.val)
			if err != nil {
				return k, err
			}
			k.ksType = t.source()
		default:
			ignored = append(ignored, p.name)
		}
	}
	if len(ignored) > 0 && !k.secure() {
		c.note(it.key, "%s: connector settings with no ssemesh equivalent; ignored", strings.Join(ignored, ", "))
	}
	return k, nil
}

// connectors reads a connector list, or Dropwizard's default when absent.
func (c *conv) connectors(parent map[string]item, parentKey, key, defPort string) ([]connector, error) {
	it, ok := parent[key]
	if !ok || it.null() {
		it = item{key: parentKey + "." + key}
		c.note(it.key, "absent: Dropwizard's default, http on port %s on every interface", defPort)
		return []connector{{it: it, typ: "http", port: literal(defPort)}}, nil
	}
	entries, err := c.list(it)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, c.errAt(it, "no connector: ssemesh needs an address to listen on")
	}
	out := make([]connector, 0, len(entries))
	for _, e := range entries {
		k, err := c.readConnector(e, defPort)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// keystoreCommands are the commands that turn a Java keystore into the PEM
// files ssemesh reads.
func keystoreCommands(k connector, base string) string {
	ks := k.keyStore.source()
	if ks == "" {
		ks = "KEYSTORE"
	}
	p12 := ks
	var b strings.Builder
	if !strings.EqualFold(k.ksType, "PKCS12") {
		p12 = base + ".p12"
		fmt.Fprintf(&b, "keytool -importkeystore -srckeystore %s -srcstoretype %s -destkeystore %s -deststoretype PKCS12; ", ks, k.ksType, p12)
	}
	fmt.Fprintf(&b, "openssl pkcs12 -in %s -nokeys -out %s/%s.pem; openssl pkcs12 -in %s -nocerts -nodes -out %s/%s.key", p12, tlsDir, base, p12, tlsDir, base)
	return b.String()
}

// pickListener chooses the connector a listener is made from: the first
// plain HTTP one, else the first HTTPS one (served as plain HTTP until the
// certificate is converted). The others are reported.
func (c *conv) pickListener(ks []connector, what, tlsKey, base string) (connector, []string, error) {
	chosen := -1
	for i, k := range ks {
		if k.typ == "http" || k.typ == "h2c" {
			chosen = i
			break
		}
	}
	if chosen < 0 {
		for i, k := range ks {
			if k.secure() {
				chosen = i
				break
			}
		}
	}
	if chosen < 0 {
		return connector{}, nil, c.errAt(ks[0].it, "no http or https connector (types: %s)", connectorTypes(ks))
	}
	k := ks[chosen]
	var hint []string
	for i, o := range ks {
		switch {
		case i == chosen && o.secure():
			c.warn(o.it.key, "%s: ssemesh serves plain HTTP on %s until %s is set: convert the keystore to PEM (%s), then add %s: {cert: %s/%s.pem, key: %s/%s.key}",
				o.typ, o.addr().source(), tlsKey, keystoreCommands(o, base), tlsKey, tlsDir, base, tlsDir, base)
			// The hint sits in the listener's own section: its key is the
			// last part of tlsKey, ready to be uncommented.
			local := tlsKey[strings.LastIndexByte(tlsKey, '.')+1:]
			hint = []string{fmt.Sprintf("%s: {cert: %s/%s.pem, key: %s/%s.key}   # from %s's keystore (see the warnings above)", local, tlsDir, base, tlsDir, base, o.it.key)}
		case i == chosen:
			if o.typ == "h2c" {
				c.note(o.it.key, "h2c: served as HTTP/1.1, which every SSE client speaks")
			}
		case o.secure():
			c.warn(o.it.key, "%s on %s is not converted: ssemesh has one %s, here %s; to serve HTTPS there instead, convert the keystore to PEM (%s) and set %s: {cert: %s/%s.pem, key: %s/%s.key} with that port",
				o.typ, o.addr().source(), what, k.addr().source(), keystoreCommands(o, base), tlsKey, tlsDir, base, tlsDir, base)
		case o.typ == "http" || o.typ == "h2c":
			c.warn(o.it.key, "http on %s is not converted: ssemesh has one %s, here %s", o.addr().source(), what, k.addr().source())
		default:
			c.warn(o.it.key, "connector type %q is not converted", o.typ)
		}
	}
	return k, hint, nil
}

func connectorTypes(ks []connector) string {
	ts := make([]string, len(ks))
	for i, k := range ks {
		ts[i] = k.typ
	}
	return strings.Join(ts, ", ")
}

// server converts the server section: the client and admin listeners, and
// the context path that prefixes every client path.
func (c *conv) server(top map[string]item, out *output) error {
	it := top["server"]
	it.key = "server"
	ps, err := c.mapping(it)
	if err != nil {
		return err
	}
	s := byName(ps)
	typ := "default"
	if t, ok := s["type"]; ok {
		v, err := c.scalar(t)
		if err != nil {
			return err
		}
		typ = strings.ToLower(v.plain())
	}
	if typ != "default" && typ != "simple" {
		return c.errAt(s["type"], "want default or simple, got %q", typ)
	}
	contextPath := ""
	if typ == "simple" {
		contextPath = simpleAppContextPath
	}
	var ignored []string
	for _, p := range ps {
		switch p.name {
		case "type", "applicationConnectors", "adminConnectors", "connector", "adminContextPath":
		case "applicationContextPath":
			t, err := c.scalar(p.val)
			if err != nil {
				return err
			}
			if t.hasRefs() {
				return c.errAt(p.val, "a reference cannot be carried into the mounts: write the path")
			}
			contextPath = t.plain()
		case "gzip":
			c.note(p.val.key, "ignored: ssemesh never compresses event streams, since compression holds events back until a buffer fills")
		case "requestLog":
			out.accessLog = true
			c.warn(p.val.key, "converted to access_log: one JSON line per stream when it ends (client, stream, status, duration, events, bytes, end reason) on standard output; set access_log.path for a file")
		default:
			ignored = append(ignored, p.name)
		}
	}
	if len(ignored) > 0 {
		c.note("server", "%s: Jetty and Jersey settings with no ssemesh equivalent; ignored", strings.Join(ignored, ", "))
	}
	contextPath = "/" + strings.Trim(contextPath, "/")
	if contextPath != "/" {
		out.contextPath = contextPath
		c.warn("server.applicationContextPath", "the CUE proxy served its paths below %s: the mounts start with it, so that clients keep their paths", contextPath)
	}

	var apps, admins []connector
	if typ == "simple" {
		k, err := c.simpleConnector(s)
		if err != nil {
			return err
		}
		apps = []connector{k}
	} else {
		if apps, err = c.connectors(s, "server", "applicationConnectors", defaultAppPort); err != nil {
			return err
		}
		if admins, err = c.connectors(s, "server", "adminConnectors", defaultAdminPort); err != nil {
			return err
		}
	}
	app, hint, err := c.pickListener(apps, "client listener", "tls", "sse-proxy")
	if err != nil {
		return err
	}
	out.listen, out.listenHint = app.addr(), hint
	c.vars.use(out.listen, kindText)
	if typ == "simple" {
		out.adminListen = literal(ssemeshDefaultAdmin)
		c.warn("server.adminContextPath", "the CUE proxy's admin pages shared the client port; ssemesh's admin listener is separate: %s", ssemeshDefaultAdmin)
		return nil
	}
	admin, hint, err := c.pickListener(admins, "admin listener", "admin.tls", "sse-proxy-admin")
	if err != nil {
		return err
	}
	out.adminListen, out.adminHint = admin.addr(), hint
	c.vars.use(out.adminListen, kindText)
	if !admin.loopback() {
		out.adminToken = text{segs: []segment{{ref: &ref{name: adminTokenVar}}}}
		c.vars.use(out.adminToken, kindText)
		c.warn(admin.it.key, "the admin listener %s is reachable from other hosts, where ssemesh requires a token: admin.token reads it from %s (make one with openssl rand -base64 32); /healthz and /readyz stay open without it. To keep the listener local instead, bind it to 127.0.0.1",
			admin.addr().source(), adminTokenVar)
	}
	return nil
}

// simpleConnector reads the simple server's one connector.
func (c *conv) simpleConnector(s map[string]item) (connector, error) {
	it, ok := s["connector"]
	if !ok || it.null() {
		c.note("server.connector", "absent: Dropwizard's default, http on port %s on every interface", defaultAppPort)
		return connector{it: item{key: "server.connector"}, typ: "http", port: literal(defaultAppPort)}, nil
	}
	return c.readConnector(it, defaultAppPort)
}
