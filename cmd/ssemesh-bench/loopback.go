package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

var loopback = netip.MustParsePrefix("127.0.0.0/8")

// checkLoopbackHost refuses any host outside 127.0.0.0/8, so that the tool
// can never be pointed at someone else's server. "localhost" is accepted as
// 127.0.0.1 and returned as such, so the result never depends on DNS.
func checkLoopbackHost(host string) (string, error) {
	if strings.EqualFold(host, "localhost") {
		return "127.0.0.1", nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("host %q is not an IP address in 127.0.0.0/8 (only loopback targets are allowed)", host)
	}
	a = a.Unmap()
	if !loopback.Contains(a) {
		return "", fmt.Errorf("host %s is outside 127.0.0.0/8: only loopback targets are allowed", a)
	}
	return a.String(), nil
}

// parseTarget validates a load target URL: http or https, loopback host,
// explicit or default port. It returns the URL and the host:port to dial.
func parseTarget(raw string) (*url.URL, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", fmt.Errorf("parsing url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, "", fmt.Errorf("url %q: only http:// and https:// are supported", raw)
	}
	host, err := checkLoopbackHost(u.Hostname())
	if err != nil {
		return nil, "", fmt.Errorf("url %q: %w", raw, err)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u, net.JoinHostPort(host, port), nil
}

// parseSources parses a comma-separated list of loopback source addresses.
func parseSources(list string) ([]netip.Addr, error) {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for f := range strings.SplitSeq(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || !loopback.Contains(a.Unmap()) {
			return nil, fmt.Errorf("source %q is not an address in 127.0.0.0/8", f)
		}
		if seen[a] {
			return nil, fmt.Errorf("source %s listed twice", a)
		}
		seen[a] = true
		out = append(out, a.Unmap())
	}
	if len(out) == 0 {
		return nil, errors.New("no source address given")
	}
	return out, nil
}

// checkListen refuses a listen address outside loopback.
func checkListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if _, err := checkLoopbackHost(host); err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	return nil
}
