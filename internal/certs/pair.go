package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
)

// Pair is a certificate and its private key, read from two PEM files (they
// may be one file holding both). The certificate file may hold
// intermediates after the leaf; they are sent to the peer.
//
// A Pair serves a listener (GetCertificate) or a client that must prove who
// it is to an upstream (GetClientCertificate). It is safe for concurrent
// use: readers get the current version without locking.
type Pair struct {
	certFile, keyFile string
	r                 reloader[tls.Certificate]
}

// LoadPair reads a certificate and key. Unlike a reload, the first load has
// nothing to fall back on, so a bad pair is an error naming the file and
// the reason.
func LoadPair(certFile, keyFile string, log logrus.FieldLogger) (*Pair, error) {
	p := &Pair{certFile: certFile, keyFile: keyFile}
	p.r = reloader[tls.Certificate]{
		files: []namedFile{{"certificate", certFile}, {"key", keyFile}},
		parse: p.parse,
		check: p.check,
		now:   time.Now,
	}
	if err := p.r.load(); err != nil {
		return nil, err
	}
	orDiscard(log).WithFields(p.logFields()).Info("certs: loaded certificate")
	return p, nil
}

func (p *Pair) parse(data [][]byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(data[0], data[1])
	if err != nil {
		return nil, fmt.Errorf("certs: certificate %s with key %s: %w", p.certFile, p.keyFile, err)
	}
	if cert.Leaf == nil { // X509KeyPair fills it unless GODEBUG x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: certificate %s: %w", p.certFile, err)
		}
	}
	return &cert, nil
}

// check refuses a leaf outside its validity period: serving an expired
// certificate fails every handshake, so the old one (which may still be
// valid) is the better choice.
func (p *Pair) check(cert *tls.Certificate, now time.Time) error {
	return checkPeriod("certificate", p.certFile, cert.Leaf.NotBefore, cert.Leaf.NotAfter, now)
}

// Reload re-reads the files. It returns changed=false without parsing when
// their content is what is in use. A new pair that does not parse, whose
// key does not match, or whose leaf is expired or not yet valid is refused
// with an error naming the file, and the pair in use is kept.
func (p *Pair) Reload() (changed bool, err error) { return p.r.reload() }

// Certificate is the pair in use. Callers must not modify it.
func (p *Pair) Certificate() *tls.Certificate { return p.r.current() }

// GetCertificate is for tls.Config.GetCertificate: each handshake gets the
// pair in use at that moment.
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.Certificate(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate. It sends the
// pair whatever CAs the server names: the server is the one to judge it,
// and its refusal is clearer than a handshake without a certificate.
func (p *Pair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return p.Certificate(), nil
}

// NotAfter is when the certificate in use expires, for metrics and health:
// a pair whose files are never renewed is kept past it (there is nothing
// better to serve), and this is how an operator learns.
func (p *Pair) NotAfter() time.Time { return p.Certificate().Leaf.NotAfter }

// String names the certificate file, for logs.
func (p *Pair) String() string { return p.certFile }

// logFields describe the pair in use, for the Watcher's log lines.
func (p *Pair) logFields() logrus.Fields {
	leaf := p.Certificate().Leaf
	return logrus.Fields{
		"cert_file": p.certFile,
		"key_file":  p.keyFile,
		"serial":    fmt.Sprintf("%x", leaf.SerialNumber),
		"subject":   leaf.Subject.String(),
		"not_after": leaf.NotAfter.UTC().Format(time.RFC3339),
	}
}
