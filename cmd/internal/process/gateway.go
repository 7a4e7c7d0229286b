package process

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/node"
)

// GatewayConnName prefixes the NATS connection name of a gateway replica
// (jisr-gateway/<instance>).
const GatewayConnName = "jisr-gateway/"

type GatewayOptions struct {
	HTTPAddr string
	GRPCAddr string
	Instance string
	// AuditAPIPrefix: see node.AuditConfig.APIPrefix.
	AuditAPIPrefix string
	Unsafe         gateway.Safeguards
	Pprof          bool
	// consentJWKS is the consent service's public JWKS (default
	// <certs>/consent-jwks.json); a private key there stops the gateway.
	ConsentJWKS string
	SignIn      SignInOptions
}

// RunGateway runs a gateway replica until ctx ends, then drains it.
func RunGateway(ctx context.Context, g *Env, o GatewayOptions) error {
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
