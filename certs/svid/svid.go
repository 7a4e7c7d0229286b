// Package svid is where a jisr process gets its X.509-SVID and trust bundle:
// from the SPIFFE Workload API when SPIFFE_ENDPOINT_SOCKET is set (SPIRE in
// production), otherwise from files written by the dev CA, reloaded when they
// change. It also builds the TLS configurations that use them.
//
// Invariant: TLS configurations built here read the certificate and the
// bundle from the Source at every handshake, so a rotation takes effect for
// the next connection without a restart.
package svid

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// EndpointSocketEnv names the Workload API socket variable.
const EndpointSocketEnv = "SPIFFE_ENDPOINT_SOCKET"

// Sentinel errors.
var (
	ErrWrongID = errors.New("svid: the SVID is for another identity")
	ErrClosed  = errors.New("svid: source closed")
)

// Source supplies a process's SVID and trust bundle.
type Source interface {
	x509svid.Source
	x509bundle.Source
	Close() error
}

type static struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

// NewStatic returns a Source that never changes (tests and tools).
func NewStatic(s *x509svid.SVID, b *x509bundle.Bundle) Source { return &static{s, b} }

func (s *static) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }
func (s *static) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle.GetX509BundleForTrustDomain(td)
}
func (s *static) Close() error { return nil }

// FileSource reads an SVID and a bundle from PEM files and reloads them when
// they change; a bad reload keeps the last good pair.
type FileSource struct {
	certFile, keyFile, bundleFile string
	log                           *slog.Logger
	onChange                      func()

	mu     sync.RWMutex
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
	digest [32]byte

	cancel context.CancelFunc
	done   chan struct{}
}

type fileOptions struct {
	interval time.Duration
	log      *slog.Logger
	onChange func()
}

// FileOption configures NewFileSource.
type FileOption func(*fileOptions)

// WithPollInterval sets how often files are checked (default 2s).
func WithPollInterval(d time.Duration) FileOption { return func(o *fileOptions) { o.interval = d } }

// WithLogger sets the logger for reloads.
func WithLogger(l *slog.Logger) FileOption { return func(o *fileOptions) { o.log = l } }

// WithOnChange is called after each successful reload.
func WithOnChange(f func()) FileOption { return func(o *fileOptions) { o.onChange = f } }

// NewFileSource loads the files and starts watching them until Close.
func NewFileSource(ctx context.Context, certFile, keyFile, bundleFile string, opts ...FileOption) (*FileSource, error) {
	o := fileOptions{interval: 2 * time.Second, log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	fs := &FileSource{certFile: certFile, keyFile: keyFile, bundleFile: bundleFile, log: o.log, onChange: o.onChange, done: make(chan struct{})}
	if _, err := fs.reload(); err != nil {
		return nil, err
	}
	ctx, fs.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go fs.watch(ctx, o.interval)
	return fs, nil
}

func (fs *FileSource) watch(ctx context.Context, every time.Duration) {
	defer close(fs.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			changed, err := fs.reload()
			switch {
			case err != nil:
				fs.log.Warn("SVID files changed but do not load; keeping the previous SVID", "cert", fs.certFile, "err", err)
			case changed:
				fs.log.Info("SVID reloaded", "cert", fs.certFile)
				if fs.onChange != nil {
					fs.onChange()
				}
			}
		}
	}
}

// reload reads the files; it reports whether their content changed.
func (fs *FileSource) reload() (bool, error) {
	var all []byte
	for _, p := range []string{fs.certFile, fs.keyFile, fs.bundleFile} {
		b, err := os.ReadFile(p)
		if err != nil {
			return false, fmt.Errorf("svid: %w (run `jisr certs init` to create the dev SVIDs)", err)
		}
		all = append(all, b...)
	}
	digest := sha256.Sum256(all)
	fs.mu.RLock()
	same := fs.svid != nil && bytes.Equal(digest[:], fs.digest[:])
	fs.mu.RUnlock()
	if same {
		return false, nil
	}
	s, err := x509svid.Load(fs.certFile, fs.keyFile)
	if err != nil {
		return false, fmt.Errorf("svid: %s: %w", fs.certFile, err)
	}
	b, err := x509bundle.Load(s.ID.TrustDomain(), fs.bundleFile)
	if err != nil {
		return false, fmt.Errorf("svid: %s: %w", fs.bundleFile, err)
	}
	fs.mu.Lock()
	fs.svid, fs.bundle, fs.digest = s, b, digest
	fs.mu.Unlock()
	return true, nil
}

// GetX509SVID returns the current SVID.
func (fs *FileSource) GetX509SVID() (*x509svid.SVID, error) {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	return fs.svid, nil
}

// GetX509BundleForTrustDomain returns the current bundle.
func (fs *FileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	return fs.bundle.GetX509BundleForTrustDomain(td)
}

// Close stops watching and waits for the watcher.
func (fs *FileSource) Close() error {
	fs.cancel()
	<-fs.done
	return nil
}

// Open returns id's Source: the Workload API when SPIFFE_ENDPOINT_SOCKET is
// set (the SVID whose ID is id, among all the Workload API serves the
// process), otherwise the dev CA's files in dir.
func Open(ctx context.Context, dir string, id spiffeid.ID, log *slog.Logger) (Source, error) {
	if log == nil {
		log = slog.Default()
	}
	if os.Getenv(EndpointSocketEnv) != "" {
		return OpenWorkloadAPI(ctx, id, log)
	}
	certFile, keyFile := Paths(dir, id)
	fs, err := NewFileSource(ctx, certFile, keyFile, BundlePath(dir), WithLogger(log))
	if err != nil {
		return nil, err
	}
	if s, _ := fs.GetX509SVID(); s.ID != id {
		fs.Close()
		return nil, fmt.Errorf("%w: %s holds %s, this process is %s", ErrWrongID, certFile, s.ID, id)
	}
	return fs, nil
}

// The file layout of a certificates directory, which Open reads and the dev
// CA writes:
//
//	<dir>/bundle.pem          the trust bundle
//	<dir>/svid/<name>.pem     an identity's certificate chain
//	<dir>/svid/<name>.key     its private key (0600)
//
// where <name> is the SPIFFE ID's path with '/' turned into '-'
// (spiffe://td/member/cnss → member-cnss).

// Paths returns where an identity's SVID lives in dir.
func Paths(dir string, id spiffeid.ID) (certFile, keyFile string) {
	name := strings.ReplaceAll(strings.TrimPrefix(id.Path(), "/"), "/", "-")
	base := filepath.Join(dir, "svid", name)
	return base + ".pem", base + ".key"
}

// BundlePath is where the trust bundle lives in dir.
func BundlePath(dir string) string { return filepath.Join(dir, "bundle.pem") }

// ExpiresAt is when the current SVID expires (for the SVID-expiry metric).
func ExpiresAt(src x509svid.Source) (time.Time, error) {
	s, err := src.GetX509SVID()
	if err != nil {
		return time.Time{}, err
	}
	return s.Certificates[0].NotAfter, nil
}

// MinTLSVersion is the oldest TLS version any jisr listener or client
// accepts: TLS 1.3 (no renegotiation, no static-RSA or CBC suites, an
// encrypted certificate exchange). Every tls.Config jisr builds sets it.
const MinTLSVersion = tls.VersionTLS13

// ClientTLS is an mTLS client configuration that presents src's SVID and
// accepts a server whose SVID authz allows.
func ClientTLS(src Source, authz tlsconfig.Authorizer) *tls.Config {
	c := &tls.Config{MinVersion: MinTLSVersion}
	tlsconfig.HookMTLSClientConfig(c, src, src, authz)
	return c
}

// ServerTLS is an mTLS server configuration (gRPC) that presents src's SVID
// and accepts clients whose SVID authz allows.
func ServerTLS(src Source, authz tlsconfig.Authorizer) *tls.Config {
	c := &tls.Config{MinVersion: MinTLSVersion}
	tlsconfig.HookMTLSServerConfig(c, src, src, authz)
	return c
}

// NATSServerTLS is the NATS server's configuration: the server maps the
// client's verified certificate to a user (verify_and_map), so it needs
// standard x509 client verification against the trust bundle, reloaded at
// every handshake, and a certificate from src.
func NATSServerTLS(src Source, td spiffeid.TrustDomain) (*tls.Config, error) {
	if _, err := src.GetX509BundleForTrustDomain(td); err != nil {
		return nil, fmt.Errorf("svid: no bundle for %s: %w", td, err)
	}
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		s, err := src.GetX509SVID()
		if err != nil {
			return nil, err
		}
		return tlsCertificate(s), nil
	}
	base := &tls.Config{
		MinVersion:     MinTLSVersion,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		GetCertificate: getCert,
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		b, err := src.GetX509BundleForTrustDomain(td)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		for _, c := range b.X509Authorities() {
			pool.AddCert(c)
		}
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = pool
		return c, nil
	}
	// ClientCAs is also set on the base so that code inspecting the
	// configuration (nats-server does) sees client verification is on.
	b, _ := src.GetX509BundleForTrustDomain(td)
	base.ClientCAs = x509.NewCertPool()
	for _, c := range b.X509Authorities() {
		base.ClientCAs.AddCert(c)
	}
	return base, nil
}

func tlsCertificate(s *x509svid.SVID) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
	for _, x := range s.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}
