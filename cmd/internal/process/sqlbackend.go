package process

import (
	"context"
	"fmt"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/certs/svid"
	sqlbackend "github.com/jisr-bus/jisr/services/backend/sql"
)

// SQLBackendOptions are the flags of `jisr backend sql`.
type SQLBackendOptions struct {
	// Config is the mapping (sqlbackend.LoadConfig of --config).
	Config *sqlbackend.Config
	Listen string
}

// StartSQLBackend serves a member's service from PostgreSQL through its
// mapping: plaintext on loopback, mTLS with the member's SVID elsewhere,
// like the reference backend.
func StartSQLBackend(ctx context.Context, g *Env, o SQLBackendOptions) (*BackendNode, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	member := o.Config.Member
	if o.Listen == "" {
		o.Listen = DevPort(fed, member, 7100)
	}
	n := &BackendNode{Member: member}
	opts := []sqlbackend.Option{sqlbackend.WithServerOptions(g.GRPCServerOptions("backend", member)...), sqlbackend.WithLogger(g.Log)}
	if !loopback.Is(o.Listen) {
		m, err := fed.Member(member)
		if err != nil {
			return nil, UsageError{fmt.Errorf("member %q of the mapping is not in %s", member, g.FederationPath)}
		}
		if n.src, err = g.Source(ctx, m.ID); err != nil {
			return nil, fmt.Errorf("sql backend %s: --listen %s is not loopback, so it serves mTLS and needs the member's SVID: %w", member, o.Listen, err)
		}
		opts = append(opts, sqlbackend.WithTLS(svid.ServerTLS(n.src, BackendOf(fed.TrustDomain, member))))
	}
	b, err := sqlbackend.New(ctx, o.Config, opts...)
	if err != nil {
		n.close()
		return nil, err
	}
	n.b = b
	lis, err := b.Listen(o.Listen)
	if err != nil {
		_ = n.Stop(ctx)
		return nil, fmt.Errorf("sql backend %s: %w", member, err)
	}
	n.Addr = lis.Addr().String()
	go func() {
		if err := b.Serve(lis); err != nil {
			g.Log.Error("sql backend stopped", "member", member, "err", err)
		}
	}()
	g.Log.Info("sql backend listening", "member", member, "service", b.Service(), "grpc", n.Addr)
	return n, nil
}
