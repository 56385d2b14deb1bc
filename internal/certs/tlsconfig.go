package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// MinVersion is the lowest TLS version the builders accept. Cipher suites
// and curves are left to Go's defaults, which leave out RSA key exchange,
// 3DES and RC4 and follow Go's releases; a list here would only age.
const MinVersion = tls.VersionTLS12

// PeerScheme is the URI SAN scheme that names a mesh node in its
// certificate: ssemesh://node/<node id>.
const PeerScheme = "ssemesh"

// ServerConfig is a listener's TLS configuration. The certificate is pair's
// current one at each handshake.
//
// With clientCAs, client certificates (as auth asks for them) are verified
// against the CA file's pool current at each handshake: GetConfigForClient
// returns a clone of the returned config with that pool, so a rotated CA
// applies to new handshakes without a restart. Go re-checks a resumed
// session's chains against that pool too, so a ticket from before a
// rotation does not let a client of the removed CA back in. With
// clientCAs nil and auth verifying, crypto/tls verifies against the system
// roots.
//
// The caller sets NextProtos (h2, http/1.1) and anything else on the
// returned config before serving, and must not change it after: with
// clientCAs, each handshake runs on a clone of this very config taken at
// the handshake. Changes made to a copy of it never reach the handshake:
// http.Server.ServeTLS serves a clone whose NextProtos it adjusts to
// Server.Protocols, and only the h2 setup, which edits Server.TLSConfig in
// place, shows through. So set NextProtos explicitly. pair must not be nil.
func ServerConfig(pair *Pair, clientCAs *CAFile, auth tls.ClientAuthType) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     MinVersion,
		GetCertificate: pair.GetCertificate,
		ClientAuth:     auth,
	}
	if clientCAs == nil {
		return cfg
	}
	cfg.ClientCAs = clientCAs.Pool() // what a Clone made before the first handshake sees
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := cfg.Clone()
		c.GetConfigForClient = nil // crypto/tls ignores it on the returned config; clear it to say so
		c.ClientCAs = clientCAs.Pool()
		return c, nil
	}
	return cfg
}

// ClientConfig is the TLS configuration for dialling a server (an upstream,
// a parent node).
//
//   - insecureSkipVerify: the server is not verified at all. It exists only
//     as an explicit operator switch that the caller logs a warning about.
//   - roots nil: the server is verified by crypto/tls against the system
//     roots and ServerName.
//   - roots set: the server is verified against roots' pool current at each
//     handshake, so a rotated CA applies to the next connection. crypto/tls
//     can only verify against a pool fixed in the config, so its own check
//     is switched off (InsecureSkipVerify) and VerifyConnection does the
//     same check instead: the chain the server sent, to the current roots,
//     for serverName or, when it is empty, the ServerName the connection
//     sent (tls.Dial and http.Transport fill it from the address). An IP
//     address is not sent as ServerName, so dialling a server by IP with
//     roots needs serverName set to that IP; without a name the handshake
//     fails rather than skip the name check. VerifyConnection runs on
//     resumed sessions too. The connection state then has no VerifiedChains
//     (the caller already knows whom it dialled, so PeerName is for servers).
//
// pair, when set, is offered as the client certificate at each handshake.
func ClientConfig(roots *CAFile, pair *Pair, serverName string, insecureSkipVerify bool) *tls.Config {
	cfg := &tls.Config{MinVersion: MinVersion, ServerName: serverName}
	if pair != nil {
		cfg.GetClientCertificate = pair.GetClientCertificate
	}
	switch {
	case insecureSkipVerify:
		cfg.InsecureSkipVerify = true
	case roots != nil:
		cfg.InsecureSkipVerify = true // verified below, against the current pool
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyServer(cs, roots.Pool(), serverName)
		}
	}
	return cfg
}

// verifyServer is crypto/tls's server check with a pool chosen at the
// handshake.
func verifyServer(cs tls.ConnectionState, roots *x509.CertPool, serverName string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("certs: server sent no certificate")
	}
	name := serverName
	if name == "" {
		name = cs.ServerName
	}
	if name == "" {
		return errors.New("certs: no server name to verify the server's certificate for (set the server name when dialling an IP address)")
	}
	opts := x509.VerifyOptions{
		DNSName:       name,
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("certs: verify server certificate for %q: %w", name, err)
	}
	return nil
}

// PeerName is the name of the peer of a connection whose certificate was
// verified: the node id of its first URI SAN of the form
// ssemesh://node/<id>, else its first DNS SAN, else its subject's
// CommonName. ok is false when the connection has no verified chain (no
// certificate, or one not verified, as on a client using ClientConfig with
// roots) or the certificate names nothing.
func PeerName(cs tls.ConnectionState) (name string, ok bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false
	}
	leaf := cs.VerifiedChains[0][0]
	for _, u := range leaf.URIs {
		if id, ok := nodeID(u); ok {
			return id, true
		}
	}
	if len(leaf.DNSNames) > 0 && leaf.DNSNames[0] != "" {
		return leaf.DNSNames[0], true
	}
	if cn := leaf.Subject.CommonName; cn != "" {
		return cn, true
	}
	return "", false
}

// nodeID reads ssemesh://node/<id>. Any other ssemesh URI is skipped rather
// than guessed at: a name that decides which node a peer is must have one
// spelling.
func nodeID(u *url.URL) (string, bool) {
	if u.Scheme != PeerScheme || u.Host != "node" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	id, found := strings.CutPrefix(u.Path, "/")
	if !found || id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}
