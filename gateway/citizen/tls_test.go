package citizen_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/citizen"
)

// localTLS is a self-signed certificate for 127.0.0.1 and a pool that
// trusts it: a site served over real TLS in the test.
func localTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS13}, pool
}

// Attack (phase 2): the identity provider (or someone in its place) offers
// only TLS 1.2. The relying party's client, the one New uses by default,
// does not talk to it; over TLS 1.3 the same provider is discovered.
func TestTheProviderIsReachedOverTLS13Only(t *testing.T) {
	for _, maxVersion := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conf, roots := localTLS(t)
		conf.MinVersion, conf.MaxVersion = tls.VersionTLS12, maxVersion
		var issuer string
		idp := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":"%s/auth","token_endpoint":"%s/token","jwks_uri":"%s/keys","id_token_signing_alg_values_supported":["EdDSA"]}`, issuer, issuer, issuer, issuer)
		}))
		idp.TLS = conf
		idp.StartTLS()
		issuer = idp.URL
		fed, err := federation.Load("../../deploy/federation.yaml")
		if err != nil {
			t.Fatal(err)
		}
		keyer, err := ckey.New(make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		a, err := citizen.New(citizen.Config{Federation: fed, Keyer: keyer, OIDC: &citizen.OIDC{
			Issuer: issuer, ClientID: "jisr", ClientSecret: "s", RedirectURL: "http://127.0.0.1:1" + citizen.PathCallback,
			HTTPClient: citizen.NewHTTPClient(roots),
		}, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		a.Routes()["GET "+citizen.PathLogin].ServeHTTP(rec, httptest.NewRequest(http.MethodGet, citizen.PathLogin, nil))
		idp.Close()
		want := http.StatusFound
		if maxVersion == tls.VersionTLS12 {
			want = http.StatusServiceUnavailable
		}
		if rec.Code != want {
			t.Errorf("a provider offering TLS up to %x: sign-in start %d, want %d", maxVersion, rec.Code, want)
		}
	}
}
