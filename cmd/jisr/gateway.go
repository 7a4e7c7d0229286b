package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/consent"
)

func init() { commandSet = append(commandSet, newGatewayCmd) }

type gatewayOptions struct {
	httpAddr string
	grpcAddr string
	instance string
	unsafe   gateway.Safeguards
	pprof    bool
	// consentJWKS is the consent service's public JWKS (default
	// <certs>/consent-jwks.json); a private key there stops the gateway.
	consentJWKS string
	signin      signinOptions
}

func newGatewayCmd(g *globals) *cobra.Command {
	var o gatewayOptions
	var skip []string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the gateway: consent, access rules, audit and minimisation for every query",
		Long: `Run one gateway replica. It subscribes to every query subject (jisr.q.>) in a
queue group, so several replicas share the load; each keeps its own audit log.

HTTP (--http): /healthz, /readyz, /metrics, the consent JWKS and APIs, the
citizen's access log, and GET /v1/traces/{trace-id} (recent spans kept in
memory, see --trace-memory). Traces go to --otlp or the OTEL_* variables
(docs/observability.md). Plaintext only on a loopback address; elsewhere
HTTPS with --http-cert/--http-key (for citizens' browsers) or the gateway's
SVID (mTLS).

Citizens sign in through the national e-ID platform's OpenID Connect
provider (--oidc-*; authorization code with PKCE, nonce, acr); the client
secret comes from --oidc-client-secret-file or $JISR_OIDC_CLIENT_SECRET.
Without --oidc-issuer there is no citizen sign-in.`,
		Example: `  jisr gateway --instance gw-1 --http 127.0.0.1:8080
  jisr gateway --instance gw-2 --http 127.0.0.1:8081   # a second replica
  jisr gateway --http :8443 --http-cert tls.crt --http-key tls.key \
    --oidc-issuer https://idp.example --oidc-client-id jisr --oidc-client-secret-file secret \
    --oidc-redirect-url https://jisr.example:8443/access-log/callback --oidc-acr <CNIE level>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range skip {
				switch s {
				case "consent":
					o.unsafe.SkipConsent = true
				case "audit":
					o.unsafe.SkipAudit = true
				case "minimise":
					o.unsafe.SkipMinimise = true
				default:
					return usageError{fmt.Errorf("--unsafe-skip %q: one of consent, audit, minimise", s)}
				}
			}
			if !o.unsafe.SkipConsent {
				if _, _, err := gatewayConsentKeys(g, o.consentJWKS); err != nil {
					return fmt.Errorf("consent keys: %w", err)
				}
			}
			ctx := cmd.Context()
			stopTelemetry, err := g.startTelemetry(ctx, "gateway", true)
			if err != nil {
				return err
			}
			defer stopTelemetry()
			n, err := startGateway(ctx, g, o)
			if err != nil {
				return err
			}
			<-ctx.Done()
			g.log.Info("shutting down the gateway")
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
			defer cancel()
			return n.stop(sctx)
		},
	}
	cmd.Flags().StringVar(&o.httpAddr, "http", "127.0.0.1:8080", "HTTP listen address (health, metrics, consent, access log)")
	cmd.Flags().StringVar(&o.grpcAddr, "grpc", "127.0.0.1:7000", "gRPC listen address of the consent and access-log APIs (plaintext on loopback only, else mTLS)")
	cmd.Flags().StringVar(&o.consentJWKS, "consent-jwks", "", "the consent service's public keys, a JWKS file reloaded when it changes (default <certs>/consent-jwks.json); the gateway refuses to start if it holds a private key")
	cmd.Flags().StringVar(&o.instance, "instance", "gw-1", "this replica's name: names its audit log, so keep it stable across restarts")
	cmd.Flags().StringSliceVar(&skip, "unsafe-skip", nil, "BENCHMARK ONLY: switch off safeguards (consent, audit, minimise) to measure their cost")
	_ = cmd.Flags().MarkHidden("unsafe-skip")
	cmd.Flags().BoolVar(&o.pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the HTTP port (profiling only)")
	_ = cmd.Flags().MarkHidden("pprof")
	o.signin.flags(cmd)
	return cmd
}

// gatewayNode is a running gateway with its NATS connection and HTTP server.
type gatewayNode struct {
	gw       *gateway.Gateway
	nc       *nats.Conn
	src      svid.Source
	srv      *http.Server
	addr     string
	grpc     *grpc.Server
	grpcAddr string
	consent  *consentParts
	audit    *auditParts
	citizens *citizen.Auth
	lis      net.Listener // the HTTP listener until srv serves it
	secure   bool         // the HTTP side speaks TLS
}

func startGateway(ctx context.Context, g *globals, o gatewayOptions) (_ *gatewayNode, err error) {
	fed, err := g.federation()
	if err != nil {
		return nil, err
	}
	keyer, err := g.keyer()
	if err != nil {
		return nil, err
	}
	// n, not the result: an error return sets the result to nil, and what was
	// started (the gateway's subscription, the HTTP server) must still be stopped.
	n := &gatewayNode{}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = n.stop(sctx)
		}
	}()
	n.nc, n.src, err = g.connect(ctx, "gateway")
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry() // this gateway's own; process-wide metrics are in g.registry()

	// The HTTP side: TLS off loopback, then the citizens' sign-in.
	httpTLSConf, err := httpTLS(o.httpAddr, o.signin, n.src, tlsconfig.AuthorizeMemberOf(fed.TrustDomain))
	if err != nil {
		return nil, err
	}
	if n.lis, err = net.Listen("tcp", o.httpAddr); err != nil {
		return nil, fmt.Errorf("gateway HTTP: %w", err)
	}
	n.addr, n.secure = n.lis.Addr().String(), httpTLSConf != nil
	if n.citizens, err = newCitizenAuth(g, n.addr, n.secure, o.signin); err != nil {
		return nil, err
	}

	cfg := gateway.Config{
		Federation: fed, Keyer: keyer, Conn: n.nc, Log: g.log, Registerer: reg, Unsafe: o.unsafe, Instance: o.instance,
	}
	routes := map[string]http.Handler{}
	if !o.unsafe.SkipConsent {
		if n.consent, err = startConsent(ctx, g, n.nc, reg, o.consentJWKS); err != nil {
			return nil, fmt.Errorf("consent: %w", err)
		}
		cfg.Consent = n.consent.Verifier
		for p, h := range n.consent.Routes {
			routes[p] = h
		}
	}
	if !o.unsafe.SkipAudit {
		if n.audit, err = startAudit(ctx, g, n.nc, o.instance, n.citizens); err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		cfg.Audit = n.audit.Log
		if l, ok := n.audit.Log.(interface{ Pending() int }); ok {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: "jisr", Subsystem: "gateway", Name: "audit_backlog",
				Help: "Audit records waiting to be made durable.",
			}, func() float64 { return float64(l.Pending()) }))
		}
		for p, h := range n.audit.Routes {
			routes[p] = h
		}
	}
	if n.consent != nil {
		// The consent API acts for the citizen the sign-in authenticated.
		for p, h := range n.consent.Service.Routes(n.citizens) {
			routes[p] = h
		}
	}
	for p, h := range n.citizens.Routes() {
		routes[p] = h
	}
	if n.gw, err = gateway.New(cfg); err != nil {
		return nil, err
	}
	if err := n.gw.Start(ctx); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := n.gw.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(prometheus.Gatherers{reg, g.registry()}, promhttp.HandlerOpts{}))
	if mem := g.traces(); mem != nil {
		mux.Handle("GET /v1/traces/{id}", mem.Handler())
	}
	for p, h := range routes {
		mux.Handle(p, h)
	}
	if o.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	}
	n.srv = newHTTPServer(mux, httpTLSConf, o.signin)
	lis := n.lis
	if httpTLSConf != nil {
		lis = tls.NewListener(lis, httpTLSConf)
	}
	n.lis = nil
	go func() {
		if err := n.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("gateway HTTP server stopped", "err", err)
		}
	}()
	g.log.Info("gateway HTTP listening", "addr", n.addr, "tls", n.secure, "instance", o.instance)
	if err := n.serveGRPC(g, o); err != nil {
		return nil, err
	}
	return n, nil
}

// serveGRPC serves the citizen-facing APIs (consent, access log) over gRPC,
// with health and reflection.
func (n *gatewayNode) serveGRPC(g *globals, o gatewayOptions) error {
	if o.grpcAddr == "" || n.consent == nil && n.audit == nil {
		return nil
	}
	fed, _ := g.federation()
	creds, err := loopback.ServerCredentials(o.grpcAddr, svid.ServerTLS(n.src, tlsconfig.AuthorizeMemberOf(fed.TrustDomain)))
	if err != nil {
		return err
	}
	n.grpc = grpc.NewServer(append(creds, g.grpcServerOptions("gateway", "")...)...)
	hs := health.NewServer()
	if n.consent != nil {
		consent.NewGRPC(n.consent.Service, n.citizens).Register(n.grpc)
		hs.SetServingStatus("jisr.consent.v1.Consent", healthpb.HealthCheckResponse_SERVING)
	}
	if n.audit != nil && n.audit.RegisterGRPC != nil {
		n.audit.RegisterGRPC(n.grpc)
	}
	healthpb.RegisterHealthServer(n.grpc, hs)
	reflection.Register(n.grpc)
	lis, err := net.Listen("tcp", o.grpcAddr)
	if err != nil {
		return fmt.Errorf("gateway gRPC: %w", err)
	}
	n.grpcAddr = lis.Addr().String()
	go func() {
		if err := n.grpc.Serve(lis); err != nil {
			g.log.Error("gateway gRPC server stopped", "err", err)
		}
	}()
	g.log.Info("gateway gRPC listening (consent, access log)", "addr", n.grpcAddr)
	return nil
}

// stop drains in order: no new queries, in-flight ones finish (and are
// audited), the audit log publishes its checkpoint, then connections close.
func (n *gatewayNode) stop(ctx context.Context) error {
	var errs []error
	if n.gw != nil {
		errs = append(errs, n.gw.Stop(ctx))
	}
	if n.srv != nil {
		errs = append(errs, n.srv.Shutdown(ctx))
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

func (n *gatewayNode) close() {
	if n.lis != nil {
		_ = n.lis.Close()
	}
	if n.consent != nil && n.consent.Close != nil {
		n.consent.Close()
	}
	if n.audit != nil && n.audit.Close != nil {
		_ = n.audit.Close(context.Background())
	}
	if n.nc != nil {
		_ = n.nc.Drain()
	}
	if n.src != nil {
		_ = n.src.Close()
	}
}
