package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

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
}

func newBackendCmd(g *globals) *cobra.Command {
	var o BackendOptions
	cmd := &cobra.Command{
		Use:   "backend --member NAME",
		Short: "Run a member's reference backend (its ministry service on an embedded SQLite store)",
		Long: `Run the reference backend of one ministry: its gRPC service over a SQLite
store under --data, seeded on first start with deterministic synthetic citizens
that are consistent across ministries (same eIDs, households, deaths, incomes).

Its one client is the member's adapter. On a loopback --listen address it
serves plaintext (the sidecar case); on any other it serves mTLS with the
member's SVID and accepts only the member's own workloads (its adapter), with
TLS 1.3 at least.`,
		Example: `  jisr backend --member civil-registry
  jisr backend --member tax --citizens 1000000
  jisr backend --member tax --listen 10.0.0.5:7102   # mTLS with the member's SVID`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Member == "" {
				return UsageError{fmt.Errorf("--member is required")}
			}
			ctx := cmd.Context()
			stop, err := g.StartStandalone(ctx, "backend", o.Member, o.HTTP)
			if err != nil {
				return err
			}
			defer stop()
			n, err := StartBackend(ctx, g, o)
			if err != nil {
				return err
			}
			return UntilDone(ctx, 10*time.Second, n.stop)
		},
	}
	cmd.Flags().StringVar(&o.Member, "member", "", "the ministry: civil-registry, tax, cnss or health")
	cmd.Flags().StringVar(&o.Listen, "listen", "", "gRPC listen address (default: the member's dev backend port, 127.0.0.1:710N); off loopback it serves mTLS with the member's SVID")
	cmd.Flags().IntVar(&o.Citizens, "citizens", 10000, "synthetic citizens to seed on first start")
	cmd.Flags().StringVar(&o.HTTP, "http", "", "HTTP listen address for /metrics and /healthz (default: none)")
	return cmd
}

type BackendNode struct {
	Member string
	Addr   string
	b      *backend.Backend
	src    svid.Source // the member's SVID when it serves mTLS
}

func StartBackend(ctx context.Context, g *globals, o BackendOptions) (*BackendNode, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	if o.Listen == "" {
		o.Listen = DevPort(fed, o.Member, 7100)
	}
	n := &BackendNode{Member: o.Member}
	opts := []backend.Option{backend.WithServerOptions(g.GRPCServerOptions("backend", o.Member)...)}
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
		_ = n.stop(ctx)
		return nil, fmt.Errorf("backend %s: %w", o.Member, err)
	}
	n.Addr = lis.Addr().String()
	go func() {
		if err := b.Serve(lis); err != nil {
			g.Log.Error("backend stopped", "member", o.Member, "err", err)
		}
	}()
	g.Log.Info("backend listening", "member", o.Member, "grpc", n.Addr)
	return n, nil
}

func (n *BackendNode) stop(ctx context.Context) error {
	err := n.b.Stop(ctx)
	n.close()
	return err
}

func (n *BackendNode) close() {
	if n.src != nil {
		_ = n.src.Close()
	}
}
