package natsserver

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/certs/svid"
)

// ErrNotReady is returned when the server does not accept connections in time.
var ErrNotReady = errors.New("natsserver: server not ready for connections")

// Server is a running embedded NATS server.
type Server struct {
	ns       *server.Server
	cfg      natsconf.Config // as rendered at start; SetFederation changes its federation
	auth     *svidAuth
	mu       sync.Mutex // serialises SetFederation
	confPath string
	onStop   []func()
	stop     chan struct{}
	swept    chan struct{} // closed when the bundle watch has ended
}

// BundleSweepInterval is how often the server compares the trust bundle
// with the one its open connections were last checked against.
const BundleSweepInterval = time.Second

// Option configures Start.
type Option func(*startOptions)

type startOptions struct {
	trace  bool
	onStop []func()
}

// WithProtocolTrace logs every protocol operation (subjects of every
// publish and delivery) at debug level, with payloads cut to their first
// byte: for operators chasing a routing problem, and for tests that check
// no subject ever carries an eID.
func WithProtocolTrace() Option { return func(o *startOptions) { o.trace = true } }

// OnShutdown runs f after the server has shut down (closing the SVID source
// the server was started with, for example).
func OnShutdown(f func()) Option { return func(o *startOptions) { o.onStop = append(o.onStop, f) } }

// Start renders cfg, writes it next to the JetStream store (for operators to
// read), and starts the server. src supplies the server's SVID and the trust
// bundle; it must be the SVID of spiffe://<td>/nats.
func Start(ctx context.Context, cfg natsconf.Config, src svid.Source, log *slog.Logger, options ...Option) (*Server, error) {
	var so startOptions
	for _, o := range options {
		o(&so)
	}
	text, err := natsconf.Render(cfg)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		return nil, fmt.Errorf("natsserver: rendered configuration rejected: %w", err)
	}
	tlsConf, err := svid.NATSServerTLS(src, cfg.Federation.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	opts.TLSConfig = tlsConf
	if cfg.Cluster != nil {
		if opts.Cluster.TLSConfig, err = routeTLS(src, cfg.Federation.TrustDomain); err != nil {
			return nil, fmt.Errorf("natsserver: routes: %w", err)
		}
	}
	// verify_and_map's mapping, done here so the user also gets the SVID's
	// expiry as its connection deadline (see auth.go).
	auth := newSVIDAuth(opts.Users)
	opts.CustomClientAuthentication = auth
	opts.NoSigs = true
	opts.NoLog = log == nil
	if so.trace {
		opts.Trace, opts.Debug, opts.MaxTracedMsgLen = true, true, 1
	}

	s := &Server{onStop: so.onStop, cfg: cfg, auth: auth}
	if cfg.StoreDir != "" {
		if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
			return nil, fmt.Errorf("natsserver: %w", err)
		}
		s.confPath = filepath.Join(filepath.Dir(filepath.Clean(cfg.StoreDir)), "nats.conf")
		if err := os.WriteFile(s.confPath, []byte(text), 0o600); err != nil {
			return nil, fmt.Errorf("natsserver: %w", err)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	if err := auth.bind(ns); err != nil {
		ns.Shutdown()
		return nil, err
	}
	if log != nil {
		ns.SetLoggerV2(&slogAdapter{log: log.With("component", "nats")}, so.trace, so.trace, false)
	}
	go ns.Start()
	deadline := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !ns.ReadyForConnections(deadline) {
		ns.Shutdown()
		return nil, ErrNotReady
	}
	s.ns = ns
	s.serveSVIDz()
	s.stop, s.swept = make(chan struct{}), make(chan struct{})
	go s.watchBundle(src, cfg.Federation.TrustDomain, log)
	return s, nil
}

// watchBundle closes, whenever the trust bundle changes, every client
// connection whose certificate chain no longer verifies against it. A new
// connection is verified against the bundle of the moment at its handshake;
// an open one would otherwise outlive the removal of its CA until its
// certificate expires.
func (s *Server) watchBundle(src svid.Source, td spiffeid.TrustDomain, log *slog.Logger) {
	defer close(s.swept)
	last, _ := src.GetX509BundleForTrustDomain(td)
	t := time.NewTicker(BundleSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		b, err := src.GetX509BundleForTrustDomain(td)
		if err != nil || last != nil && b.Equal(last) {
			continue
		}
		last = b
		for _, cid := range s.untrusted(b) {
			if err := s.ns.DisconnectClientByID(cid); err == nil && log != nil {
				log.Warn("closed a connection whose certificate the new trust bundle no longer trusts", "component", "nats", "cid", cid)
			}
		}
	}
}

// untrusted returns the open client connections whose certificate chain
// does not verify against b, as at the handshake.
func (s *Server) untrusted(b *x509bundle.Bundle) []uint64 {
	roots := x509.NewCertPool()
	for _, c := range b.X509Authorities() {
		roots.AddCert(c)
	}
	cz, err := s.ns.Connz(&server.ConnzOptions{Limit: 1 << 20})
	if err != nil {
		return nil
	}
	var out []uint64
	for _, ci := range cz.Conns {
		c := s.ns.GetClient(ci.Cid)
		if c == nil {
			continue
		}
		st := c.GetTLSConnectionState()
		if st == nil || len(st.PeerCertificates) == 0 {
			continue
		}
		inter := x509.NewCertPool()
		for _, ic := range st.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		if _, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}); err != nil {
			out = append(out, ci.Cid)
		}
	}
	return out
}

// ClientURL is the URL clients connect to (tls://host:port).
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// ConfigPath is where the rendered configuration was written ("" if not).
func (s *Server) ConfigPath() string { return s.confPath }

// NATS exposes the underlying server (monitoring in tests and health checks).
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	if s.stop != nil {
		select {
		case <-s.stop:
		default:
			close(s.stop)
		}
		<-s.swept
	}
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	for _, f := range s.onStop {
		f()
	}
	s.onStop = nil
}

// slogAdapter routes nats-server's logger into slog. Subjects in its lines
// carry ckeys at most, never eIDs (see package subject).
type slogAdapter struct{ log *slog.Logger }

func (a *slogAdapter) Noticef(format string, v ...any) { a.log.Info(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.log.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }

// SetFederation puts the users and permissions rendered from a new
// federation version in force without a restart: for every later
// connection (a new member can connect at once), and for the connections
// already open (reauthorize): each gets its identity's new permissions on
// the same connection; one whose identity left the federation, or that
// holds a subscription its new permissions no longer allow, is closed (its
// client reconnects under the new permissions, where the subscription is
// refused). The trust domain cannot change.
//
// (server.ReloadOptions is not used: a configuration reload closes every
// connection whose user the server's own user list does not hold, and
// under svidAuth's custom authentication that list is empty.)
func (s *Server) SetFederation(fed *federation.Federation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fed.TrustDomain != s.cfg.Federation.TrustDomain {
		return fmt.Errorf("natsserver: the trust domain cannot change at run time")
	}
	cfg := s.cfg
	cfg.Federation = fed
	text, err := natsconf.Render(cfg)
	if err != nil {
		return err
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(text); err != nil {
		return fmt.Errorf("natsserver: rendered configuration rejected: %w", err)
	}
	old := s.auth.snapshot()
	if err := s.auth.replace(s.ns, opts.Users); err != nil {
		return err
	}
	s.reauthorize(old, s.auth.snapshot())
	s.cfg = cfg
	if s.confPath != "" {
		if err := os.WriteFile(s.confPath, []byte(text), 0o600); err != nil {
			return fmt.Errorf("natsserver: %w", err)
		}
	}
	return nil
}

// reauthorize applies new users to the open client connections: a
// connection whose identity's permissions did not change is left alone;
// one whose identity is gone, or whose subscriptions the new permissions
// do not all allow, is closed; any other is registered again with its
// identity's new user (permissions, same account and deadline) through
// the same call the authentication makes (RegisterUser), in place.
func (s *Server) reauthorize(old, users map[string]*server.User) {
	cz, err := s.ns.Connz(&server.ConnzOptions{Limit: 1 << 20, Subscriptions: true})
	if err != nil {
		return
	}
	for _, ci := range cz.Conns {
		c := s.ns.GetClient(ci.Cid)
		if c == nil || c.Kind() != server.CLIENT {
			continue
		}
		st := c.GetTLSConnectionState()
		if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
			continue
		}
		chain := st.VerifiedChains[0]
		id, err := x509svid.IDFromCert(chain[0])
		if err != nil {
			continue
		}
		u, ok := users[id.String()]
		was := old[id.String()]
		switch {
		case !ok || was == nil || was.Account != u.Account || !subscriptionsAllowed(ci.Subs, u.Permissions):
			_ = s.ns.DisconnectClientByID(ci.Cid)
			continue
		case reflect.DeepEqual(was.Permissions, u.Permissions):
			continue
		}
		mapped := *u
		mapped.ConnectionDeadline = expiry(chain)
		c.RegisterUser(&mapped)
	}
}

// subscriptionsAllowed reports whether every subscription's subject is
// covered by an allowed subscribe pattern of p (nil p: everything).
func subscriptionsAllowed(subs []string, p *server.Permissions) bool {
	if p == nil || p.Subscribe == nil || p.Subscribe.Allow == nil {
		return true
	}
	for _, sub := range subs {
		ok := false
		for _, allow := range p.Subscribe.Allow {
			if covers(allow, sub) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// covers reports whether the NATS subject pattern p matches every subject
// that sub (itself possibly with wildcards) matches.
func covers(p, sub string) bool {
	pt, st := strings.Split(p, "."), strings.Split(sub, ".")
	for i, tok := range pt {
		if tok == ">" {
			return len(st) > i
		}
		if i >= len(st) {
			return false
		}
		switch {
		case st[i] == ">":
			return false
		case tok == "*":
		case tok != st[i]:
			return false
		}
	}
	return len(st) == len(pt)
}

// PeerSVID is the SVID a client connection presented: its SPIFFE ID and
// when it expires (the connection's deadline: the server closes the
// connection then).
type PeerSVID struct {
	ID       string    `json:"spiffe_id"`
	Cid      uint64    `json:"cid"`
	NotAfter time.Time `json:"not_after"`
}

// SVIDzPath is the path, on the server's monitoring port, of the SVIDs its
// open client connections presented (PeerSVIDs, as JSON). jisr status reads
// it: under SPIRE the operator holds no member's SVID, the server holds
// what each member presented.
const SVIDzPath = "/jisr/svidz"

// PeerSVIDs lists the SVID of every open client connection, in the order of
// the connections.
func (s *Server) PeerSVIDs() []PeerSVID {
	cz, err := s.ns.Connz(&server.ConnzOptions{Limit: 1 << 20})
	if err != nil {
		return nil
	}
	out := []PeerSVID{}
	for _, ci := range cz.Conns {
		c := s.ns.GetClient(ci.Cid)
		if c == nil {
			continue
		}
		st := c.GetTLSConnectionState()
		if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
			continue
		}
		id, err := x509svid.IDFromCert(st.VerifiedChains[0][0])
		if err != nil {
			continue
		}
		out = append(out, PeerSVID{ID: id.String(), Cid: ci.Cid, NotAfter: expiry(st.VerifiedChains[0]).UTC()})
	}
	return out
}

// serveSVIDz adds SVIDzPath to the server's monitoring endpoints, when it
// has them.
func (s *Server) serveSVIDz() {
	mux, ok := s.ns.HTTPHandler().(*http.ServeMux)
	if !ok {
		return // no monitoring port
	}
	mux.HandleFunc(SVIDzPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			SVIDs []PeerSVID `json:"svids"`
		}{s.PeerSVIDs()})
	})
}
