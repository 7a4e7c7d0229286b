package process

import (
	"context"
	"crypto/ed25519"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/fedwatch"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// NATSWatchRetry is how often a standalone NATS server reads the signed
// federation versions, and tries again to open their bucket (before `jisr
// nats init` created it).
const NATSWatchRetry = 2 * time.Second

// WatchFederation makes a standalone NATS server (jisr nats-server) follow
// the signed federation versions without a restart: as a client of its
// own, with its own SVID (the identity nats, which may read the bundle by
// direct get only, as the members do), it polls the federation bucket and
// puts each newer version whose signature verifies in force
// (natsserver.SetFederation: users and permissions for later connections
// and for those already open). The bucket is created by `jisr nats init`
// after the server starts, so until it can be opened the watch tries again
// every NATSWatchRetry, and says so once. Without the governance public key
// (pubPath, default <certs>/governance/governance.pub) the server keeps the
// federation file it started with, and says so. stop ends the watch.
func WatchFederation(ctx context.Context, g *Env, s *natsserver.Server, pubPath string) (stop func()) {
	log := g.Log.With("component", "nats")
	if pubPath == "" {
		pubPath = federation.GovernancePubPath(g.CertsDir)
	}
	pub, err := federation.LoadGovernancePub(pubPath)
	trusted := []ed25519.PublicKey{pub}
	if err != nil {
		log.Warn("not following the signed federation versions: the federation file stays in force until a restart", "err", err)
		return func() {}
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var reg prometheus.Registerer = g.Registry()
		said := false
		for {
			w, done, err := watchOnce(wctx, g, s, trusted, reg)
			if err == nil {
				log.Info("following the signed federation versions", "bucket", subject.FederationBucket)
				<-wctx.Done()
				w.Stop()
				done()
				return
			}
			if wctx.Err() != nil {
				return
			}
			if !said {
				log.Warn("the signed federation versions cannot be read yet (jisr nats init creates their bucket); trying again", "err", err, "every", NATSWatchRetry)
				said = true
			}
			if w != nil { // its metrics were registered: not twice
				reg = nil
			}
			select {
			case <-wctx.Done():
				return
			case <-time.After(NATSWatchRetry):
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// watchOnce connects as the server's own identity, opens the bucket and
// starts the poll; w is non-nil once its metrics are registered.
func watchOnce(ctx context.Context, g *Env, s *natsserver.Server, trusted []ed25519.PublicKey, reg prometheus.Registerer) (*fedwatch.Watcher, func(), error) {
	nc, src, err := g.ConnectURL(ctx, s.ClientURL(), "nats")
	if err != nil {
		return nil, nil, err
	}
	done := func() { nc.Close(); src.Close() }
	js, err := jetstream.New(nc)
	if err != nil {
		done()
		return nil, nil, err
	}
	octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
	kv, err := natsstate.OpenBucket(octx, js, subject.FederationBucket)
	ocancel()
	if err != nil {
		done()
		return nil, nil, err
	}
	w, err := fedwatch.Start(ctx, fedwatch.Config{
		Bucket: kv, Trusted: trusted, Component: "nats", Log: g.Log.With("component", "nats"), Registerer: reg,
		Poll:  NATSWatchRetry,
		Apply: func(_ *federation.Bundle, fed *federation.Federation) error { return s.SetFederation(fed) },
	})
	if err != nil {
		done()
		return w, nil, err
	}
	return w, done, nil
}
