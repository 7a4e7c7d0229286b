// Package devca is the development certificate authority of a federation:
// it issues X.509-SVIDs for every identity and writes them where the file
// SVID source reads them (the layout is svid's: svid.Paths, svid.BundlePath). Production uses SPIRE instead.
//
// Invariant: every certificate it issues is an X.509-SVID of its own trust
// domain — exactly one URI SAN, spiffe://<td>/…, ECDSA P-256, signed by the
// CA whose certificate is the trust bundle.
package devca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/certs/svid"
)

// Sentinel errors.
var (
	ErrWrongTrustDomain = errors.New("devca: identity is not in the CA's trust domain")
	ErrNoCA             = errors.New("devca: no CA in directory")
)

// CA is a dev certificate authority.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	td   spiffeid.TrustDomain
	now  func() time.Time
}

type options struct {
	validity time.Duration
	now      func() time.Time
}

// Option configures New.
type Option func(*options)

// WithValidity sets the CA certificate's lifetime (default ten years).
func WithValidity(d time.Duration) Option { return func(o *options) { o.validity = d } }

// WithNow sets the clock (tests).
func WithNow(now func() time.Time) Option { return func(o *options) { o.now = now } }

// New creates a CA in memory.
func New(td spiffeid.TrustDomain, opts ...Option) (*CA, error) {
	o := options{validity: 10 * 365 * 24 * time.Hour, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := o.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"jisr dev CA"}, CommonName: td.Name()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(o.validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, td: td, now: o.now}, nil
}

// Load reads a CA saved by Save.
func Load(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoCA
	}
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("devca: %s: ca.pem or ca.key is not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devca: ca.pem: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devca: ca.key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok || len(cert.URIs) != 1 {
		return nil, fmt.Errorf("devca: %s: not a jisr dev CA", dir)
	}
	td, err := spiffeid.TrustDomainFromURI(cert.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("devca: ca.pem: %w", err)
	}
	return &CA{cert: cert, key: signer, td: td, now: time.Now}, nil
}

// Save writes ca.pem, ca.key (0600) and bundle.pem to dir.
func (ca *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	if err := writeAtomic(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, "ca.pem"), certPEM, 0o644); err != nil {
		return err
	}
	return writeAtomic(svid.BundlePath(dir), certPEM, 0o644)
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Certificate is the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Bundle is the trust bundle: the CA certificate.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

type issueOptions struct {
	ttl       time.Duration
	notBefore time.Time
	dns       []string
	ips       []net.IP
}

// IssueOption configures Issue.
type IssueOption func(*issueOptions)

// WithTTL sets the SVID's lifetime (default seven days).
func WithTTL(d time.Duration) IssueOption { return func(o *issueOptions) { o.ttl = d } }

// WithNotBefore sets the start of validity (tests make expired SVIDs with it).
func WithNotBefore(t time.Time) IssueOption { return func(o *issueOptions) { o.notBefore = t } }

// WithDNSNames adds DNS SANs (for servers reached by host name).
func WithDNSNames(names ...string) IssueOption {
	return func(o *issueOptions) { o.dns = append(o.dns, names...) }
}

// WithIPAddresses adds IP SANs.
func WithIPAddresses(ips ...net.IP) IssueOption {
	return func(o *issueOptions) { o.ips = append(o.ips, ips...) }
}

// Issue creates an X.509-SVID for id.
func (ca *CA) Issue(id spiffeid.ID, opts ...IssueOption) (*x509svid.SVID, error) {
	if !id.MemberOf(ca.td) {
		return nil, fmt.Errorf("%w: %s is not in %s", ErrWrongTrustDomain, id, ca.td)
	}
	o := issueOptions{ttl: 7 * 24 * time.Hour, notBefore: ca.now().Add(-time.Minute)}
	for _, opt := range opts {
		opt(&o)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"jisr"}},
		URIs:         []*url.URL{id.URL()},
		DNSNames:     o.dns,
		IPAddresses:  o.ips,
		NotBefore:    o.notBefore,
		NotAfter:     o.notBefore.Add(o.ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}, nil
}

// Sign issues a certificate from an arbitrary template (tests use it for
// certificates that are not SVIDs, such as one without a URI SAN).
func (ca *CA) Sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	tmpl.SerialNumber = serial()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// WriteSVID writes an SVID's certificate chain and key (0600) atomically,
// where svid.Paths says the file source reads them.
func WriteSVID(dir string, s *x509svid.SVID) error {
	certPEM, keyPEM, err := s.Marshal()
	if err != nil {
		return err
	}
	certFile, keyFile := svid.Paths(dir, s.ID)
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return err
	}
	// Key first: a reader that sees the new certificate finds its key.
	if err := writeAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, certPEM, 0o644)
}

// InitResult says what Init did, for the CLI to print.
type InitResult struct {
	Dir       string
	CACreated bool
	Created   []spiffeid.ID
	Reissued  []spiffeid.ID
	Kept      []spiffeid.ID
}

func (r *InitResult) String() string {
	var b strings.Builder
	if r.CACreated {
		fmt.Fprintf(&b, "created the dev CA in %s\n", r.Dir)
	} else {
		fmt.Fprintf(&b, "dev CA in %s\n", r.Dir)
	}
	for _, x := range []struct {
		what string
		ids  []spiffeid.ID
	}{{"issued", r.Created}, {"reissued (expired, expiring or from another CA)", r.Reissued}, {"kept", r.Kept}} {
		for _, id := range x.ids {
			fmt.Fprintf(&b, "  %-8s %s\n", strings.Fields(x.what)[0], id)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// Init creates the CA in dir if there is none, and an SVID for each id that
// has none, or whose SVID is unreadable, from another CA, expired, or within
// a third of its lifetime of expiry. The NATS server's SVID (path /nats) also
// carries DNS localhost and IP 127.0.0.1 and ::1.
func Init(dir string, td spiffeid.TrustDomain, ids []spiffeid.ID) (*InitResult, error) {
	res := &InitResult{Dir: dir}
	ca, err := Load(dir)
	switch {
	case errors.Is(err, ErrNoCA):
		if ca, err = New(td); err != nil {
			return nil, err
		}
		if err := ca.Save(dir); err != nil {
			return nil, err
		}
		res.CACreated = true
	case err != nil:
		return nil, err
	case ca.td != td:
		return nil, fmt.Errorf("devca: the CA in %s is for trust domain %q, the federation's is %q: use another --certs directory", dir, ca.td.Name(), td.Name())
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	for _, id := range ids {
		certFile, keyFile := svid.Paths(dir, id)
		existing, err := x509svid.Load(certFile, keyFile)
		switch {
		case errors.Is(err, fs.ErrNotExist) || err != nil && !fileExists(certFile):
			res.Created = append(res.Created, id)
		case err != nil || existing.ID != id || !fresh(existing.Certificates[0], pool, ca.now()):
			res.Reissued = append(res.Reissued, id)
		default:
			res.Kept = append(res.Kept, id)
			continue
		}
		var opts []IssueOption
		if id.Path() == "/nats" {
			opts = append(opts, WithDNSNames("localhost"), WithIPAddresses(net.IPv4(127, 0, 0, 1), net.IPv6loopback))
		}
		s, err := ca.Issue(id, opts...)
		if err != nil {
			return nil, err
		}
		if err := WriteSVID(dir, s); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// fresh reports whether cert chains to the CA and has more than a third of
// its lifetime left.
func fresh(cert *x509.Certificate, pool *x509.CertPool, now time.Time) bool {
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return false
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotAfter.Sub(now) > life/3
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
