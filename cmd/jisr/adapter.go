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

type adapterOptions struct {
	member  string
	listen  string
	backend string
	http    string
}

func newAdapterCmd(g *globals) *cobra.Command {
	var o adapterOptions
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
			if o.member == "" {
				return usageError{errors.New("--member is required")}
			}
			ctx := cmd.Context()
			stop, err := g.startStandalone(ctx, "adapter", o.member, o.http)
			if err != nil {
				return err
			}
			defer stop()
			n, err := startAdapter(ctx, g, o)
			if err != nil {
				return err
			}
			return untilDone(ctx, 10*time.Second, n.Stop)
		},
	}
	cmd.Flags().StringVar(&o.member, "member", "", "the member this adapter serves (a name from the federation file)")
	cmd.Flags().StringVar(&o.listen, "listen", "", "consumer-side gRPC listen address (default: the member's dev port, 127.0.0.1:700N)")
	cmd.Flags().StringVar(&o.http, "http", "", "HTTP listen address for /metrics and /healthz (default: none)")
	cmd.Flags().StringVar(&o.backend, "backend", "", "provider-side backend gRPC address (default: the member's dev backend port, 127.0.0.1:710N)")
	return cmd
}

// devPort returns the dev port offset of a member: its position in the
// federation file, from 1 (civil-registry 1, tax 2, cnss 3, health 4).
func devPort(fed *federation.Federation, member string, base int) string {
	for i, m := range fed.Members {
		if m.Name == member {
			return fmt.Sprintf("127.0.0.1:%d", base+i+1)
		}
	}
	return ""
}

// adapterNode is a running adapter (services/adapter/node).
type adapterNode = node.Node

// startAdapter builds the adapter node's Config from the flags (the dev
// ports by default) and the member's NATS connection and SVID.
func startAdapter(ctx context.Context, g *globals, o adapterOptions, extra ...grpc.ServerOption) (*adapterNode, error) {
	fed, err := g.federation()
	if err != nil {
		return nil, err
	}
	m, err := fed.Member(o.member)
	if err != nil {
		return nil, usageError{fmt.Errorf("--member %q is not in %s", o.member, g.federationPath)}
	}
	if o.listen == "" {
		o.listen = devPort(fed, o.member, 7000)
	}
	if o.backend == "" && len(m.Provides) > 0 {
		o.backend = devPort(fed, o.member, 7100)
	}
	keyer, err := g.keyer()
	if err != nil {
		return nil, err
	}
	nc, src, err := g.connect(ctx, o.member)
	if err != nil {
		return nil, err
	}
	cfg := adapter.Config{Member: o.member, Federation: fed, Keyer: keyer, Conn: nc, Log: g.log, Backend: o.backend,
		ServerOptions: g.grpcServerOptions("adapter", o.member), DialOptions: g.grpcDialOptions(),
		Registerer: g.registry()}
	return node.Start(ctx, node.Config{Adapter: cfg, Source: src, Listen: o.listen}, node.WithServerOptions(extra...))
}

// backendOf authorizes the member's own workloads (adapter.WorkloadsOf).
var backendOf = adapter.WorkloadsOf
