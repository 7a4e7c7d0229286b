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

type GatewayOptions struct {
	HTTPAddr string
	GRPCAddr string
	Instance string
	Unsafe   gateway.Safeguards
	Pprof    bool
	// consentJWKS is the consent service's public JWKS (default
	// <certs>/consent-jwks.json); a private key there stops the gateway.
	ConsentJWKS string
	SignIn      SignInOptions
}

func newGatewayCmd(g *globals) *cobra.Command {
	var o GatewayOptions
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
			if err := o.Skip(skip); err != nil {
				return err
			}
			return runGateway(cmd.Context(), g, o)
		},
	}
	cmd.Flags().StringVar(&o.HTTPAddr, "http", "127.0.0.1:8080", "HTTP listen address (health, metrics, consent, access log)")
	cmd.Flags().StringVar(&o.GRPCAddr, "grpc", "127.0.0.1:7000", "gRPC listen address of the consent and access-log APIs (plaintext on loopback only, else mTLS)")
	cmd.Flags().StringVar(&o.ConsentJWKS, "consent-jwks", "", "the consent service's public keys, a JWKS file reloaded when it changes (default <certs>/consent-jwks.json); the gateway refuses to start if it holds a private key")
	cmd.Flags().StringVar(&o.Instance, "instance", "gw-1", "this replica's name: names its audit log, so keep it stable across restarts")
	cmd.Flags().StringSliceVar(&skip, "unsafe-skip", nil, "BENCHMARK ONLY: switch off safeguards (consent, audit, minimise) to measure their cost")
	_ = cmd.Flags().MarkHidden("unsafe-skip")
	cmd.Flags().BoolVar(&o.Pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the HTTP port (profiling only)")
	_ = cmd.Flags().MarkHidden("pprof")
	o.SignIn.flags(cmd)
	g.Audit.register(cmd)
	return cmd
}

// runGateway runs a gateway replica until ctx ends, then drains it.
func runGateway(ctx context.Context, g *globals, o GatewayOptions) error {
	if !o.Unsafe.SkipConsent {
		if _, _, err := GatewayConsentKeys(g, o.ConsentJWKS); err != nil {
			return fmt.Errorf("consent keys: %w", err)
		}
	}
	stopTelemetry, err := g.StartTelemetry(ctx, "gateway", true)
	if err != nil {
		return err
	}
	defer stopTelemetry()
	n, err := StartGateway(ctx, g, o)
	if err != nil {
		return err
	}
	return UntilDone(ctx, 15*time.Second, func(sctx context.Context) error {
		g.Log.Info("shutting down the gateway")
		return n.Stop(sctx)
	})
}

// skip switches off the safeguards --unsafe-skip names.
func (o *GatewayOptions) Skip(names []string) error {
	for _, s := range names {
		switch s {
		case "consent":
			o.Unsafe.SkipConsent = true
		case "audit":
			o.Unsafe.SkipAudit = true
		case "minimise":
			o.Unsafe.SkipMinimise = true
		default:
			return UsageError{fmt.Errorf("--unsafe-skip %q: one of consent, audit, minimise", s)}
		}
	}
	return nil
}

// GatewayNode is a running gateway replica (gateway/node).
type GatewayNode = node.Node

// StartGateway builds the node's Config from the flags and globals: the
// federation, the citizen key, the gateway's NATS connection and SVID, the
// HTTP side's TLS, the sign-in, the audit settings; then starts it.
func StartGateway(ctx context.Context, g *globals, o GatewayOptions) (*GatewayNode, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	keyer, err := g.Keyer()
	if err != nil {
		return nil, err
	}
	settings, err := g.Audit.Settings()
	if err != nil && !o.Unsafe.SkipAudit {
		return nil, fmt.Errorf("audit: %w", err)
	}
	nc, src, err := g.Connect(ctx, "gateway")
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
	httpTLSConf, err := HTTPTLS(o.HTTPAddr, o.SignIn, src, authz)
	if err != nil {
		nc.Close()
		src.Close()
		return nil, err
	}
	jwks := o.ConsentJWKS
	if jwks == "" {
		jwks = consent.JWKSPath(g.CertsDir)
	}
	n, err := node.New(node.Config{
		Federation: fed, Keyer: keyer, Conn: nc, Source: src, Log: g.Log, Instance: o.Instance,
		HTTPAddr: o.HTTPAddr, HTTPTLS: httpTLSConf, ConsentJWKS: jwks,
		SignIn: func(addr string, secure bool) (*citizen.Auth, error) {
			return NewCitizenAuth(g, addr, secure, o.SignIn)
		},
		Audit: node.AuditConfig{
			KeyDir: AuditKeyDir(g.CertsDir), Dir: filepath.Join(g.DataDir, "audit"),
			TrustedCheckpoint: TrustedCheckpointPath(g.DataDir, o.Instance),
			Stream:            settings.Stream, CheckpointEvery: settings.CheckpointEvery,
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
func gatewayNodeOptions(g *globals, o GatewayOptions, src svid.Source, authz tlsconfig.Authorizer) ([]node.Option, error) {
	opts := []node.Option{node.WithMetrics(g.Registry()), node.WithUnsafe(o.Unsafe), node.WithHTTPReadTimeout(o.SignIn.ReadTimeout)}
	if mem := g.Traces(); mem != nil {
		opts = append(opts, node.WithTraces(mem.Handler()))
	}
	if o.Pprof {
		opts = append(opts, node.WithPprof())
	}
	if o.GRPCAddr != "" {
		creds, err := loopback.ServerCredentials(o.GRPCAddr, svid.ServerTLS(src, authz))
		if err != nil {
			return nil, err
		}
		opts = append(opts, node.WithGRPC(o.GRPCAddr, append(creds, g.GRPCServerOptions("gateway", "")...)...))
	}
	return opts, nil
}
