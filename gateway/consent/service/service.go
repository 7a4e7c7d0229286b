// Package service runs the consent service as a process hosts it: the only
// holder of the signing keys, under its own NATS identity, answering the
// grant/list/revoke API that gateways forward, and keeping the public JWKS
// file current for the gateways.
package service

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/fedwatch"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/consent"
)

// Config holds what the consent service cannot run without.
type Config struct {
	Federation *federation.Federation
	// CertsDir holds the signing keys (<certs>/consent/) and the public
	// JWKS written for the gateways (<certs>/consent-jwks.json).
	CertsDir string
	// Conn is the consent service's NATS connection and Source its SVID
	// source; the service owns both from Start on (Stop closes them).
	Conn   *nats.Conn
	Source svid.Source
	Log    *slog.Logger
	// AuditKeyDir holds the checkpoint key of the consent service's audit
	// log (consent.AuditLogID; default <certs>/audit, where the gateways'
	// are), AuditAPIPrefix reaches the audit streams when they live in their
	// own account, and TrustedCheckpoint, when set, keeps the log's last
	// checkpoint outside NATS (audit.WithTrustedCheckpoint).
	AuditKeyDir, AuditAPIPrefix, TrustedCheckpoint string
	// Governance, when set, are the governance keys the signed federation
	// versions are verified with: the service applies the published version
	// before it answers, then every newer one without a restart
	// (bus/fedwatch), read by direct get every FederationPoll (default
	// FederationPoll). The bucket must exist: the service does not start
	// without it. Registerer, when set, gets the watch's metrics.
	Governance     []ed25519.PublicKey
	FederationPoll time.Duration
	Registerer     prometheus.Registerer
}

// FederationPoll is how often the consent service reads the signed
// federation bundle: its NATS user reads it by direct get, as the members
// do, and creates no consumer.
var FederationPoll = 2 * time.Second

// Option sets an optional setting.
type Option func(*options)

type options struct {
	rewrite, lease, retry time.Duration
	onTransition          func(consent.ConsentRequest)
}

// WithSweeperLease sets the length of the sweeper's lease (default 15s): how
// long after a replica holding it dies another one takes over.
func WithSweeperLease(d time.Duration) Option { return func(o *options) { o.lease = d } }

// WithSweeperRetry sets how soon a failed transition or audit append is
// retried (default 1s).
func WithSweeperRetry(d time.Duration) Option { return func(o *options) { o.retry = d } }

// OnTransition is told of each transition the sweeper stored and audited
// (EXPIRED, USED_UP).
func OnTransition(fn func(consent.ConsentRequest)) Option {
	return func(o *options) { o.onTransition = fn }
}

// WithJWKSRewrite sets how often the public JWKS is rewritten (default a
// minute), so that a retired key leaves it and a rotation made elsewhere is
// published.
func WithJWKSRewrite(d time.Duration) Option { return func(o *options) { o.rewrite = d } }

// Service is a running consent service.
type Service struct {
	// Service is the consent API with its issuer and store.
	Service   *consent.Service
	cfg       Config
	sub       *bus.Responder
	cancel    context.CancelFunc
	done      chan struct{}
	sweepDone chan struct{}
	watch     *fedwatch.Watcher
}

// Start loads the signing keys (refusing key files open to others),
// publishes the public JWKS, and answers the consent API. The consent
// buckets must exist. On error the connection and source are closed.
func Start(ctx context.Context, cfg Config, opts ...Option) (_ *Service, err error) {
	if cfg.Federation == nil || cfg.Conn == nil || cfg.Log == nil || cfg.CertsDir == "" {
		return nil, errors.New("consent service: Federation, CertsDir, Conn and Log are required")
	}
	o := options{rewrite: time.Minute, lease: 15 * time.Second, retry: time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.AuditKeyDir == "" {
		cfg.AuditKeyDir = filepath.Join(cfg.CertsDir, "audit")
	}
	s := &Service{cfg: cfg}
	defer func() {
		if err != nil {
			s.closeConn()
		}
	}()
	keys, err := consent.LoadKeys(cfg.CertsDir)
	if err != nil {
		return nil, err
	}
	jwks := consent.JWKSPath(cfg.CertsDir)
	if err := consent.WriteJWKS(keys, jwks, time.Now()); err != nil {
		return nil, err
	}
	store, err := consent.OpenStore(ctx, cfg.Conn, consent.WithStoreLogger(cfg.Log))
	if err != nil {
		return nil, fmt.Errorf("%w (the consent buckets are created before the consent service starts)", err)
	}
	if err := store.OpenRequests(ctx); err != nil {
		return nil, fmt.Errorf("%w (the consent buckets are created before the consent service starts)", err)
	}
	// The audit log's checkpoint key, now: gateways starting next load the
	// logs' public keys to index them.
	if _, _, err := checkpoint.EnsureKey(cfg.AuditKeyDir, consent.AuditLogID, checkpoint.Origin(cfg.Federation.TrustDomain.Name(), consent.AuditLogID)); err != nil {
		return nil, fmt.Errorf("consent service: audit checkpoint key: %w", err)
	}
	s.Service = &consent.Service{Issuer: consent.NewIssuer(keys, cfg.Federation.ID("consent")), Store: store, Keys: keys, Federation: cfg.Federation, Log: cfg.Log}
	if len(cfg.Governance) > 0 {
		if err := s.watchFederation(ctx); err != nil {
			return nil, err
		}
	}
	if s.sub, err = consent.Serve(cfg.Conn, s.Service); err != nil {
		s.stopWatch()
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.done, s.sweepDone = cancel, make(chan struct{}), make(chan struct{})
	go s.rewriteJWKS(rctx, jwks, o.rewrite)
	// EXPIRED and USED_UP, stored and audited (by the lease holder).
	go s.sweep(rctx, o)
	cfg.Log.Info("consent service ready", "subject", consent.SubjectGrant, "jwks", jwks, "kid", keys.Signing().ID)
	return s, nil
}

// watchFederation applies the published federation version, then every
// newer one, to the consent API: a member a version adds can be granted
// consent, a rule it removes lets no request be approved, without a
// restart. A version with a bad signature, or not newer, is refused and
// logged (fedwatch), and the running one stays.
func (s *Service) watchFederation(ctx context.Context) error {
	js, err := jetstream.New(s.cfg.Conn)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, subject.FederationBucket)
	if err != nil {
		return fmt.Errorf("consent service: federation watch: the bucket %s (jisr nats init creates it): %w", subject.FederationBucket, err)
	}
	poll := s.cfg.FederationPoll
	if poll <= 0 {
		poll = FederationPoll
	}
	td := s.cfg.Federation.TrustDomain
	s.watch, err = fedwatch.Start(ctx, fedwatch.Config{
		Bucket: kv, Trusted: s.cfg.Governance, Component: "consent", Poll: poll, Registerer: s.cfg.Registerer,
		Log: s.cfg.Log.With("component", "consent"),
		Apply: func(_ *federation.Bundle, fed *federation.Federation) error {
			if fed.TrustDomain != td {
				return fmt.Errorf("consent service: the trust domain cannot change at run time (%s → %s)", td, fed.TrustDomain)
			}
			s.Service.SetFederation(fed)
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("consent service: %w", err)
	}
	return nil
}

func (s *Service) stopWatch() {
	if s.watch != nil {
		s.watch.Stop()
		s.watch = nil
	}
}

// Ready reports whether the service can decide: with a federation watch,
// the watch must still run (else new versions are no longer applied).
func (s *Service) Ready() error {
	if s.cfg.Governance != nil && (s.watch == nil || !s.watch.Watching()) {
		return errors.New("consent service: the federation watch stopped: new versions are no longer applied")
	}
	return nil
}

// FederationVersion is the federation version in force (0: the file the
// service started with).
func (s *Service) FederationVersion() uint64 {
	if s.watch == nil {
		return 0
	}
	return s.watch.Version()
}

// FederationRefused is how many published versions the watch refused for
// reason (fedwatch.Reason*; 0 without a watch).
func (s *Service) FederationRefused(reason string) float64 {
	if s.watch == nil {
		return 0
	}
	return s.watch.Refused(reason)
}

// rewriteJWKS reloads the keys from disk and rewrites the JWKS every
// period: a rotate-key run elsewhere, or a key past its retirement, changes
// what is published.
func (s *Service) rewriteJWKS(ctx context.Context, jwks string, every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ks, err := consent.LoadKeys(s.cfg.CertsDir); err != nil {
			s.cfg.Log.Error("consent keys unreadable; the JWKS is not rewritten", "err", err)
		} else if err := consent.WriteJWKS(ks, jwks, time.Now()); err != nil {
			s.cfg.Log.Error("consent JWKS not written", "path", jwks, "err", err)
		}
	}
}

// Stop stops answering and closes the connection.
func (s *Service) Stop() {
	s.stopWatch()
	s.cancel()
	<-s.done
	<-s.sweepDone
	_ = s.sub.Drain()
	s.closeConn()
}

func (s *Service) closeConn() {
	_ = s.cfg.Conn.Drain()
	if s.cfg.Source != nil {
		_ = s.cfg.Source.Close()
	}
}
