package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// Attack (phase 2): the gateway started off loopback, as deployed, on both
// its listeners (HTTP and the gRPC consent/access-log APIs). Each refuses
// TLS 1.2 even with a member's SVID, TLS 1.3 without a client certificate,
// and TLS 1.3 with a certificate that claims the auditor's SPIFFE ID but is
// signed by another CA; the auditor's own SVID over TLS 1.3 gets through.
func TestGatewayListenersRefuseTLS12AndStrangers(t *testing.T) {
	f := startAuditFed(t, t.TempDir())
	f.stopGateway(t)
	ctx := context.Background()
	gw, err := process.StartGateway(ctx, f.g, process.GatewayOptions{HTTPAddr: "0.0.0.0:0", GRPCAddr: "0.0.0.0:0", Instance: "gw-1"})
	if err != nil {
		t.Fatalf("gateway: %v\n%s", err, f.logs.String())
	}
	f.gw = gw
	fed, _ := f.g.Federation()
	src, err := svid.Open(ctx, f.g.CertsDir, fed.ID("auditor"), f.g.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	stranger := strangerCert(t, fed.ID("auditor").URL())

	for name, addr := range map[string]string{"HTTP": gw.Addr(), "gRPC": gw.GRPCAddr()} {
		_, port, _ := net.SplitHostPort(addr)
		addr := net.JoinHostPort("127.0.0.1", port)
		member := func() *tls.Config {
			c := svid.ClientTLS(src, tlsconfig.AuthorizeID(fed.ID("gateway")))
			c.NextProtos = []string{"h2"}
			return c
		}
		// dial reports whether a TLS connection with c is served: the
		// handshake completes and the server does not close it at once
		// (TLS 1.3 checks the client certificate after the client's
		// handshake finishes, so a refusal shows on the first read).
		dial := func(c *tls.Config) error {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, c)
			if err != nil {
				return err
			}
			defer conn.Close()
			_, _ = io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			return err
		}
		tls12 := member()
		tls12.MaxVersion = tls.VersionTLS12
		noCert := member()
		noCert.GetClientCertificate = nil
		noCert.Certificates = nil
		forged := member()
		forged.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return stranger, nil }
		for attack, c := range map[string]*tls.Config{"TLS 1.2 with a member's SVID": tls12, "no client certificate": noCert, "a member's ID from another CA": forged} {
			if err := dial(c); err == nil {
				t.Errorf("%s listener served %s", name, attack)
			}
		}
		if err := dial(member()); err != nil {
			t.Errorf("%s listener refused a member's SVID over TLS 1.3: %v", name, err)
		}
	}
}

// strangerCert is a self-signed client certificate whose URI SAN is id.
func strangerCert(t *testing.T, id *url.URL) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stranger"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{id}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
