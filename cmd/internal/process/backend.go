package process

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/services/backend"
	"github.com/jisr-bus/jisr/services/progress"
	"github.com/jisr-bus/jisr/services/store"
)

type BackendOptions struct {
	Member   string
	Listen   string
	Citizens int
	HTTP     string
	// Adapter is the member's adapter, through which a backend that records
	// life events publishes them (default: the member's dev adapter port).
	Adapter string
}

type BackendNode struct {
	Member string
	Addr   string
	b      interface{ Stop(context.Context) error } // the reference backend or the SQL backend
	src    svid.Source                              // the member's SVID when it serves mTLS
}

func StartBackend(ctx context.Context, g *Env, o BackendOptions) (*BackendNode, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	if o.Listen == "" {
		o.Listen = DevPort(fed, o.Member, 7100)
	}
	n := &BackendNode{Member: o.Member}
	opts := []backend.Option{backend.WithServerOptions(g.GRPCServerOptions("backend", o.Member)...),
		backend.WithTracerProvider(g.TracerProviderFor("backend", o.Member, ""))}
	if !loopback.Is(o.Listen) {
		// Off loopback: mTLS with the member's SVID, for the member's own
		// workloads only (its adapter dials with BackendOf too).
		m, err := fed.Member(o.Member)
		if err != nil {
			return nil, UsageError{fmt.Errorf("--member %q is not in %s", o.Member, g.FederationPath)}
		}
		if n.src, err = g.Source(ctx, m.ID); err != nil {
			return nil, fmt.Errorf("backend %s: --listen %s is not loopback, so it serves mTLS and needs the member's SVID: %w", o.Member, o.Listen, err)
		}
		opts = append(opts, backend.WithTLS(svid.ServerTLS(n.src, BackendOf(fed.TrustDomain, o.Member))))
	}
	bar := progress.New(os.Stderr, "seeding "+o.Member)
	b, err := backend.New(ctx, o.Member, g.DataDir, append(opts, backend.WithStore(
		store.WithCitizens(o.Citizens), store.WithProgress(bar.Update), store.WithLogger(g.Log)))...)
	bar.Done()
	if err != nil {
		n.close()
		return nil, err
	}
	n.b = b
	lis, err := b.Listen(o.Listen)
	if err != nil {
		_ = n.Stop(ctx)
		return nil, fmt.Errorf("backend %s: %w", o.Member, err)
	}
	n.Addr = lis.Addr().String()
	if m, err := fed.Member(o.Member); err == nil && len(m.Publishes) > 0 {
		if o.Adapter == "" {
			o.Adapter = DevPort(fed, o.Member, 7000)
		}
		var tlsConf *tls.Config
		if n.src != nil {
			tlsConf = svid.ClientTLS(n.src, BackendOf(fed.TrustDomain, o.Member))
		}
		if err := b.PublishEventsThrough(o.Adapter, tlsConf); err != nil {
			_ = n.Stop(ctx)
			return nil, fmt.Errorf("backend %s: --adapter %s: %w", o.Member, o.Adapter, err)
		}
	}
	go func() {
		if err := b.Serve(lis); err != nil {
			g.Log.Error("backend stopped", "member", o.Member, "err", err)
		}
	}()
	g.Log.Info("backend listening", "member", o.Member, "grpc", n.Addr)
	return n, nil
}

// PublishEventsThrough points the backend's life events at its adapter's
// address (jisr dev, once the adapter listens on a port of its own).
// A backend that records no events (the SQL backend) has nothing to point.
func (n *BackendNode) PublishEventsThrough(addr string) error {
	p, ok := n.b.(interface {
		PublishEventsThrough(string, *tls.Config) error
	})
	if !ok {
		return nil
	}
	return p.PublishEventsThrough(addr, nil)
}

func (n *BackendNode) Stop(ctx context.Context) error {
	err := n.b.Stop(ctx)
	n.close()
	return err
}

func (n *BackendNode) close() {
	if n.src != nil {
		_ = n.src.Close()
	}
}
