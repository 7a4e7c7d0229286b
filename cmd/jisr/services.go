package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

func newServicesCmd(g *process.Env) *cobra.Command {
	var (
		as        string
		live      bool
		published bool
		wait      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "services [--as MEMBER] [--live] [--published]",
		Short: "The federation's service catalogue: who provides what, and what a member may call",
		Long: `List the federation's services from the federation file and the service
descriptors: each provider, its services with their descriptor digest, and
their methods (predicates marked).

--as MEMBER lists only what that member may call: rule by rule, the provider and
service, the methods, the legal basis (and law), the purposes and the fields it
would get. A member's adapter shows the same services, and only those, through
gRPC reflection.

--published lists the newest signed federation version the operator published
(what the gateway enforces) instead of the local --federation file.

--live also asks the running providers, as the operator (spiffe://<td>/operator:
no other identity may send discovery requests): each provider adapter registers
as a NATS micro service (jisr-<member>) with its services, descriptor digests and
methods in its metadata; the listing says which providers answer and whether they
run the federation's schema.`,
		Example: `  jisr services
  jisr services --as cnss
  jisr services --live`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fed, err := g.Federation()
			if err != nil {
				return err
			}
			svcs, _, err := g.Services()
			if err != nil {
				return err
			}
			if published {
				trusted, err := process.TrustedGovernanceKeys(g)
				if err != nil {
					return err
				}
				kv, done, err := process.FederationBucket(cmd.Context(), g, subject.Operator)
				if err != nil {
					return err
				}
				b, pub, _, err := process.Published(cmd.Context(), kv, trusted)
				done()
				if err != nil {
					return err
				}
				if pub == nil {
					return fmt.Errorf("no federation version published yet")
				}
				fed = pub
				if svcs, err = descset.Services(pub, b.Descriptors, nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "federation version %d (%s)\n\n", b.Version, b.Digest())
			}
			cat, err := catalog.New(fed, svcs)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if as != "" {
				if _, err := fed.Member(as); err != nil {
					return process.UsageError{Err: fmt.Errorf("--as %q is not a member of %s", as, g.FederationPath)}
				}
				return catalog.PrintGrants(out, as, cat.Grants(fed, as))
			}
			var infos []micro.Info
			if live {
				ctx, cancel := context.WithTimeout(cmd.Context(), wait)
				defer cancel()
				nc, src, err := g.Connect(ctx, subject.Operator, nats.MaxReconnects(0))
				if err != nil {
					return err
				}
				defer func() { nc.Close(); src.Close() }()
				var providers []string
				for _, m := range fed.Members {
					if len(m.Provides) > 0 {
						providers = append(providers, m.Name)
					}
				}
				if infos, err = catalog.Discover(ctx, nc, providers); err != nil {
					return err
				}
			}
			return catalog.PrintDirectory(out, cat.Directory(fed), infos, live)
		},
	}
	cmd.Flags().StringVar(&as, "as", "", "list only what this member may call, with legal bases, purposes and fields")
	cmd.Flags().BoolVar(&published, "published", false, "list the newest signed federation version published (jisr federation publish; read as the operator) instead of --federation")
	cmd.Flags().BoolVar(&live, "live", false, "also ask the running provider adapters (NATS micro discovery, as the operator)")
	cmd.Flags().DurationVar(&wait, "wait", 2*time.Second, "with --live: how long to wait for the providers' answers")
	return cmd
}
