package process

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/console"
	"github.com/jisr-bus/jisr/gateway/node"
	"github.com/jisr-bus/jisr/gateway/notify"
)

// GatewayConnName prefixes the NATS connection name of a gateway replica
// (jisr-gateway/<instance>).
const GatewayConnName = "jisr-gateway/"

type GatewayOptions struct {
	HTTPAddr string
	GRPCAddr string
	// ConsoleAddr is where the auditor's console listens (mTLS; "" for none).
	ConsoleAddr string
	Instance    string
	// AuditAPIPrefix: see node.AuditConfig.APIPrefix.
	AuditAPIPrefix string
	Unsafe         gateway.Safeguards
	Pprof          bool
	// NATSConns is how many NATS connections the gateway takes queries and
	// life events on and stores life events through (0: DefaultNATSConns; see
	// gateway.Config.QueryConns, events.Config.MoreConns).
	NATSConns int
	// consentJWKS is the consent service's public JWKS (default
	// <certs>/consent-jwks.json); a private key there stops the gateway.
	ConsentJWKS string
	SignIn      SignInOptions
	// ConsoleSignIn: OIDC sign-in to the console with a role (default: none).
	ConsoleSignIn ConsoleSignInOptions
	// NotifyWebhook, when set, receives each citizen notification (signed
	// with the secret in NotifySecretFile); otherwise they are logged.
	NotifyWebhook, NotifySecretFile string
	// GovernancePub is the governance public key the federation versions are
	// verified with (default <certs>/governance/governance.pub).
	GovernancePub string
}

// RunGateway runs a gateway replica until ctx ends, then drains it.
func RunGateway(ctx context.Context, g *Env, o GatewayOptions) error {
	if !o.Unsafe.SkipConsent {
		if _, _, err := GatewayConsentKeys(g, o.ConsentJWKS); err != nil {
			return fmt.Errorf("consent keys: %w", err)
		}
	}
	stopTelemetry, err := g.StartTelemetry(ctx, "gateway", true, telemetry.WithInstanceID(o.Instance))
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

// Skip switches off the safeguards --unsafe-skip names.
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

// StartGateway builds the node's Config from the flags and Env: the
// federation, the citizen key, the gateway's NATS connection and SVID, the
// HTTP side's TLS, the sign-in, the audit settings; then starts it.
func StartGateway(ctx context.Context, g *Env, o GatewayOptions) (*GatewayNode, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	sets, err := g.DescriptorSets()
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
	// The connection's name carries the replica's instance, so that the
	// operator sees each replica in the servers' monitoring (jisr status).
	nc, src, err := g.Connect(ctx, "gateway", nats.Name(GatewayConnName+o.Instance))
	if err != nil {
		return nil, err
	}
	authz := tlsconfig.AuthorizeMemberOf(fed.TrustDomain)
	opts, err := gatewayNodeOptions(g, o, src, authz)
	if err == nil {
		var extra []*nats.Conn
		extra, err = queryConns(ctx, g, "gateway", o.NATSConns, fed.ID("nats"), src)
		opts = append(opts, node.WithQueryConns(extra...))
	}
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
	notifier, err := gatewayNotifier(o)
	if err != nil {
		nc.Close()
		src.Close()
		return nil, err
	}
	n, err := node.New(node.Config{
		Notifier:   notifier,
		Federation: fed, DescriptorSets: sets, Keyer: keyer, Conn: nc, Source: src, Log: g.Log, Instance: o.Instance,
		HTTPAddr: o.HTTPAddr, HTTPTLS: httpTLSConf, ConsentJWKS: jwks,
		SignIn: func(addr string, secure bool) (*citizen.Auth, error) {
			return NewCitizenAuth(g, addr, secure, o.SignIn)
		},
		Audit: node.AuditConfig{
			KeyDir: AuditKeyDir(g.CertsDir), Dir: filepath.Join(g.DataDir, "audit"),
			TrustedCheckpoint: TrustedCheckpointPath(g.DataDir, o.Instance),
			Stream:            settings.Stream, CheckpointEvery: settings.CheckpointEvery,
			APIPrefix: o.AuditAPIPrefix,
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
func gatewayNodeOptions(g *Env, o GatewayOptions, src svid.Source, authz tlsconfig.Authorizer) ([]node.Option, error) {
	opts := []node.Option{node.WithMetrics(g.Registry()), node.WithUnsafe(o.Unsafe), node.WithHTTPReadTimeout(o.SignIn.ReadTimeout),
		node.WithTracerProvider(g.TracerProviderFor("gateway", "", o.Instance))}
	// The signed federation versions, verified with the governance key.
	pubPath := o.GovernancePub
	if pubPath == "" {
		pubPath = federation.GovernancePubPath(g.CertsDir)
	}
	pub, err := federation.LoadGovernancePub(pubPath)
	if err != nil {
		return nil, fmt.Errorf("the governance public key that verifies federation versions (--governance-pub; jisr certs init writes a dev one): %w", err)
	}
	opts = append(opts, node.WithFederationWatch(pub))
	if mem := g.Traces(); mem != nil {
		opts = append(opts, node.WithTraces(mem))
	}
	if b, err := console.ParseTracesFrom(g.TracesFrom); err != nil {
		return nil, UsageError{err}
	} else if b != nil {
		opts = append(opts, node.WithTraceBackend(b))
	}
	if o.ConsoleAddr != "" {
		// The console authenticates the auditor by its client certificate:
		// any SVID of the trust domain completes the handshake, and the
		// console answers the auditor's only.
		c := svid.ServerTLS(src, authz)
		c.MinVersion = tls.VersionTLS13
		opts = append(opts, node.WithConsole(o.ConsoleAddr, c))
		si, err := consoleSignInOption(g, o.ConsoleSignIn)
		if err != nil {
			return nil, err
		}
		if si != nil {
			opts = append(opts, si)
		}
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

// gatewayNotifier is the webhook of --notify-webhook, or nil (the log).
func gatewayNotifier(o GatewayOptions) (notify.Notifier, error) {
	if o.NotifyWebhook == "" {
		return nil, nil
	}
	u, err := url.Parse(o.NotifyWebhook)
	if err != nil || u.Host == "" || !loopback.SecureURL(u) {
		return nil, errors.New("--notify-webhook is an https URL (http only on loopback)")
	}
	if o.NotifySecretFile == "" {
		return nil, errors.New("--notify-webhook needs --notify-secret-file (the key that signs each notification)")
	}
	secret, err := os.ReadFile(o.NotifySecretFile)
	if err != nil {
		return nil, err
	}
	secret = bytes.TrimSpace(secret)
	if len(secret) < 16 {
		return nil, errors.New("the notification secret is shorter than 16 bytes")
	}
	return notify.Webhook{URL: o.NotifyWebhook, Secret: secret}, nil
}

// queryConns dials further connections of identity with src: n in all
// with the main one (0: DefaultNATSConns).
func queryConns(ctx context.Context, g *Env, identity string, n int, serverID spiffeid.ID, src svid.Source) ([]*nats.Conn, error) {
	if n <= 0 {
		n = DefaultNATSConns()
	}
	var out []*nats.Conn
	for range n - 1 {
		nc, err := bus.Connect(ctx, bus.Config{URL: g.NATSURL, Identity: identity, Source: src, ServerID: serverID}, bus.WithLogger(g.Log))
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, err
		}
		out = append(out, nc)
	}
	return out, nil
}

// DefaultNATSConns is how many NATS connections the gateway and the
// adapters use by default: one per 4 cores (GOMAXPROCS), from 1 to 4. On 2
// cores a second connection cost 10–20 % more CPU per query (each one
// flushes fewer messages per write) for a lock that only contends when
// many cores publish at once.
func DefaultNATSConns() int { return min(max(runtime.GOMAXPROCS(0)/4, 1), 4) }
