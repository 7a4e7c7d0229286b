package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/services/backend"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/progress"
	"github.com/jisr-bus/jisr/services/store"
)

func init() { commandSet = append(commandSet, newBackendCmd) }

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

It listens on loopback only: the member's adapter is its one client.`,
		Example: `  jisr backend --member civil-registry
  jisr backend --member tax --citizens 1000000`,
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
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return n.stop(sctx)
		},
	}
	cmd.Flags().StringVar(&o.member, "member", "", "the ministry: civil-registry, tax, cnss or health")
	cmd.Flags().StringVar(&o.listen, "listen", "", "gRPC listen address (default: the member's dev backend port, 127.0.0.1:710N)")
	cmd.Flags().IntVar(&o.citizens, "citizens", 10000, "synthetic citizens to seed on first start")
	cmd.Flags().StringVar(&o.http, "http", "", "HTTP listen address for /metrics and /healthz (default: none)")
	return cmd
}

type backendNode struct {
	member string
	addr   string
	b      *backend.Backend
}

func startBackend(ctx context.Context, g *globals, o backendOptions) (*backendNode, error) {
	fed, err := g.federation()
	if err != nil {
		return nil, err
	}
	if o.listen == "" {
		o.listen = devPort(fed, o.member, 7100)
	}
	bar := progress.New(os.Stderr, "seeding "+o.member)
	b, err := backend.New(ctx, o.member, g.dataDir, backend.WithStore(
		store.WithCitizens(o.citizens), store.WithProgress(bar.Update), store.WithLogger(g.log)),
		backend.WithServerOptions(g.grpcServerOptions("backend", o.member)...))
	bar.Done()
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		_ = b.Stop(ctx)
		return nil, fmt.Errorf("backend %s: %w", o.member, err)
	}
	n := &backendNode{member: o.member, addr: lis.Addr().String(), b: b}
	go func() {
		if err := b.Serve(lis); err != nil {
			g.log.Error("backend stopped", "member", o.member, "err", err)
		}
	}()
	g.log.Info("backend listening", "member", o.member, "grpc", n.addr)
	return n, nil
}

func (n *backendNode) stop(ctx context.Context) error { return n.b.Stop(ctx) }

// showcase lists the demo citizens printed by `jisr dev`.
func showcase() []demoCitizen {
	var out []demoCitizen
	for _, e := range demodata.Showcase(demodata.DefaultSeed) {
		out = append(out, demoCitizen{EID: e.EID, Description: e.Description})
	}
	return out
}
