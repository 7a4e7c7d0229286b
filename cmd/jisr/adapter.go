package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/services/adapter"
	"github.com/jisr-bus/jisr/services/adapter/node"
)

type AdapterOptions struct {
	Member  string
	Listen  string
	Backend string
	HTTP    string
}

func newAdapterCmd(g *globals) *cobra.Command {
	var o AdapterOptions
	cmd := &cobra.Command{
		Use:   "adapter --member NAME",
		Short: "Run a member's adapter: its backend's gRPC door to the federation",
		Long: `Run the generic adapter of one member.

Consumer side: serves every federation service over gRPC on --listen. The
member's backend calls the method it wants from a peer (for example
jisr.civilregistry.v1.CivilRegistry/GetPerson) with metadata jisr-purpose and,
unless a mandate applies, jisr-consent (a consent token). The adapter sends the
call to the gateway over NATS with the member's SVID.

Provider side (members that provide a service): takes the gateway's requests
and calls the member's backend at --backend.

Plaintext gRPC is allowed only on loopback addresses (the sidecar case);
anywhere else both links use mTLS with the member's SVID.`,
		Example: `  jisr adapter --member cnss --listen 127.0.0.1:7003 --backend 127.0.0.1:7103
  grpcurl -plaintext 127.0.0.1:7003 list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Member == "" {
				return UsageError{errors.New("--member is required")}
			}
			ctx := cmd.Context()
			stop, err := g.StartStandalone(ctx, "adapter", o.Member, o.HTTP)
			if err != nil {
				return err
			}
			defer stop()
			n, err := StartAdapter(ctx, g, o)
			if err != nil {
				return err
			}
			return UntilDone(ctx, 10*time.Second, n.Stop)
		},
	}
	cmd.Flags().StringVar(&o.Member, "member", "", "the member this adapter serves (a name from the federation file)")
	cmd.Flags().StringVar(&o.Listen, "listen", "", "consumer-side gRPC listen address (default: the member's dev port, 127.0.0.1:700N)")
	cmd.Flags().StringVar(&o.HTTP, "http", "", "HTTP listen address for /metrics and /healthz (default: none)")
	cmd.Flags().StringVar(&o.Backend, "backend", "", "provider-side backend gRPC address (default: the member's dev backend port, 127.0.0.1:710N)")
	return cmd
}

// DevPort returns the dev port offset of a member: its position in the
// federation file, from 1 (civil-registry 1, tax 2, cnss 3, health 4).
func DevPort(fed *federation.Federation, member string, base int) string {
	for i, m := range fed.Members {
		if m.Name == member {
			return fmt.Sprintf("127.0.0.1:%d", base+i+1)
		}
	}
	return ""
}

// AdapterNode is a running adapter (services/adapter/node).
type AdapterNode = node.Node

// StartAdapter builds the adapter node's Config from the flags (the dev
// ports by default) and the member's NATS connection and SVID.
func StartAdapter(ctx context.Context, g *globals, o AdapterOptions, extra ...grpc.ServerOption) (*AdapterNode, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	m, err := fed.Member(o.Member)
	if err != nil {
		return nil, UsageError{fmt.Errorf("--member %q is not in %s", o.Member, g.FederationPath)}
	}
	if o.Listen == "" {
		o.Listen = DevPort(fed, o.Member, 7000)
	}
	if o.Backend == "" && len(m.Provides) > 0 {
		o.Backend = DevPort(fed, o.Member, 7100)
	}
	keyer, err := g.Keyer()
	if err != nil {
		return nil, err
	}
	nc, src, err := g.Connect(ctx, o.Member)
	if err != nil {
		return nil, err
	}
	cfg := adapter.Config{Member: o.Member, Federation: fed, Keyer: keyer, Conn: nc, Log: g.Log, Backend: o.Backend,
		ServerOptions: g.GRPCServerOptions("adapter", o.Member), DialOptions: g.GRPCDialOptions(),
		Registerer: g.Registry()}
	return node.Start(ctx, node.Config{Adapter: cfg, Source: src, Listen: o.Listen}, node.WithServerOptions(extra...))
}

// BackendOf authorizes the member's own workloads (adapter.WorkloadsOf).
var BackendOf = adapter.WorkloadsOf
