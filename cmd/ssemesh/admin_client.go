package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// adminTokenEnv names the environment variable holding the admin token, so
// it need not appear in the process list.
const adminTokenEnv = "SSEMESH_ADMIN_TOKEN"

// adminTimeout bounds one admin API request: a mesh-wide report asks other
// nodes, which can take a few seconds when some are unreachable.
const adminTimeout = 20 * time.Second

// adminFlags are the flags every admin API subcommand shares.
type adminFlags struct {
	admin         string
	token         string
	ca, cert, key string
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.admin, "admin", "", "admin listener of any node: `host:port` or http(s)://host:port (default "+defaultAdmin+", the node on this machine)")
	fs.StringVar(&a.token, "token", "", "admin bearer `token` (the node's admin.token)")
	fs.StringVar(&a.ca, "ca", "", "PEM `file` of the CA that signed an https admin listener's certificate (default: the system's roots)")
	fs.StringVar(&a.cert, "cert", "", "client certificate PEM `file` for an admin listener that asks for one (admin.tls.client_ca)")
	fs.StringVar(&a.key, "key", "", "key PEM `file` of --cert")
}

// defaultAdmin is the admin listener of a node with the embedded default:
// on a node's own machine the admin commands need no --admin.
const defaultAdmin = "127.0.0.1:9090"

// adminEnv names the environment variables the admin flags fall back to.
// SSEMESH_ADMIN is also what `ssemesh run` listens on, so in a container
// `ssemesh health` finds its own node with no flag.
var adminEnv = map[string]string{
	"admin": "SSEMESH_ADMIN",
	"token": adminTokenEnv,
	"ca":    "SSEMESH_ADMIN_CA",
	"cert":  "SSEMESH_ADMIN_CERT",
	"key":   "SSEMESH_ADMIN_KEY",
}

// adminCommand is a command descriptor for an admin API subcommand.
func adminCommand(name, synopsis, summary, about string) command {
	return command{name: name, synopsis: synopsis, summary: summary, about: about, env: adminEnv,
		notes: "Exit status: 0 done, 1 the node could not be reached or refused, 2 usage error."}
}

// client validates the flags and builds the API client.
func (a *adminFlags) client() (*adminClient, error) {
	if a.admin == "" {
		a.admin = defaultAdmin
	}
	raw := a.admin
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: --admin %q: want host:port or http(s)://host:port", errUsage, a.admin)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	tok := a.token
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc, err := a.tlsConfig()
	if err != nil {
		return nil, err
	}
	tr.TLSClientConfig = tc
	return &adminClient{base: u, token: tok, http: &http.Client{Timeout: adminTimeout, Transport: tr}}, nil
}

// tlsConfig is the client's TLS configuration from --ca, --cert and --key.
func (a *adminFlags) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.ca != "" {
		pem, err := os.ReadFile(a.ca)
		if err != nil {
			return nil, fmt.Errorf("%w: --ca: %v", errUsage, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: --ca %s holds no PEM certificate", errUsage, a.ca)
		}
	}
	if (a.cert == "") != (a.key == "") {
		return nil, fmt.Errorf("%w: --cert and --key go together", errUsage)
	}
	if a.cert != "" {
		pair, err := tls.LoadX509KeyPair(a.cert, a.key)
		if err != nil {
			return nil, fmt.Errorf("%w: --cert/--key: %v", errUsage, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// adminClient reads a node's admin API.
type adminClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

// get fetches path (with query) and returns the body of a 2xx answer, or
// of any answer listed in also. Other answers become errors naming the
// node's reason.
func (c *adminClient) get(ctx context.Context, path string, query url.Values, also ...int) (int, []byte, error) {
	return c.do(ctx, http.MethodGet, path, query, also...)
}

// do is get with any method.
func (c *adminClient) do(ctx context.Context, method, path string, query url.Values, also ...int) (int, []byte, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return 0, nil, fmt.Errorf("admin: building request for %s: %w", u.Redacted(), err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("admin: %s %s: %w", method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("admin: %s %s: reading the answer: %w", method, u.Redacted(), err)
	}
	if resp.StatusCode/100 == 2 {
		return resp.StatusCode, body, nil
	}
	for _, s := range also {
		if resp.StatusCode == s {
			return resp.StatusCode, body, nil
		}
	}
	reason := strings.TrimSpace(string(body))
	var e struct {
		Code    string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil {
		switch {
		case e.Message != "" && e.Code != "":
			reason = e.Code + ": " + e.Message
		case e.Message != "":
			reason = e.Message
		case e.Code != "":
			reason = e.Code
		}
	}
	if len(reason) > 300 {
		reason = reason[:300] + "..."
	}
	hint := ""
	if resp.StatusCode == http.StatusUnauthorized {
		hint = " (give the node's admin.token with --token or $" + adminTokenEnv + ")"
	}
	return resp.StatusCode, nil, fmt.Errorf("admin: %s %s: %s: %s%s", method, u.Redacted(), resp.Status, reason, hint)
}

// getJSON fetches path and decodes its JSON answer into v.
func (c *adminClient) getJSON(ctx context.Context, path string, v any) error {
	_, body, err := c.get(ctx, path, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("admin: decoding %s: %w", path, err)
	}
	return nil
}
