package node

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/consent"
)

// consentParts is the gateway's side of consent: a verifier built from the
// consent service's public keys only, and the citizen-facing consent API,
// which asks the consent service (over NATS) to grant, list and revoke.
type consentParts struct {
	Verifier gateway.ConsentVerifier
	Service  *consent.Service // the API's face: Backend is a consent.Client, no Issuer
	Routes   map[string]http.Handler
	Close    func()
	// Store is the consent state the verifier reads (revocations, pauses,
	// use counts) and the citizens' recorded grants: event rules on consent
	// read their standing grants from it.
	Store *consent.Store
}

// JWKSReload is how often a gateway looks for a changed consent JWKS.
const JWKSReload = 10 * time.Second

// startConsent opens the consent state (the buckets `jisr nats init`
// created) with the gateway's connection, watches revocations and the
// public keys, and builds the verifier and the consent API's face. The
// gateway holds no consent signing key and no consent SVID.
func startConsent(ctx context.Context, cfg Config, reg prometheus.Registerer) (*consentParts, error) {
	keys, err := consent.LoadJWKS(cfg.ConsentJWKS)
	if err != nil {
		return nil, err
	}
	store, err := consent.OpenStore(ctx, cfg.Conn, consent.WithStoreLogger(cfg.Log))
	if err != nil {
		return nil, err
	}
	lag := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "jisr", Subsystem: "consent", Name: "revocation_lag_seconds",
		Help:    "Time from a revocation's write in the bucket to this gateway replica refusing the token.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	store.OnRevocation = func(d time.Duration) { lag.Observe(d.Seconds()) }
	tampering := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "jisr", Subsystem: "consent", Name: "tampering_total",
		Help: "Signs of tampering with the consent state: revocations deleted or purged, buckets replaced (see the ERROR log).",
	})
	store.OnTampering = tampering.Inc
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if err := store.WatchRevocations(wctx); err != nil {
		cancel()
		return nil, err
	}
	stopWatch := consent.WatchJWKS(cfg.ConsentJWKS, keys, JWKSReload, cfg.Log)
	verifier, err := consent.NewVerifier(consent.VerifierConfig{Keys: keys, Issuer: cfg.Federation.ID("consent")},
		consent.WithRevocations(store), consent.WithUsage(store))
	if err != nil {
		cancel()
		stopWatch()
		return nil, err
	}
	p := &consentParts{Verifier: verifier, Store: store, Close: func() { cancel(); stopWatch() }}
	for _, c := range append(cacheMetrics(verifier), lag, tampering) {
		if err := reg.Register(c); err != nil {
			p.Close()
			return nil, err
		}
	}
	p.Service = &consent.Service{Backend: consent.NewClient(cfg.Conn), Keys: keys, Federation: cfg.Federation, Log: cfg.Log}
	p.Routes = p.Service.Routes(nil)
	return p, nil
}

// cacheMetrics count the verified-token cache's look-ups, hits and misses.
func cacheMetrics(v *consent.Verifier) []prometheus.Collector {
	lookups := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "jisr", Subsystem: "consent", Name: "token_cache_lookups_total",
		Help: "Consent tokens looked up in the verified-token cache.",
	}, func() float64 { calls, _ := v.CacheStats(); return float64(calls) })
	hits := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "jisr", Subsystem: "consent", Name: "token_cache_hits_total",
		Help: "Look-ups answered from the cache (no signature verification); hits/lookups is the hit ratio.",
	}, func() float64 { _, h := v.CacheStats(); return float64(h) })
	misses := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "jisr", Subsystem: "consent", Name: "token_cache_misses_total",
		Help: "Look-ups the cache could not answer: the token's signature and claims were verified in full.",
	}, func() float64 { calls, h := v.CacheStats(); return float64(max(calls-h, 0)) })
	return []prometheus.Collector{lookups, hits, misses}
}
