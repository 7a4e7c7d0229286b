// Package node runs one member's adapter as a process hosts it: the adapter
// on the member's NATS connection, its provider side when the member
// provides a service, and its consumer-side gRPC server (plaintext on
// loopback only, else mTLS with the member's SVID).
package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/fedwatch"
	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/services/adapter"
)

// Config holds what an adapter node cannot run without.
type Config struct {
	// Adapter configures the adapter; its Conn and MoreConns, and Source, are the node's
	// from Start on: Stop (or a failed Start) drains and closes them. Its
	// BackendTLS is set from Source when the backend is not on loopback.
	Adapter adapter.Config
	Source  svid.Source
	// Listen is the consumer side's gRPC listen address.
	Listen string
}

// Option sets an optional setting of a node.
type Option func(*options)

type options struct {
	server     []grpc.ServerOption
	tp         trace.TracerProvider
	governance []ed25519.PublicKey
}

// WithFederationWatch applies the signed federation versions published in
// the jisr_federation bucket, verified with these governance keys, without a
// restart (bus/fedwatch, adapter.SetFederation). The bucket must exist: the
// node does not start without it, and it is not ready once the watch stops.
func WithFederationWatch(trusted ...ed25519.PublicKey) Option {
	return func(o *options) { o.governance = trusted }
}

// WithServerOptions adds options to the consumer-side gRPC server.
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.server = append(o.server, opts...) }
}

// WithTracerProvider sends the adapter's bus spans to tp (default: the
// global provider, otel.GetTracerProvider(), as it is when Start is called).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// Node is a running adapter.
type Node struct {
	cfg    Config
	ad     *adapter.Adapter
	watch  *fedwatch.Watcher
	srv    *grpc.Server
	addr   string
	provMu sync.Mutex // startProvider
}

// Member is the member the adapter serves.
func (n *Node) Member() string { return n.cfg.Adapter.Member }

// Addr is the consumer side's address.
func (n *Node) Addr() string { return n.addr }

// Ready reports whether the adapter can serve: NATS connected and, for a
// provider, its backend SERVING over gRPC health (adapter.Ready).
// With a federation watch, the watch must be running too.
func (n *Node) Ready(ctx context.Context) error {
	if n.watch != nil && !n.watch.Watching() {
		return errors.New("adapter: the federation watch stopped: new versions are no longer applied")
	}
	return n.ad.Ready(ctx)
}

// Adapter is the running adapter.
func (n *Node) Adapter() *adapter.Adapter { return n.ad }

// FederationRefused is how many published versions the watch refused for
// reason (fedwatch.Reason*; 0 without a watch).
func (n *Node) FederationRefused(reason string) float64 {
	if n.watch == nil {
		return 0
	}
	return n.watch.Refused(reason)
}

// FederationVersion is the federation version in force at the adapter.
func (n *Node) FederationVersion() uint64 { return n.ad.FederationVersion() }

// Start builds the adapter, starts its provider side when the member
// provides a service, and serves the consumer side.
func Start(ctx context.Context, cfg Config, opts ...Option) (_ *Node, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	n := &Node{cfg: cfg}
	defer func() {
		if err != nil {
			_ = n.Stop(context.WithoutCancel(ctx))
		}
	}()
	if cfg.Adapter.Federation == nil {
		return nil, errors.New("adapter node: Adapter.Federation is required")
	}
	m, err := cfg.Adapter.Federation.Member(cfg.Adapter.Member)
	if err != nil {
		return nil, err
	}
	authz := adapter.WorkloadsOf(cfg.Adapter.Federation.TrustDomain, m.Name)
	if (cfg.Adapter.Backend != "" && !loopback.Is(cfg.Adapter.Backend) || cfg.Adapter.EventSink != "" && !loopback.Is(cfg.Adapter.EventSink)) && cfg.Source != nil {
		cfg.Adapter.BackendTLS = svid.ClientTLS(cfg.Source, authz)
	}
	var aopts []adapter.Option
	if o.tp != nil {
		aopts = append(aopts, adapter.WithTracerProvider(o.tp))
	}
	if n.ad, err = adapter.New(cfg.Adapter, aopts...); err != nil {
		return nil, err
	}
	if len(o.governance) > 0 {
		// Applied before the sides start: they serve the version in force.
		if err := n.watchFederation(ctx, o.governance); err != nil {
			return nil, err
		}
	}
	// What the member provides in the version in force (the published one
	// may differ from the file).
	if _, err := n.startProvider(ctx); err != nil {
		return nil, err
	}
	if err := n.ad.StartEventsIfReceiving(ctx); err != nil {
		return nil, err
	}
	creds, err := loopback.ServerCredentials(cfg.Listen, svid.ServerTLS(cfg.Source, authz))
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", m.Name, err)
	}
	n.addr = lis.Addr().String()
	n.srv = n.ad.GRPCServer(append(creds, o.server...)...)
	go func() {
		if err := n.srv.Serve(lis); err != nil {
			cfg.Adapter.Log.Error("adapter gRPC server stopped", "member", m.Name, "err", err)
		}
	}()
	cfg.Adapter.Log.Info("adapter listening", "member", m.Name, "grpc", n.addr, "backend", cfg.Adapter.Backend)
	return n, nil
}

// watchFederation applies the published federation version, then every
// newer one, to the adapter.
func (n *Node) watchFederation(ctx context.Context, trusted []ed25519.PublicKey) error {
	js, err := jetstream.New(n.cfg.Adapter.Conn)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, subject.FederationBucket)
	if err != nil {
		return fmt.Errorf("adapter %s: federation watch: the bucket %s (jisr nats init creates it): %w", n.cfg.Adapter.Member, subject.FederationBucket, err)
	}
	n.watch, err = fedwatch.Start(ctx, fedwatch.Config{
		Bucket: kv, Trusted: trusted, Component: "adapter", Poll: FederationPoll,
		Log: n.cfg.Adapter.Log.With("component", "adapter", "member", n.cfg.Adapter.Member),
		Apply: func(b *federation.Bundle, fed *federation.Federation) error {
			if err := n.ad.SetFederation(fed, b.Version, b.Descriptors); err != nil {
				return err
			}
			// A member that provided nothing and is given a service by this
			// version: its provider side starts now, without a restart.
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			log := n.cfg.Adapter.Log.With("component", "adapter", "member", n.cfg.Adapter.Member, "version", b.Version)
			switch started, err := n.startProvider(sctx); {
			case err != nil:
				// The version stays applied (the consumer side serves it);
				// the gateway finds no provider here until this is fixed.
				log.Error("the version gives the member services, but its provider side could not start", "err", err)
			case started:
				log.Info("provider side started: the version gives the member services", "provides", n.ad.Provides())
			}
			// A version that gives the member its first event rule starts
			// the delivery to its backend (docs/events.md).
			if err := n.ad.StartEventsIfReceiving(context.WithoutCancel(ctx)); err != nil {
				n.cfg.Adapter.Log.Error("event delivery not started: the member's events wait in its stream", "member", n.cfg.Adapter.Member, "err", err)
			}
			return nil
		},
	})
	return err
}

// startProvider starts the provider side if the member provides a service
// in the version in force and the side does not run yet: at start, and when
// a later version gives a consumer-only member its first service.
func (n *Node) startProvider(ctx context.Context) (bool, error) {
	n.provMu.Lock()
	defer n.provMu.Unlock()
	if len(n.ad.Provides()) == 0 || n.ad.Providing() {
		return false, nil
	}
	return true, n.ad.StartProvider(ctx)
}

// FederationPoll is how often an adapter reads the signed federation
// bundle: a member's NATS user may read it but create no consumer
// (fedwatch.Config.Poll).
var FederationPoll = 2 * time.Second

// Stop stops serving (at once when ctx ends), stops the adapter and closes
// the connection and the source.
func (n *Node) Stop(ctx context.Context) error {
	var err error
	if n.watch != nil {
		n.watch.Stop()
	}
	if n.srv != nil {
		done := make(chan struct{})
		go func() { n.srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			n.srv.Stop()
		}
	}
	if n.ad != nil {
		err = n.ad.Stop(ctx)
	}
	for _, nc := range n.cfg.Adapter.MoreConns {
		_ = nc.Drain()
	}
	if n.cfg.Adapter.Conn != nil {
		_ = n.cfg.Adapter.Conn.Drain()
	}
	if n.cfg.Source != nil {
		_ = n.cfg.Source.Close()
	}
	return err
}
