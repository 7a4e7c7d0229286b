package main

import (
	"fmt"
	"time"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/spf13/cobra"
)

func newBackendCmd(g *process.Env) *cobra.Command {
	var o process.BackendOptions
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
				return process.UsageError{Err: fmt.Errorf("--member is required")}
			}
			ctx := cmd.Context()
			stop, err := g.StartStandalone(ctx, "backend", o.Member, o.HTTP)
			if err != nil {
				return err
			}
			defer stop()
			n, err := process.StartBackend(ctx, g, o)
			if err != nil {
				return err
			}
			return process.UntilDone(ctx, 10*time.Second, n.Stop)
		},
	}
	cmd.Flags().StringVar(&o.Member, "member", "", "the ministry: civil-registry, tax, cnss or health")
	cmd.Flags().StringVar(&o.Listen, "listen", "", "gRPC listen address (default: the member's dev backend port, 127.0.0.1:710N); off loopback it serves mTLS with the member's SVID")
	cmd.Flags().IntVar(&o.Citizens, "citizens", 10000, "synthetic citizens to seed on first start")
	cmd.Flags().StringVar(&o.HTTP, "http", "", "HTTP listen address for /metrics and /healthz (default: none)")
	cmd.Flags().StringVar(&o.Adapter, "adapter", "", "the member's adapter, through which the backend publishes the life events it records (default: the member's dev adapter port, 127.0.0.1:700N)")
	cmd.AddCommand(newBackendSQLCmd(g))
	return cmd
}
