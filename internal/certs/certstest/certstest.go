// Package certstest makes certificate authorities and certificates for
// tests, written as PEM files under t.TempDir(), so a test of TLS reloading
// works on real files the way a node does. It is imported only by tests.
//
// Everything is generated in the test with crypto/x509: no fixture can
// expire in the repository, and each test gets its own CA, so a certificate
// from one test can never be trusted by another.
package certstest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Key types for Options.KeyType.
const (
	KeyECDSA = "ecdsa" // P-256, the default: fast to generate
	KeyRSA   = "rsa"   // 2048 bits: slower, for tests that need RSA
)

// caLifetime is how long a test CA is valid either side of now. It is wider
// than a leaf's default window, so a test can issue a leaf valid at any time
// it needs without the CA bounding it.
const caLifetime = 7 * 24 * time.Hour

// Options describe a certificate to Issue. The zero value is a server
// certificate with no names, valid from an hour ago for a day.
type Options struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	URIs       []string // e.g. "ssemesh://node/root-a"

	// NotBefore and NotAfter default to now-1h and now+24h.
	NotBefore, NotAfter time.Time

	// Client asks for ExtKeyUsageClientAuth. Server asks for
	// ExtKeyUsageServerAuth, and is implied when Client is false; set both
	// for a node's certificate that serves and dials.
	Client, Server bool

	KeyType string // KeyECDSA (default) or KeyRSA
}

// CA is a certificate authority that issues certificates in a test.
type CA struct {
	cert     *x509.Certificate
	key      crypto.Signer
	certPEM  []byte
	certFile string
	// chain is what a certificate issued by this CA is sent with: the
	// intermediates up to the root, this CA first; nil for a root.
	chain []byte
}

// NewCA makes a self-signed root CA and writes its certificate to a PEM file.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t, KeyECDSA)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"ssemesh test"}},
		NotBefore:             now.Add(-caLifetime),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	return newCA(t, tmpl, tmpl, key, key, nil)
}

// Intermediate makes a CA signed by c. Certificates it issues carry the
// intermediate in their certificate file after the leaf, as servers send
// them, so a verifier must use the intermediates the peer sent.
func (c *CA) Intermediate(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t, KeyECDSA)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"ssemesh test"}},
		NotBefore:             now.Add(-caLifetime / 2),
		NotAfter:              now.Add(caLifetime / 2),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	return newCA(t, tmpl, c.cert, key, c.key, c.chain)
}

func newCA(t testing.TB, tmpl, parent *x509.Certificate, key, parentKey crypto.Signer, parentChain []byte) *CA {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatalf("certstest: create CA %q: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("certstest: parse CA %q: %v", tmpl.Subject.CommonName, err)
	}
	ca := &CA{cert: cert, key: key, certPEM: pemBlock("CERTIFICATE", der)}
	if tmpl != parent { // an intermediate: its chain is itself, then its issuer's chain
		ca.chain = append(append([]byte(nil), ca.certPEM...), parentChain...)
	}
	ca.certFile = filepath.Join(t.TempDir(), "ca.pem")
	WriteFileAtomic(t, ca.certFile, ca.certPEM)
	return ca
}

// CertFile is the path of the CA's certificate in PEM.
func (c *CA) CertFile() string { return c.certFile }

// CertPEM is the CA's certificate in PEM, to write into a CA file under test.
func (c *CA) CertPEM() []byte { return append([]byte(nil), c.certPEM...) }

// Cert is the CA's parsed certificate.
func (c *CA) Cert() *x509.Certificate { return c.cert }

// Pool is a new pool holding only the CA's certificate.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// Issue makes a certificate signed by c and writes it (followed by any
// intermediates) and its PKCS #8 key to two new files in their own
// directory.
func (c *CA) Issue(t testing.TB, opts Options) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := c.IssuePEM(t, opts)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	WriteFileAtomic(t, certFile, certPEM)
	WriteFileAtomic(t, keyFile, keyPEM)
	return certFile, keyFile
}

// IssuePEM is Issue without the files: the certificate chain and key in PEM.
func (c *CA) IssuePEM(t testing.TB, opts Options) (certPEM, keyPEM []byte) {
	t.Helper()
	now := time.Now()
	if opts.NotBefore.IsZero() {
		opts.NotBefore = now.Add(-time.Hour)
	}
	if opts.NotAfter.IsZero() {
		opts.NotAfter = now.Add(24 * time.Hour)
	}
	var uris []*url.URL
	for _, s := range opts.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("certstest: URI SAN %q: %v", s, err)
		}
		uris = append(uris, u)
	}
	var eku []x509.ExtKeyUsage
	if opts.Server || !opts.Client {
		eku = append(eku, x509.ExtKeyUsageServerAuth)
	}
	if opts.Client {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	key := newKey(t, opts.KeyType)
	usage := x509.KeyUsageDigitalSignature
	if _, ok := key.(*rsa.PrivateKey); ok {
		usage |= x509.KeyUsageKeyEncipherment // TLS 1.2 RSA key exchange
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: opts.CommonName},
		DNSNames:              opts.DNSNames,
		IPAddresses:           opts.IPs,
		URIs:                  uris,
		NotBefore:             opts.NotBefore,
		NotAfter:              opts.NotAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		t.Fatalf("certstest: issue certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("certstest: marshal key: %v", err)
	}
	certPEM = append(pemBlock("CERTIFICATE", der), c.chain...)
	return certPEM, pemBlock("PRIVATE KEY", keyDER)
}

// ReadCert parses the first certificate of a PEM file: the leaf of a
// certificate file written by Issue.
func ReadCert(t testing.TB, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("certstest: %s: no certificate", file)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("certstest: %s: %v", file, err)
	}
	return cert
}

// WriteFileAtomic replaces path with data the way cert-manager and certbot
// do: write a temporary file in the same directory, then rename it over
// path, so a reader sees the old file or the new one, never half of one.
func WriteFileAtomic(t testing.TB, path string, data []byte) {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		os.Remove(tmp)
		t.Fatalf("certstest: write %s: %v", tmp, errors.Join(werr, cerr))
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		t.Fatalf("certstest: %v", err)
	}
}

// CopyFile replaces dst with the content of src, atomically.
func CopyFile(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	WriteFileAtomic(t, dst, data)
}

// CopyPair rotates a pair in place: it replaces dstCert and dstKey with
// srcCert and srcKey, certificate first, as a tool renewing them does. Each
// file changes atomically; the two do not change together, which a watcher
// must tolerate (it refuses the mismatched pair in between and loads the new
// one on its next look).
func CopyPair(t testing.TB, srcCert, srcKey, dstCert, dstKey string) {
	t.Helper()
	CopyFile(t, srcCert, dstCert)
	CopyFile(t, srcKey, dstKey)
}

func newKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	var (
		key crypto.Signer
		err error
	)
	switch kind {
	case "", KeyECDSA:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		t.Fatalf("certstest: unknown key type %q (want %q or %q)", kind, KeyECDSA, KeyRSA)
	}
	if err != nil {
		t.Fatalf("certstest: generate %s key: %v", kind, err)
	}
	return key
}

// serial is a random 128-bit serial number, so every certificate of a test
// run is told apart by its serial.
func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatalf("certstest: serial: %v", err)
	}
	return n.Add(n, big.NewInt(1)) // never zero
}

func pemBlock(typ string, der []byte) []byte {
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: typ, Bytes: der}) // writing to a bytes.Buffer cannot fail
	return b.Bytes()
}
