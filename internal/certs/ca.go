package certs

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"time"

	"github.com/sirupsen/logrus"
)

// CAFile is a bundle of CA certificates from one PEM file: the roots that
// check a listener's clients, a node's peers, or an upstream's server. It is
// safe for concurrent use: readers get the current pool without locking.
type CAFile struct {
	file string
	r    reloader[caBundle]
}

// caBundle is one loaded version of a CA file.
type caBundle struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
}

// LoadCA reads a CA file. The first load must succeed: a file that cannot be
// read, a certificate in it that does not parse, or a file with no
// certificate is an error naming the file.
func LoadCA(file string, log logrus.FieldLogger) (*CAFile, error) {
	c := &CAFile{file: file}
	c.r = reloader[caBundle]{
		files: []namedFile{{"CA file", file}},
		parse: c.parse,
		check: c.check,
		now:   time.Now,
	}
	if err := c.r.load(); err != nil {
		return nil, err
	}
	orDiscard(log).WithFields(c.logFields()).Info("certs: loaded CA file")
	return c, nil
}

// parse is stricter than x509.CertPool.AppendCertsFromPEM, which skips a
// certificate it cannot parse: a bundle missing a CA after a bad edit would
// refuse that CA's peers, so the whole file is refused instead. Blocks of
// other types (a key left in by a tool) are ignored, as crypto/tls does.
func (c *CAFile) parse(data [][]byte) (*caBundle, error) {
	b := &caBundle{pool: x509.NewCertPool()}
	rest := data[0]
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: CA file %s: certificate %d: %w", c.file, len(b.certs)+1, err)
		}
		b.pool.AddCert(cert)
		b.certs = append(b.certs, cert)
	}
	if len(b.certs) == 0 {
		return nil, fmt.Errorf("certs: CA file %s: no PEM certificate in it", c.file)
	}
	return b, nil
}

// check refuses a bundle none of whose certificates is valid now: it would
// refuse every peer. A bundle where some are expired is kept whole, because
// during a CA rotation it holds the old CA and the new one, and chain
// verification ignores an expired CA anyway.
func (c *CAFile) check(b *caBundle, now time.Time) error {
	var first error
	for _, cert := range b.certs {
		err := checkPeriod("CA file", c.file, cert.NotBefore, cert.NotAfter, now)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	if len(b.certs) == 1 {
		return first
	}
	return fmt.Errorf("certs: CA file %s: none of its %d certificates is valid now (first: %w)", c.file, len(b.certs), first)
}

// Reload re-reads the file. It returns changed=false without parsing when
// its content is what is in use. A new version that does not parse, holds
// no certificate, or holds none valid now is refused with an error naming
// the file, and the pool in use is kept.
func (c *CAFile) Reload() (changed bool, err error) { return c.r.reload() }

// Pool is the pool in use. Callers must not modify it (AddCert): it is
// shared by every handshake.
func (c *CAFile) Pool() *x509.CertPool { return c.r.current().pool }

// String names the file, for logs.
func (c *CAFile) String() string { return c.file }

// maxLoggedSubjects keeps a system-sized bundle from filling a log line;
// a node's own CA files hold one or two.
const maxLoggedSubjects = 8

// logFields describe the bundle in use, for the Watcher's log lines.
func (c *CAFile) logFields() logrus.Fields {
	b := c.r.current()
	f := logrus.Fields{"ca_file": c.file, "certificates": len(b.certs)}
	if len(b.certs) <= maxLoggedSubjects {
		subjects := make([]string, len(b.certs))
		for i, cert := range b.certs {
			subjects[i] = cert.Subject.CommonName
		}
		f["subjects"] = subjects
	}
	return f
}

// orDiscard lets a caller (a test, a tool) pass no logger.
func orDiscard(log logrus.FieldLogger) logrus.FieldLogger {
	if log != nil {
		return log
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
