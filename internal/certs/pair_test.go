package certs

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/certs/certstest"
)

func TestLoadPairForms(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	tests := []struct {
		name      string
		files     func(t *testing.T) (certFile, keyFile string)
		wantChain int // certificates sent to a peer
	}{
		{"ecdsa", func(t *testing.T) (string, string) { return serverPair(t, ca) }, 1},
		{"rsa", func(t *testing.T) (string, string) {
			return ca.Issue(t, certstest.Options{DNSNames: []string{"localhost"}, KeyType: certstest.KeyRSA})
		}, 1},
		{"certificate and key in one file", func(t *testing.T) (string, string) {
			certPEM, keyPEM := ca.IssuePEM(t, certstest.Options{DNSNames: []string{"localhost"}})
			both := filepath.Join(t.TempDir(), "both.pem")
			certstest.WriteFileAtomic(t, both, append(certPEM, keyPEM...))
			return both, both
		}, 1},
		{"leaf with intermediate", func(t *testing.T) (string, string) {
			return ca.Intermediate(t, "intermediate").Issue(t, certstest.Options{DNSNames: []string{"localhost"}})
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile := tt.files(t)
			p, err := LoadPair(certFile, keyFile, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := certstest.ReadCert(t, certFile)
			if got := p.Certificate(); got.Leaf.SerialNumber.Cmp(want.SerialNumber) != 0 || len(got.Certificate) != tt.wantChain {
				t.Fatalf("loaded serial %x with %d certificates, want %x with %d", got.Leaf.SerialNumber, len(got.Certificate), want.SerialNumber, tt.wantChain)
			}
			if !p.NotAfter().Equal(want.NotAfter) {
				t.Errorf("NotAfter %v, want %v", p.NotAfter(), want.NotAfter)
			}
		})
	}
}

func TestLoadPairRefusesBadFiles(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	good, goodKey := serverPair(t, ca)
	_, otherKey := serverPair(t, ca)
	now := time.Now()
	expired, expiredKey := ca.Issue(t, certstest.Options{DNSNames: []string{"localhost"}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	future, futureKey := ca.Issue(t, certstest.Options{DNSNames: []string{"localhost"}, NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	certstest.WriteFileAtomic(t, garbage, []byte("not a certificate\n"))
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name      string
		cert, key string
		want      []string // parts of the error: the file and the reason
	}{
		{"missing certificate", missing, goodKey, []string{"read certificate", missing, "no such file"}},
		{"missing key", good, missing, []string{"read key", missing, "no such file"}},
		{"garbage certificate", garbage, goodKey, []string{garbage, "PEM data in certificate"}},
		{"garbage key", good, garbage, []string{garbage, "PEM data in key"}},
		{"key of another certificate", good, otherKey, []string{good, otherKey, "does not match"}},
		{"expired certificate", expired, expiredKey, []string{expired, "expired at"}},
		{"certificate not yet valid", future, futureKey, []string{future, "not valid before"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := LoadPair(tt.cert, tt.key, nil)
			if p != nil {
				t.Errorf("got a pair with the error")
			}
			wantErr(t, err, tt.want...)
		})
	}
}

func TestPairReloadUnchangedAndRotated(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	certFile, keyFile := serverPair(t, ca)
	oldSerial := certstest.ReadCert(t, certFile).SerialNumber
	p, err := LoadPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, ServerConfig(p, nil, tls.NoClientCert))
	before := mustDial(t, addr, "", trustingClient(ca))

	// The same bytes written again (new inode, new mtime) are unchanged:
	// change is judged by content.
	for i, rewrite := range []bool{false, true} {
		if rewrite {
			certstest.CopyPair(t, certFile, keyFile, certFile, keyFile)
		}
		changed, err := p.Reload()
		if changed || err != nil {
			t.Fatalf("reload %d of unchanged files: changed=%v err=%v", i, changed, err)
		}
	}

	newCert, newKey := serverPair(t, ca)
	newSerial := certstest.ReadCert(t, newCert).SerialNumber
	certstest.CopyPair(t, newCert, newKey, certFile, keyFile)
	changed, err := p.Reload()
	if !changed || err != nil {
		t.Fatalf("reload of a rotated pair: changed=%v err=%v", changed, err)
	}
	if got := p.Certificate().Leaf.SerialNumber; got.Cmp(newSerial) != 0 {
		t.Fatalf("Certificate serial %x, want the new %x", got, newSerial)
	}
	if got := mustDial(t, addr, "", trustingClient(ca)).serial(); got.Cmp(newSerial) != 0 {
		t.Fatalf("new handshake got serial %x, want the new %x", got, newSerial)
	}
	if err := before.ping("still here"); err != nil {
		t.Fatalf("connection from before the rotation: %v", err)
	}
	if got := before.serial(); got.Cmp(oldSerial) != 0 {
		t.Fatalf("old connection's serial %x, want %x", got, oldSerial)
	}
}

// TestPairReloadRefusesBadPair breaks the live files in each way a renewal
// can go wrong, and checks the old certificate is kept and served, the
// error names the file, and a good pair written afterwards is taken.
func TestPairReloadRefusesBadPair(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	_, otherKey := serverPair(t, ca)
	now := time.Now()
	expired, expiredKey := ca.Issue(t, certstest.Options{DNSNames: []string{"localhost"}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Minute)})
	future, futureKey := ca.Issue(t, certstest.Options{DNSNames: []string{"localhost"}, NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})

	tests := []struct {
		name  string
		spoil func(t *testing.T, certFile, keyFile string)
		want  func(certFile, keyFile string) []string
	}{
		{"key of another certificate",
			func(t *testing.T, c, k string) { certstest.CopyFile(t, otherKey, k) },
			func(c, k string) []string { return []string{c, k, "does not match"} }},
		{"garbage certificate",
			func(t *testing.T, c, k string) { certstest.WriteFileAtomic(t, c, []byte("garbage")) },
			func(c, k string) []string { return []string{c, "PEM data in certificate"} }},
		{"garbage key",
			func(t *testing.T, c, k string) { certstest.WriteFileAtomic(t, k, []byte("garbage")) },
			func(c, k string) []string { return []string{k, "PEM data in key"} }},
		{"truncated certificate",
			func(t *testing.T, c, k string) {
				data, err := os.ReadFile(c)
				if err != nil {
					t.Fatal(err)
				}
				certstest.WriteFileAtomic(t, c, data[:len(data)/2])
			},
			func(c, k string) []string { return []string{c, "PEM data in certificate"} }},
		{"expired certificate",
			func(t *testing.T, c, k string) { certstest.CopyPair(t, expired, expiredKey, c, k) },
			func(c, k string) []string { return []string{c, "expired at"} }},
		{"certificate not yet valid",
			func(t *testing.T, c, k string) { certstest.CopyPair(t, future, futureKey, c, k) },
			func(c, k string) []string { return []string{c, "not valid before"} }},
		{"missing certificate file",
			func(t *testing.T, c, k string) { removeFile(t, c) },
			func(c, k string) []string { return []string{"read certificate", c, "no such file"} }},
		{"missing key file",
			func(t *testing.T, c, k string) { removeFile(t, k) },
			func(c, k string) []string { return []string{"read key", k, "no such file"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile := serverPair(t, ca)
			oldSerial := certstest.ReadCert(t, certFile).SerialNumber
			p, err := LoadPair(certFile, keyFile, nil)
			if err != nil {
				t.Fatal(err)
			}
			addr := startServer(t, ServerConfig(p, nil, tls.NoClientCert))

			tt.spoil(t, certFile, keyFile)
			// Twice: the second look at the same bad content answers
			// from the remembered refusal and must say the same.
			for i := 0; i < 2; i++ {
				changed, err := p.Reload()
				if changed {
					t.Fatalf("reload %d reported a change", i)
				}
				wantErr(t, err, tt.want(certFile, keyFile)...)
			}
			if got := p.Certificate().Leaf.SerialNumber; got.Cmp(oldSerial) != 0 {
				t.Fatalf("Certificate serial %x after a refused reload, want the old %x", got, oldSerial)
			}
			if got := mustDial(t, addr, "", trustingClient(ca)).serial(); got.Cmp(oldSerial) != 0 {
				t.Fatalf("served serial %x after a refused reload, want the old %x", got, oldSerial)
			}

			newCert, newKey := serverPair(t, ca)
			certstest.CopyPair(t, newCert, newKey, certFile, keyFile)
			if changed, err := p.Reload(); !changed || err != nil {
				t.Fatalf("reload of a good pair after a refusal: changed=%v err=%v", changed, err)
			}
			want := certstest.ReadCert(t, newCert).SerialNumber
			if got := mustDial(t, addr, "", trustingClient(ca)).serial(); got.Cmp(want) != 0 {
				t.Fatalf("served serial %x after the fix, want %x", got, want)
			}
		})
	}
}

// TestPairNotYetValidIsTakenWhenItsTimeComes: a renewal issued slightly in
// the future (clock skew between the CA and the node) is refused until its
// NotBefore, then taken without the file changing again.
func TestPairNotYetValidIsTakenWhenItsTimeComes(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	certFile, keyFile := serverPair(t, ca)
	p, err := LoadPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	clock := start
	p.r.now = func() time.Time { return clock }

	future, futureKey := ca.Issue(t, certstest.Options{DNSNames: []string{"localhost"}, NotBefore: start.Add(time.Minute), NotAfter: start.Add(time.Hour)})
	certstest.CopyPair(t, future, futureKey, certFile, keyFile)
	if changed, err := p.Reload(); changed || err == nil {
		t.Fatalf("reload before NotBefore: changed=%v err=%v, want a refusal", changed, err)
	}
	clock = start.Add(2 * time.Minute)
	if changed, err := p.Reload(); !changed || err != nil {
		t.Fatalf("reload after NotBefore: changed=%v err=%v, want the new pair", changed, err)
	}
	if got, want := p.Certificate().Leaf.SerialNumber, certstest.ReadCert(t, future).SerialNumber; got.Cmp(want) != 0 {
		t.Fatalf("serial %x, want %x", got, want)
	}
}

func removeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}
