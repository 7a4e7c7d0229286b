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

type backendOptions struct {
	member   string
	listen   string
	citizens int
	http     string
}

func newBackendCmd(g *globals) *cobra.Command {
	var o backendOptions
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
			if o.member == "" {
				return usageError{fmt.Errorf("--member is required")}
			}
			ctx := cmd.Context()
			stop, err := g.startStandalone(ctx, "backend", o.member, o.http)
			if err != nil {
				return err
			}
			defer stop()
			n, err := startBackend(ctx, g, o)
			if err != nil {
				return err
			}
			return untilDone(ctx, 10*time.Second, n.stop)
		},
	}
	cmd.Flags().StringVar(&o.member, "member", "", "the ministry: civil-registry, tax, cnss or health")
	cmd.Flags().StringVar(&o.listen, "listen", "", "gRPC listen address (default: the member's dev backend port, 127.0.0.1:710N); off loopback it serves mTLS with the member's SVID")
	cmd.Flags().IntVar(&o.citizens, "citizens", 10000, "synthetic citizens to seed on first start")
	cmd.Flags().StringVar(&o.http, "http", "", "HTTP listen address for /metrics and /healthz (default: none)")
	return cmd
}

type backendNode struct {
	member string
	addr   string
	b      *backend.Backend
	src    svid.Source // the member's SVID when it serves mTLS
}

func startBackend(ctx context.Context, g *globals, o backendOptions) (*backendNode, error) {
	fed, err := g.federation()
	if err != nil {
		return nil, err
	}
	if o.listen == "" {
		o.listen = devPort(fed, o.member, 7100)
	}
	n := &backendNode{member: o.member}
	opts := []backend.Option{backend.WithServerOptions(g.grpcServerOptions("backend", o.member)...)}
	if !loopback.Is(o.listen) {
		// Off loopback: mTLS with the member's SVID, for the member's own
		// workloads only (its adapter dials with backendOf too).
		m, err := fed.Member(o.member)
		if err != nil {
			return nil, usageError{fmt.Errorf("--member %q is not in %s", o.member, g.federationPath)}
		}
		if n.src, err = g.source(ctx, m.ID); err != nil {
			return nil, fmt.Errorf("backend %s: --listen %s is not loopback, so it serves mTLS and needs the member's SVID: %w", o.member, o.listen, err)
		}
		opts = append(opts, backend.WithTLS(svid.ServerTLS(n.src, backendOf(fed.TrustDomain, o.member))))
	}
	bar := progress.New(os.Stderr, "seeding "+o.member)
	b, err := backend.New(ctx, o.member, g.dataDir, append(opts, backend.WithStore(
		store.WithCitizens(o.citizens), store.WithProgress(bar.Update), store.WithLogger(g.log)))...)
	bar.Done()
	if err != nil {
		n.close()
		return nil, err
	}
	n.b = b
	lis, err := b.Listen(o.listen)
	if err != nil {
		_ = n.stop(ctx)
		return nil, fmt.Errorf("backend %s: %w", o.member, err)
	}
	n.addr = lis.Addr().String()
	go func() {
		if err := b.Serve(lis); err != nil {
			g.log.Error("backend stopped", "member", o.member, "err", err)
		}
	}()
	g.log.Info("backend listening", "member", o.member, "grpc", n.addr)
	return n, nil
}

func (n *backendNode) stop(ctx context.Context) error {
	err := n.b.Stop(ctx)
	n.close()
	return err
}

func (n *backendNode) close() {
	if n.src != nil {
		_ = n.src.Close()
	}
}
