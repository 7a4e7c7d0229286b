package process

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/bus/federation"

	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/consent/service"
)

// GatewayConsentKeys loads the public keys a gateway verifies tokens with:
// the JWKS at path (default <certs>/consent-jwks.json). Key material that
// holds a private key is refused (consent.ErrPrivateKey): the gateway never
// loads the signing key.
func GatewayConsentKeys(g *Env, path string) (*consent.KeySet, string, error) {
	if path == "" {
		path = consent.JWKSPath(g.CertsDir)
	}
	ks, err := consent.LoadJWKS(path)
	return ks, path, err
}

// ConsentNode is a running consent service (gateway/consent/service).
type ConsentNode = service.Service

// ConsentOptions are the consent service's own settings.
type ConsentOptions struct {
	// AuditAPIPrefix reaches the audit streams when the NATS server keeps
	// them in their own account (as the gateway's --audit-api-prefix).
	AuditAPIPrefix string
	// GovernancePub is the governance public key the federation versions
	// are verified with (default <certs>/governance/governance.pub).
	GovernancePub string
}

// StartConsentService runs the consent service under its own identity,
// with the signing keys in --certs. The consent buckets must exist. Its own
// audit log (the transitions it stores: expired, used up) has its
// checkpoint key in <certs>/audit and, with --data, its trusted checkpoint
// in <data>/audit/consent.checkpoint.
func StartConsentService(ctx context.Context, g *Env, opts ...ConsentOptions) (*ConsentNode, error) {
	var o ConsentOptions
	for _, v := range opts {
		o = v
	}
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	// The signed federation versions, verified with the governance key, as
	// the gateway follows them: the service does not start without them.
	pubPath := o.GovernancePub
	if pubPath == "" {
		pubPath = federation.GovernancePubPath(g.CertsDir)
	}
	pub, err := federation.LoadGovernancePub(pubPath)
	if err != nil {
		return nil, fmt.Errorf("the governance public key that verifies federation versions (--governance-pub; jisr certs init writes a dev one): %w", err)
	}
	nc, src, err := g.Connect(ctx, "consent")
	if err != nil {
		return nil, err
	}
	cfg := service.Config{Federation: fed, CertsDir: g.CertsDir, Conn: nc, Source: src, Log: g.Log,
		AuditKeyDir: AuditKeyDir(g.CertsDir), AuditAPIPrefix: o.AuditAPIPrefix,
		Governance: []ed25519.PublicKey{pub}}
	if g.DataDir != "" {
		cfg.TrustedCheckpoint = TrustedCheckpointPath(g.DataDir, consent.AuditLogID)
	}
	return service.Start(ctx, cfg)
}

// ConsentService builds the consent service from the certs directory,
// connected to NATS unless offline.
func (g *Env) ConsentService(ctx context.Context, offline bool) (*consent.Service, func(), error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, nil, err
	}
	keys, err := consent.LoadKeys(g.CertsDir)
	if err != nil {
		return nil, nil, err
	}
	svc := &consent.Service{Issuer: consent.NewIssuer(keys, fed.ID("consent")), Keys: keys, Federation: fed, Log: g.Log}
	if offline {
		return svc, func() {}, nil
	}
	nc, src, err := g.Connect(ctx, "consent", nats.MaxReconnects(0))
	if err != nil {
		return nil, nil, fmt.Errorf("%w (use --offline to mint without recording)", err)
	}
	if svc.Store, err = consent.OpenStore(ctx, nc, consent.WithStoreLogger(g.Log)); err != nil {
		nc.Close()
		src.Close()
		return nil, nil, err
	}
	return svc, func() { nc.Drain(); src.Close() }, nil
}
