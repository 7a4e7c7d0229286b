package node

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/fedwatch"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/console"
	"github.com/jisr-bus/jisr/gateway/events"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	"github.com/jisr-bus/jisr/gateway/notify"
)

// Config holds what a gateway replica cannot run without.
type Config struct {
	Federation *federation.Federation
	// DescriptorSets: the content of the descriptor sets Federation names
	// (gateway.Config.DescriptorSets).
	DescriptorSets map[string][]byte
	Keyer          *ckey.Keyer
	// Conn is the gateway's NATS connection and Source its SVID source; the
	// node owns both from New on: Stop (or a failed Start) drains and closes them.
	Conn   *nats.Conn
	Source svid.Source
	Log    *slog.Logger
	// Instance names this replica's audit log: keep it stable across restarts.
	Instance string
	// HTTPAddr is the HTTP listen address; HTTPTLS its TLS (nil: plaintext,
	// which the caller allows on loopback only).
	HTTPAddr string
	HTTPTLS  *tls.Config
	// SignIn builds the citizens' sign-in once the HTTP side listens on addr.
	SignIn func(addr string, secure bool) (*citizen.Auth, error)
	// ConsentJWKS is the consent service's public JWKS file (unless consent
	// is skipped).
	ConsentJWKS string
	// Audit is where the audit log keeps its keys and files (unless audit is skipped).
	Audit AuditConfig
	// Notifier tells citizens of each access to their data (default: the
	// log; notify.Webhook for an SMS or e-mail gateway).
	Notifier notify.Notifier
}

// AuditConfig is the audit log's place on disk and its settings.
type AuditConfig struct {
	KeyDir            string // checkpoint keys: <instance>.key and every instance's .pub
	Dir               string // the index database lives here
	TrustedCheckpoint string // the last checkpoint published, kept outside NATS
	Stream            stream.Config
	CheckpointEvery   time.Duration
	// APIPrefix, when set, is where the gateway's account sees the audit
	// streams' JetStream API: the server keeps them in their own account
	// (natsconf.AuditAPIPrefix, `jisr gateway --audit-api-prefix`).
	APIPrefix string
}

// Option sets an optional setting of a node.
type Option func(*options)

type options struct {
	grpcAddr    string
	grpcOpts    []grpc.ServerOption
	metrics     prometheus.Gatherer
	traces      *telemetry.Memory
	consoleAddr string
	consoleTLS  *tls.Config
	consoleOIDC *consoleSignIn // the console's OIDC sign-in (nil: the certificate only)
	consoleGW   *gatewayRef    // the running gateway, for the console (its catalog)
	traceFrom   console.TraceBackend
	unsafe      gateway.Safeguards
	pprof       bool
	readTimeout time.Duration
	tp          trace.TracerProvider
	queryConns  []*nats.Conn
	governance  []ed25519.PublicKey // trusted keys of the federation watch; none: no watch
}

// WithQueryConns gives the gateway further connections of its identity to
// take queries on (gateway.Config.QueryConns); the node owns them from New
// on, like Conn.
func WithQueryConns(conns ...*nats.Conn) Option { return func(o *options) { o.queryConns = conns } }

// WithGRPC serves the consent and access-log APIs over gRPC on addr, with
// these server options (credentials, interceptors).
func WithGRPC(addr string, opts ...grpc.ServerOption) Option {
	return func(o *options) { o.grpcAddr, o.grpcOpts = addr, opts }
}

// WithMetrics adds the process-wide metrics to the node's /metrics.
func WithMetrics(g prometheus.Gatherer) Option { return func(o *options) { o.metrics = g } }

// WithUnsafe switches safeguards off: benchmarks only.
func WithUnsafe(s gateway.Safeguards) Option { return func(o *options) { o.unsafe = s } }

// WithPprof serves Go profiles at /debug/pprof/ on the HTTP side.
func WithPprof() Option { return func(o *options) { o.pprof = true } }

// WithHTTPReadTimeout sets the HTTP server's read timeout (default 30s).
func WithHTTPReadTimeout(d time.Duration) Option { return func(o *options) { o.readTimeout = d } }

// WithTracerProvider sends the gateway's spans to tp (default: the global
// provider, otel.GetTracerProvider(), as it is when the gateway is built).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// WithFederationWatch applies the signed federation versions published in
// the jisr_federation bucket, verified with these governance keys, without a
// restart (bus/fedwatch). The bucket must exist: the gateway does not start
// without it.
func WithFederationWatch(trusted ...ed25519.PublicKey) Option {
	return func(o *options) { o.governance = trusted }
}

// Node is one gateway replica.
type Node struct {
	cfg      Config
	o        options
	gw       *gateway.Gateway
	srv      *http.Server
	addr     string
	grpc     *grpc.Server
	grpcAddr string
	consent  *consentParts
	audit    *auditParts
	citizens *citizen.Auth
	lis      net.Listener // the HTTP listener until srv serves it
	// The auditor's console (nil without audit or SVID) and its listener.
	console     *console.Server
	consoleSrv  *http.Server
	consoleAddr string
	// stopCitizen ends the citizen page's live views and notifications.
	stopCitizen []func()
	events      *events.Events
	fedwatch    *fedwatch.Watcher
	// fedMu orders the federation versions the watch applies with the
	// events service's start; fed is the version in force (events.go).
	fedMu sync.Mutex
	fed   *federation.Federation
}

// New checks the configuration; Start brings the node up.
func New(cfg Config, opts ...Option) (*Node, error) {
	if cfg.Federation == nil || cfg.Keyer == nil || cfg.Conn == nil || cfg.Log == nil || cfg.SignIn == nil || cfg.Instance == "" {
		return nil, errors.New("node: Federation, Keyer, Conn, Log, SignIn and Instance are required")
	}
	if cfg.Instance == subject.ConsentAuditLog {
		return nil, fmt.Errorf("node: the instance name %q is the consent service's audit log; choose another", cfg.Instance)
	}
	n := &Node{cfg: cfg}
	for _, opt := range opts {
		opt(&n.o)
	}
	return n, nil
}

// Addr is the HTTP side's address, once started.
func (n *Node) Addr() string { return n.addr }

// GRPCAddr is the gRPC side's address, once started ("" when not served).
func (n *Node) GRPCAddr() string { return n.grpcAddr }

// Secure reports whether the HTTP side speaks TLS.
func (n *Node) Secure() bool { return n.cfg.HTTPTLS != nil }

// ConsentService is the consent API's face (nil when consent is skipped).
func (n *Node) ConsentService() *consent.Service {
	if n.consent == nil {
		return nil
	}
	return n.consent.Service
}

// Start brings the replica up: consent, audit, sign-in, the gateway's
// subscription, then the HTTP and gRPC servers. On error what was started
// is stopped again.
func (n *Node) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = n.Stop(sctx)
		}
	}()
	if n.lis, err = net.Listen("tcp", n.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("gateway HTTP: %w", err)
	}
	n.addr = n.lis.Addr().String()
	if n.citizens, err = n.cfg.SignIn(n.addr, n.Secure()); err != nil {
		return err
	}
	reg := prometheus.NewRegistry() // this gateway's own; process-wide metrics come WithMetrics
	routes, err := n.startParts(ctx, reg)
	if err != nil {
		return err
	}
	gcfg := gateway.Config{
		Federation: n.cfg.Federation, Keyer: n.cfg.Keyer, Conn: n.cfg.Conn, QueryConns: n.o.queryConns, Log: n.cfg.Log, Registerer: reg,
		Unsafe: n.o.unsafe, Instance: n.cfg.Instance, DescriptorSets: n.cfg.DescriptorSets,
	}
	if n.consent != nil {
		gcfg.Consent = n.consent.Verifier
		gcfg.Requests = consent.ConsumerRequests{Backend: n.consent.Service.Backend.(consent.RequestBackend)}
	}
	if n.audit != nil {
		gcfg.Audit = n.audit.Log
	}
	var gopts []gateway.Option
	if n.o.tp != nil {
		gopts = append(gopts, gateway.WithTracerProvider(n.o.tp))
	}
	if n.gw, err = gateway.New(gcfg, gopts...); err != nil {
		return err
	}
	if len(n.o.governance) > 0 {
		if err := n.watchFederation(ctx, reg); err != nil {
			return err
		}
	}
	if err := n.gw.Start(ctx); err != nil {
		return err
	}
	if err := n.startEvents(ctx); err != nil {
		return err
	}
	n.serveHTTP(n.mux(reg, routes))
	if err := n.serveConsole(); err != nil {
		return err
	}
	return n.serveGRPC()
}

// startParts starts consent and audit unless skipped, and gathers the
// routes of the HTTP side.
func (n *Node) startParts(ctx context.Context, reg *prometheus.Registry) (map[string]http.Handler, error) {
	routes := map[string]http.Handler{}
	add := func(rs map[string]http.Handler) {
		for p, h := range rs {
			routes[p] = h
		}
	}
	var err error
	// The citizen-facing routes see the sign-in with assisted access: a
	// parent or guardian may act for a minor (checked at each request).
	asst := &assisted{Auth: n.citizens, n: n}
	if !n.o.unsafe.SkipConsent {
		if n.consent, err = startConsent(ctx, n.cfg, reg); err != nil {
			return nil, fmt.Errorf("consent: %w", err)
		}
		add(n.consent.Routes)
	}
	if !n.o.unsafe.SkipAudit {
		if n.audit, err = startAudit(ctx, n.cfg, n.o, asst, reg); err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		if l, ok := n.audit.Log.(interface{ Pending() int }); ok {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: "jisr", Subsystem: "gateway", Name: "audit_backlog",
				Help: "Audit records waiting to be made durable.",
			}, func() float64 { return float64(l.Pending()) }))
		}
		add(n.audit.Routes)
		n.console = n.audit.Console
	}
	if n.consent != nil {
		if n.audit != nil {
			// The citizen's actions on their consents are audited.
			n.consent.Service.Audit = n.audit.Log.Append
		}
		// The consent API acts for the citizen the sign-in authenticated.
		add(n.consent.Service.Routes(asst))
	}
	routes["GET /v1/wards"] = http.HandlerFunc(n.wards)
	add(n.citizens.Routes())
	pr, err := n.citizenPage(ctx, asst)
	if err != nil {
		return nil, fmt.Errorf("citizen page: %w", err)
	}
	add(pr)
	return routes, nil
}

// mux is the HTTP side: health, readiness, metrics, traces and the routes.
func (n *Node) mux(reg *prometheus.Registry, routes map[string]http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := n.gw.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if n.events != nil {
			if err := n.events.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	gs := prometheus.Gatherers{reg}
	if n.o.metrics != nil {
		gs = append(gs, n.o.metrics)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(gs, promhttp.HandlerOpts{}))
	// The spans of a query show who asked about whom: the auditor's only.
	if n.console != nil {
		mux.Handle("GET /v1/traces/{id}", n.console.TracesHandler())
	} else {
		mux.Handle("GET /v1/traces/{id}", refuseTraces)
	}
	for p, h := range routes {
		mux.Handle(p, h)
	}
	if n.o.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	}
	return mux
}

func (n *Node) serveHTTP(h http.Handler) {
	n.srv = NewHTTPServer(h, n.cfg.HTTPTLS, n.o.readTimeout)
	lis := n.lis
	if n.cfg.HTTPTLS != nil {
		lis = tls.NewListener(lis, n.cfg.HTTPTLS)
	}
	n.lis = nil
	go func() {
		if err := n.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.cfg.Log.Error("gateway HTTP server stopped", "err", err)
		}
	}()
	n.cfg.Log.Info("gateway HTTP listening", "addr", n.addr, "tls", n.Secure(), "instance", n.cfg.Instance)
}

// Stop drains in order: no new queries, in-flight ones finish (and are
// audited), the audit log publishes its checkpoint, then connections close.
func (n *Node) Stop(ctx context.Context) error {
	var errs []error
	if n.events != nil {
		errs = append(errs, n.events.Stop(ctx))
	}
	if n.gw != nil {
		errs = append(errs, n.gw.Stop(ctx))
	}
	for _, stop := range n.stopCitizen {
		stop()
	}
	n.stopCitizen = nil
	if n.fedwatch != nil {
		n.fedwatch.Stop()
		n.fedwatch = nil
	}
	if n.srv != nil {
		errs = append(errs, n.srv.Shutdown(ctx))
	}
	if n.consoleSrv != nil {
		errs = append(errs, n.consoleSrv.Shutdown(ctx))
	}
	if n.grpc != nil {
		n.grpc.GracefulStop()
	}
	if n.audit != nil && n.audit.Close != nil {
		errs = append(errs, n.audit.Close(ctx))
		n.audit = nil
	}
	n.close()
	return errors.Join(errs...)
}

func (n *Node) close() {
	if n.lis != nil {
		_ = n.lis.Close()
	}
	if n.consent != nil && n.consent.Close != nil {
		n.consent.Close()
	}
	for _, nc := range n.o.queryConns {
		_ = nc.Drain()
	}
	if n.cfg.Conn != nil {
		_ = n.cfg.Conn.Drain()
	}
	if n.cfg.Source != nil {
		_ = n.cfg.Source.Close()
	}
}

// watchFederation applies the published federation version, then every
// newer one, to the gateway.
func (n *Node) watchFederation(ctx context.Context, reg prometheus.Registerer) error {
	js, err := jetstream.New(n.cfg.Conn)
	if err != nil {
		return err
	}
	kv, err := natsstate.OpenBucket(ctx, js, subject.FederationBucket)
	if err != nil {
		return fmt.Errorf("federation watch: %w", err)
	}
	n.fedwatch, err = fedwatch.Start(ctx, fedwatch.Config{
		Bucket: kv, Trusted: n.o.governance, Component: "gateway", Log: n.cfg.Log, Registerer: reg,
		Apply: func(b *federation.Bundle, fed *federation.Federation) error {
			return n.applyFederation(fed, b.Version, b.Descriptors)
		},
	})
	return err
}

// Gateway is the running gateway (nil before Start).
func (n *Node) Gateway() *gateway.Gateway { return n.gw }
