package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/console"
)

// WithTraces keeps the gateway's spans in m and serves them, to the
// auditor only, at GET /v1/traces/{id} and in the console's waterfalls.
func WithTraces(m *telemetry.Memory) Option { return func(o *options) { o.traces = m } }

// WithConsole serves the auditor's console on its own listener at addr,
// always over TLS with a required client certificate (tlsConf: the
// gateway's SVID, clients of the trust domain); only the auditor's
// certificate gets an answer (gateway/console).
func WithConsole(addr string, tlsConf *tls.Config) Option {
	return func(o *options) { o.consoleAddr, o.consoleTLS, o.consoleGW = addr, tlsConf, &gatewayRef{} }
}

// WithTraceBackend makes the console read a decision's trace from a tracing
// backend's query API first (console.ParseTracesFrom: Jaeger), and from the
// in-memory store (WithTraces) when the backend cannot answer.
func WithTraceBackend(b console.TraceBackend) Option { return func(o *options) { o.traceFrom = b } }

// gatewayRef is the running gateway, once started: the console reads the
// gateway's method catalog through it (which methods are predicates), as
// the federation watch changes it.
type gatewayRef struct {
	p atomic.Pointer[gateway.Gateway]
}

func (r *gatewayRef) catalog() *catalog.Catalog {
	if g := r.p.Load(); g != nil {
		return g.Catalog()
	}
	return nil
}

// WithConsoleSignIn also lets a human sign in to the console by OpenID
// Connect with the auditor's role (build gets the console's listen address
// and returns gateway/citizen's sign-in configured with
// console.IdentifyByRole and the console's paths). The auditor's
// certificate keeps working; the handshake then lets a browser without a
// certificate in, and the console answers it only with such a session.
func WithConsoleSignIn(build func(consoleAddr string) (*citizen.Auth, error)) Option {
	return func(o *options) { o.consoleOIDC = &consoleSignIn{build: build} }
}

// consoleSignIn hands the console the sessions of a sign-in that can only
// be built once the console listens (its redirect URL names the address).
type consoleSignIn struct {
	build func(consoleAddr string) (*citizen.Auth, error)
	auth  atomic.Pointer[citizen.Auth]
}

func (c *consoleSignIn) AuthenticateRequest(r *http.Request) (string, error) {
	a := c.auth.Load()
	if a == nil {
		return "", citizen.ErrUnauthenticated
	}
	return a.AuthenticateRequest(r)
}

// ConsoleAddr is the console's address, once started ("" when not served).
func (n *Node) ConsoleAddr() string { return n.consoleAddr }

// startConsole builds the console over the audit streams. With a console
// listener (WithConsole) it keeps its own index of the decisions (following
// the records), verifies the logs in the background and exports the
// findings' metrics. Without one it serves /v1/traces only (to the auditor,
// audited) and costs nothing else. Without an SVID source there is no way
// to know the auditor, so there is no console (and /v1/traces refuses
// everyone).
func startConsole(ctx context.Context, cfg Config, o options, log gateway.AuditLog, records, ckpts jetstream.Stream, keys *checkpoint.Keys, reg prometheus.Registerer) (*console.Server, func(context.Context) error, error) {
	if cfg.Source == nil {
		return nil, func(context.Context) error { return nil }, nil
	}
	full := o.consoleAddr != ""
	var cat func() *catalog.Catalog
	if o.consoleGW != nil {
		cat = o.consoleGW.catalog
	}
	path := ":memory:"
	if full {
		path = filepath.Join(cfg.Audit.Dir, "console-"+cfg.Instance+".db")
	}
	store, err := console.OpenStore(path)
	if err != nil {
		return nil, nil, err
	}
	srv, err := console.New(console.Config{
		Federation: cfg.Federation, Keyer: cfg.Keyer, Store: store, Records: records, Checkpoints: ckpts, Keys: keys,
		Traces: o.traces, TraceBackend: o.traceFrom, Audit: log, Log: cfg.Log.With("component", "console"),
		Auth:            consoleAuth(cfg, o),
		Rules:           consoleRules(cfg),
		Catalog:         cat,
		CheckpointEvery: cfg.Audit.CheckpointEvery,
	})
	if err == nil && full {
		err = srv.Register(reg)
	}
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	if full {
		wg.Go(func() {
			store.Follow(cctx, records, func(err error) { cfg.Log.Warn("console: following the audit records stopped; retrying", "err", err) })
		})
		wg.Go(func() { srv.Run(cctx) })
	}
	return srv, func(context.Context) error {
		cancel()
		wg.Wait()
		return store.Close()
	}, nil
}

// serveConsole listens on the console's own address, TLS only.
func (n *Node) serveConsole() error {
	if n.o.consoleAddr == "" {
		return nil
	}
	if n.console == nil {
		return errors.New("gateway console: needs the audit log and the gateway's SVID")
	}
	n.o.consoleGW.p.Store(n.gw) // started before the console serves (Start)
	if n.o.consoleTLS == nil || n.o.consoleTLS.ClientAuth < tls.RequireAnyClientCert {
		return errors.New("gateway console: TLS with a required client certificate only")
	}
	mux := http.NewServeMux()
	for p, h := range n.console.Routes() {
		mux.Handle(p, h)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/console/", http.StatusFound) })
	lis, err := net.Listen("tcp", n.o.consoleAddr)
	if err != nil {
		return fmt.Errorf("gateway console: %w", err)
	}
	n.consoleAddr = lis.Addr().String()
	tlsConf := n.o.consoleTLS
	if si := n.o.consoleOIDC; si != nil {
		a, err := si.build(n.consoleAddr)
		if err != nil {
			lis.Close()
			return fmt.Errorf("gateway console sign-in: %w", err)
		}
		si.auth.Store(a)
		for p, h := range a.Routes() {
			mux.Handle(p, h)
		}
		tlsConf = console.OptionalClientCert(tlsConf)
		n.cfg.Log.Info("auditor's console: OIDC sign-in with the auditor's role as well", "login", "https://"+n.consoleAddr+console.PathLogin)
	}
	n.consoleSrv = NewHTTPServer(mux, tlsConf, n.o.readTimeout)
	go func() {
		if err := n.consoleSrv.Serve(tls.NewListener(lis, tlsConf)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.cfg.Log.Error("gateway console stopped", "err", err)
		}
	}()
	n.cfg.Log.Info("auditor's console listening (mTLS, the auditor only)", "addr", "https://"+n.consoleAddr+"/console/")
	return nil
}

// refuseTraces answers /v1/traces where no console can authenticate the auditor.
var refuseTraces = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, console.ErrNoCertificate.Error(), http.StatusUnauthorized)
})

func consoleAuth(cfg Config, o options) console.Auth {
	a := console.Auth{Auditor: cfg.Federation.ID("auditor"), Bundle: cfg.Source}
	if o.consoleOIDC != nil {
		a.Sessions = o.consoleOIDC
	}
	return a
}

func consoleRules(cfg Config) console.Rules {
	return console.Rules(cfg.Federation.Anomalies)
}
