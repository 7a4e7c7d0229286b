package main

import (
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/spf13/cobra"
)

func newGatewayCmd(g *process.Env) *cobra.Command {
	var o process.GatewayOptions
	var skip []string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the gateway: consent, access rules, audit and minimisation for every query",
		Long: `Run one gateway replica. It subscribes to every query subject (jisr.q.>) in a
queue group, so several replicas share the load; each keeps its own audit log.

HTTP (--http): /healthz, /readyz, /metrics, the consent JWKS and APIs, the
citizen's access log, and GET /v1/traces/{trace-id} (recent spans kept in
memory, see --trace-memory; the auditor's client certificate only).
--console serves the auditor's console (docs/console.md). Traces go to --otlp or the OTEL_* variables
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
			return process.RunGateway(cmd.Context(), g, o)
		},
	}
	cmd.Flags().StringVar(&o.HTTPAddr, "http", "127.0.0.1:8080", "HTTP listen address (health, metrics, consent, access log)")
	cmd.Flags().StringVar(&o.GRPCAddr, "grpc", "127.0.0.1:7000", "gRPC listen address of the consent and access-log APIs (plaintext on loopback only, else mTLS)")
	cmd.Flags().StringVar(&o.ConsoleAddr, "console", "", "listen address of the auditor's console (HTTPS: the auditor's client certificate, or with --console-oidc-issuer a sign-in with the auditor's role; docs/console.md)")
	cmd.Flags().StringVar(&o.GovernancePub, "governance-pub", "", "the governance public key that verifies the signed federation versions the gateway applies without a restart (default <certs>/governance/governance.pub); the bucket jisr_federation must exist (jisr nats init)")
	cmd.Flags().StringVar(&o.ConsentJWKS, "consent-jwks", "", "the consent service's public keys, a JWKS file reloaded when it changes (default <certs>/consent-jwks.json); the gateway refuses to start if it holds a private key")
	cmd.Flags().StringVar(&o.NotifyWebhook, "notify-webhook", "", "POST each citizen notification (an access to their data) as signed JSON to this https URL (an SMS or e-mail gateway; see docs/citizen.md); default: log them")
	cmd.Flags().StringVar(&o.NotifySecretFile, "notify-secret-file", "", "file holding the key (≥ 16 bytes) that signs each webhook notification (header Jisr-Signature)")
	cmd.Flags().StringVar(&o.AuditAPIPrefix, "audit-api-prefix", "", `where the audit streams' JetStream API is seen when the NATS server keeps them in their own account ("$JS.AUDIT.API" with jisr nats-config --audit-account; see docs/audit.md)`)
	cmd.Flags().IntVar(&o.NATSConns, "nats-conns", 0, "NATS connections the gateway takes queries and life events on, in one queue group, and stores life events through, by citizen (0: one per 4 cores, from 1 to 4): each connection serialises its own reads and writes")
	cmd.Flags().StringVar(&o.Instance, "instance", "gw-1", "this replica's name: names its audit log, so keep it stable across restarts")
	cmd.Flags().StringSliceVar(&skip, "unsafe-skip", nil, "BENCHMARK ONLY: switch off safeguards (consent, audit, minimise) to measure their cost")
	_ = cmd.Flags().MarkHidden("unsafe-skip")
	cmd.Flags().BoolVar(&o.Pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the HTTP port (profiling only)")
	_ = cmd.Flags().MarkHidden("pprof")
	signinFlags(cmd, &o.SignIn)
	consoleSignInFlags(cmd, &o.ConsoleSignIn)
	auditFlags(cmd, &g.Audit)
	tracesFromFlag(cmd, g)
	return cmd
}
