package certs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/certs/certstest"
)

func TestLoadCA(t *testing.T) {
	a, b := certstest.NewCA(t, "ca-a"), certstest.NewCA(t, "ca-b")
	_, keyFile := a.Issue(t, certstest.Options{})
	keyPEM := readFile(t, keyFile)
	corrupt := []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")

	tests := []struct {
		name    string
		content []byte
		trusts  []*certstest.CA // for a good file
		want    []string        // for a bad one: parts of the error after the file name
	}{
		{"one CA", a.CertPEM(), []*certstest.CA{a}, nil},
		{"bundle of two", append(a.CertPEM(), b.CertPEM()...), []*certstest.CA{a, b}, nil},
		{"a key next to the certificate is ignored", append(keyPEM, a.CertPEM()...), []*certstest.CA{a}, nil},
		{"empty", nil, nil, []string{"no PEM certificate"}},
		{"garbage", []byte("not PEM at all"), nil, []string{"no PEM certificate"}},
		{"only a key", keyPEM, nil, []string{"no PEM certificate"}},
		{"a certificate that does not parse", append(a.CertPEM(), corrupt...), nil, []string{"certificate 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "ca.pem")
			certstest.WriteFileAtomic(t, file, tt.content)
			c, err := LoadCA(file, nil)
			if tt.want != nil {
				if c != nil {
					t.Errorf("got a CA file with the error")
				}
				wantErr(t, err, append([]string{file}, tt.want...)...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := x509.NewCertPool()
			for _, ca := range tt.trusts {
				want.AddCert(ca.Cert())
			}
			if !c.Pool().Equal(want) {
				t.Fatalf("pool does not hold exactly %d CAs", len(tt.trusts))
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "missing.pem")
		_, err := LoadCA(missing, nil)
		wantErr(t, err, "read CA file", missing, "no such file")
	})
}

func TestCAFileReload(t *testing.T) {
	a, b := certstest.NewCA(t, "ca-a"), certstest.NewCA(t, "ca-b")
	inter := a.Intermediate(t, "intermediate") // valid for half as long as a
	now := time.Now()

	tests := []struct {
		name    string
		content []byte
		at      time.Time     // the clock at the reload
		want    *certstest.CA // the CA in the pool afterwards (nil: a bundle, checked by count)
		bundle  []*x509.Certificate
		errs    []string // a refusal: parts of the error after the file name
	}{
		{"unchanged", a.CertPEM(), now, a, nil, nil},
		{"rotated to another CA", b.CertPEM(), now, b, nil, nil},
		{"garbage", []byte("garbage"), now, a, nil, []string{"no PEM certificate"}},
		{"no certificate", nil, now, a, nil, []string{"no PEM certificate"}},
		{"only CA expired", b.CertPEM(), now.Add(30 * 24 * time.Hour), a, nil, []string{"expired at"}},
		{"only CA not yet valid", b.CertPEM(), now.Add(-30 * 24 * time.Hour), a, nil, []string{"not valid before"}},
		{"bundle with one CA expired is kept whole", append(inter.CertPEM(), b.CertPEM()...), now.Add(5 * 24 * time.Hour), nil,
			[]*x509.Certificate{inter.Cert(), b.Cert()}, nil},
		{"bundle with every CA expired", append(inter.CertPEM(), b.CertPEM()...), now.Add(30 * 24 * time.Hour), a, nil,
			[]string{"none of its 2 certificates is valid now", "expired at"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "ca.pem")
			certstest.WriteFileAtomic(t, file, a.CertPEM())
			c, err := LoadCA(file, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.r.now = func() time.Time { return tt.at }
			certstest.WriteFileAtomic(t, file, tt.content)

			changed, err := c.Reload()
			switch {
			case tt.errs != nil:
				if changed {
					t.Errorf("a refused reload reported a change")
				}
				wantErr(t, err, append([]string{file}, tt.errs...)...)
			case err != nil:
				t.Fatal(err)
			case changed != (tt.want != a):
				t.Errorf("changed=%v, want %v", changed, tt.want != a)
			}
			want := x509.NewCertPool()
			if tt.want != nil {
				want.AddCert(tt.want.Cert())
			}
			for _, cert := range tt.bundle {
				want.AddCert(cert)
			}
			if !c.Pool().Equal(want) {
				t.Fatalf("pool after the reload is not the expected one")
			}
		})
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
