package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/node"
)

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
			if err := o.skip(skip); err != nil {
				return err
			}
			return runGateway(cmd.Context(), g, o)
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
	g.audit.register(cmd)
	return cmd
}

// runGateway runs a gateway replica until ctx ends, then drains it.
func runGateway(ctx context.Context, g *globals, o gatewayOptions) error {
	if !o.unsafe.SkipConsent {
		if _, _, err := gatewayConsentKeys(g, o.consentJWKS); err != nil {
			return fmt.Errorf("consent keys: %w", err)
		}
	}
	stopTelemetry, err := g.startTelemetry(ctx, "gateway", true)
	if err != nil {
		return err
	}
	defer stopTelemetry()
	n, err := startGateway(ctx, g, o)
	if err != nil {
		return err
	}
	return untilDone(ctx, 15*time.Second, func(sctx context.Context) error {
		g.log.Info("shutting down the gateway")
		return n.Stop(sctx)
	})
}

// skip switches off the safeguards --unsafe-skip names.
func (o *gatewayOptions) skip(names []string) error {
	for _, s := range names {
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
	return nil
}

// gatewayNode is a running gateway replica (gateway/node).
type gatewayNode = node.Node

// startGateway builds the node's Config from the flags and globals: the
// federation, the citizen key, the gateway's NATS connection and SVID, the
// HTTP side's TLS, the sign-in, the audit settings; then starts it.
func startGateway(ctx context.Context, g *globals, o gatewayOptions) (*gatewayNode, error) {
	fed, err := g.federation()
	if err != nil {
		return nil, err
	}
	keyer, err := g.keyer()
	if err != nil {
		return nil, err
	}
	settings, err := g.audit.settings()
	if err != nil && !o.unsafe.SkipAudit {
		return nil, fmt.Errorf("audit: %w", err)
	}
	nc, src, err := g.connect(ctx, "gateway")
	if err != nil {
		return nil, err
	}
	authz := tlsconfig.AuthorizeMemberOf(fed.TrustDomain)
	opts, err := gatewayNodeOptions(g, o, src, authz)
	if err != nil {
		nc.Close()
		src.Close()
		return nil, err
	}
	httpTLSConf, err := httpTLS(o.httpAddr, o.signin, src, authz)
	if err != nil {
		nc.Close()
		src.Close()
		return nil, err
	}
	jwks := o.consentJWKS
	if jwks == "" {
		jwks = consent.JWKSPath(g.certsDir)
	}
	n, err := node.New(node.Config{
		Federation: fed, Keyer: keyer, Conn: nc, Source: src, Log: g.log, Instance: o.instance,
		HTTPAddr: o.httpAddr, HTTPTLS: httpTLSConf, ConsentJWKS: jwks,
		SignIn: func(addr string, secure bool) (*citizen.Auth, error) {
			return newCitizenAuth(g, addr, secure, o.signin)
		},
		Audit: node.AuditConfig{
			KeyDir: auditKeyDir(g.certsDir), Dir: filepath.Join(g.dataDir, "audit"),
			TrustedCheckpoint: trustedCheckpointPath(g.dataDir, o.instance),
			Stream:            settings.stream, CheckpointEvery: settings.checkpointEvery,
		},
	}, opts...)
	if err != nil {
		nc.Close()
		src.Close()
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// gatewayNodeOptions are the node's optional settings from the flags and
// the process's telemetry.
func gatewayNodeOptions(g *globals, o gatewayOptions, src svid.Source, authz tlsconfig.Authorizer) ([]node.Option, error) {
	opts := []node.Option{node.WithMetrics(g.registry()), node.WithUnsafe(o.unsafe), node.WithHTTPReadTimeout(o.signin.readTimeout)}
	if mem := g.traces(); mem != nil {
		opts = append(opts, node.WithTraces(mem.Handler()))
	}
	if o.pprof {
		opts = append(opts, node.WithPprof())
	}
	if o.grpcAddr != "" {
		creds, err := loopback.ServerCredentials(o.grpcAddr, svid.ServerTLS(src, authz))
		if err != nil {
			return nil, err
		}
		opts = append(opts, node.WithGRPC(o.grpcAddr, append(creds, g.grpcServerOptions("gateway", "")...)...))
	}
	return opts, nil
}
