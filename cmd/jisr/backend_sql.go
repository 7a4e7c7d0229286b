package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	sqlbackend "github.com/jisr-bus/jisr/services/backend/sql"
)

func newBackendSQLCmd(g *process.Env) *cobra.Command {
	var (
		path, httpAddr string
		o              process.SQLBackendOptions
	)
	cmd := &cobra.Command{
		Use:   "sql --config ministry.yaml",
		Short: "Serve a member's jisr service from an existing PostgreSQL database, without code",
		Long: `Serve a member's jisr service from PostgreSQL through a declarative mapping:
each method gets a parameterised SQL query whose columns fill named fields of
the reply (a path through a repeated field adds one element per row), or, for a
predicate, a SQL boolean expression. The request's fields reach the database only
as bound parameters.

At start every query is prepared against the database and checked against the
service's descriptors (the ones linked into jisr, or descriptor_set: a file from
'buf build -o'): every parameter, column and field must exist with a fitting type,
or it stops naming the method and field. Every session is read-only and every
statement bounded (database.statement_timeout, default 2s); the standard health
service answers NOT_SERVING while the database does not answer.

The mapping of the reference civil registry is services/backend/sql/demo/
civil-registry.yaml (what 'jisr dev --postgres URL' serves). Like 'jisr backend',
it serves plaintext only on a loopback --listen, mTLS with the member's SVID
elsewhere.`,
		Example: `  JISR_CIVIL_REGISTRY_DATABASE_URL=postgres://jisr@db/civil jisr backend sql --config civil-registry.yaml
  jisr backend sql --config justice.yaml --listen 127.0.0.1:7105`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return process.UsageError{Err: fmt.Errorf("--config is required")}
			}
			cfg, err := sqlbackend.LoadConfig(path)
			if err != nil {
				return process.UsageError{Err: err}
			}
			o.Config = cfg
			ctx := cmd.Context()
			stop, err := g.StartStandalone(ctx, "backend", cfg.Member, httpAddr)
			if err != nil {
				return err
			}
			defer stop()
			n, err := process.StartSQLBackend(ctx, g, o)
			if err != nil {
				return err
			}
			return process.UntilDone(ctx, 10*time.Second, n.Stop)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "the mapping file (member, service, database, methods)")
	cmd.Flags().StringVar(&o.Listen, "listen", "", "gRPC listen address (default: the member's dev backend port, 127.0.0.1:710N); off loopback it serves mTLS with the member's SVID")
	cmd.Flags().StringVar(&httpAddr, "http", "", "HTTP listen address for /metrics and /healthz (default: none)")
	return cmd
}
