package natsserver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/certs/svid"
)

// routeTLS is the TLS configuration of a hub node's routes, both the ones
// it accepts and the ones it solicits: mutual TLS with the SVID of src,
// the peer's chain verified against the trust bundle of the moment, and the
// peer's SPIFFE ID required to be the server identity (spiffe://<td>/nats).
// A member's SVID, valid in the trust domain, is refused at the handshake:
// a route sees every message of the cluster.
//
// A soliciting node also checks the peer's certificate against the route
// URL's host (nats-server sets ServerName): each node's SVID carries its
// DNS name or address (the dev CA's carries localhost and the loopback
// addresses; SPIRE's entries name them with dns_names).
func routeTLS(src svid.Source, td spiffeid.TrustDomain) (*tls.Config, error) {
	server, err := svid.NATSServerTLS(src, td)
	if err != nil {
		return nil, err
	}
	want := spiffeid.RequireFromPath(td, "/nats")
	pool := func() (*x509.CertPool, error) {
		b, err := src.GetX509BundleForTrustDomain(td)
		if err != nil {
			return nil, err
		}
		p := x509.NewCertPool()
		for _, c := range b.X509Authorities() {
			p.AddCert(c)
		}
		return p, nil
	}
	roots, err := pool()
	if err != nil {
		return nil, err
	}
	verifyID := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("natsserver: route peer sent no certificate")
		}
		id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
		if err != nil {
			return fmt.Errorf("natsserver: route peer: %w", err)
		}
		if id != want {
			return fmt.Errorf("natsserver: route peer is %s, only %s may route", id, want)
		}
		return nil
	}
	c := server.Clone()
	c.RootCAs = roots
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		s, err := src.GetX509SVID()
		if err != nil {
			return nil, err
		}
		return tlsCertificate(s), nil
	}
	c.VerifyConnection = verifyID
	base := server.GetConfigForClient
	c.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		sc, err := base(hi)
		if err != nil {
			return nil, err
		}
		sc.VerifyConnection = verifyID
		return sc, nil
	}
	return c, nil
}

func tlsCertificate(s *x509svid.SVID) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
	for _, x := range s.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}
