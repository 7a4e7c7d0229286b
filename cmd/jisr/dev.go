package main

import (
	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/cmd/internal/dev"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

func newDevCmd(g *process.Env) *cobra.Command {
	o := dev.Options{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole federation on this machine with demo data",
		Long: `Run the whole demo federation in one process: the NATS server (mTLS,
JetStream under --data), the gateway, one adapter and one reference backend per
member, seeded with deterministic synthetic citizens. It creates the dev CA and
SVIDs on first run (as 'jisr certs init' does), writes var/demo.json with demo
eIDs and ready consent tokens, and prints a grpcurl command to try.

Citizens sign in to their access log and consents through a small embedded
OpenID Provider (on --idp, loopback only) that lists the demo citizens, with
the same OpenID Connect flow as production. --demo-login also turns on
sign-in by eID alone (POST /access-log/login), for scripts; loopback only.

With --postgres URL the civil registry is served from PostgreSQL by the SQL
backend ('jisr backend sql', its reference mapping) after the synthetic citizens
are loaded into the schema civil of that database; SQLite stays the default.

With --cluster 3 (make run-cluster) it runs the hub as on three machines
instead: three NATS nodes (jisr nats-server, routes over mTLS, JetStream R3)
and two gateway replicas (jisr gateway) as processes of their own, whose pids
it prints and writes to var/demo.json, so that any one can be killed with
kill -9 while the rest carry on; the consent service, the backends and the
adapters run in this process. Logs of the children: var/cluster/*.log.

Ctrl-C shuts everything down gracefully.`,
		Example: `  jisr dev
  jisr dev --citizens 1000000
  jisr dev --backend cnss=127.0.0.1:9003   # your own CNSS backend behind the cnss adapter
  jisr dev --postgres postgres://jisr@127.0.0.1/jisr_demo
  jisr dev --cluster 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return dev.Run(cmd.Context(), g, o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&o.Citizens, "citizens", 10000, "synthetic citizens in each reference backend")
	cmd.Flags().StringVar(&o.HTTPAddr, "http", "127.0.0.1:8080", "gateway HTTP address")
	cmd.Flags().StringVar(&o.GRPCAddr, "grpc", "127.0.0.1:7000", "gateway gRPC address (consent and access-log APIs)")
	cmd.Flags().StringVar(&o.ConsoleAddr, "console", "127.0.0.1:8443", "the auditor's console (HTTPS, the auditor's client certificate: <certs>/svid/auditor.pem; \"\" for none)")
	cmd.Flags().BoolVar(&o.ConsoleOIDC, "console-oidc", false, "also let the demo provider's auditor (user \"auditor\", role auditor) sign in to the console by OIDC: https://<console>/console/login")
	cmd.Flags().StringVar(&o.IdPAddr, "idp", "127.0.0.1:8090", "loopback address of the embedded demo OpenID Provider (citizen sign-in)")
	cmd.Flags().StringToStringVar(&o.Backends, "backend", nil, "MEMBER=ADDR: use your own gRPC backend at ADDR for MEMBER instead of its reference backend (repeatable; docs/integrate.md)")
	cmd.Flags().BoolVar(&o.DemoLogin, "demo-login", false, "also let anyone sign in as a citizen by eID alone (POST /access-log/login; loopback only)")
	cmd.Flags().StringSliceVar(&o.AgentEIDs, "counter-agent", nil, "eID of a counter agent (repeatable; assisted access): the embedded provider lets them sign in; their session serves nothing until a citizen signs in on it")
	cmd.Flags().StringVar(&o.Postgres, "postgres", "", "serve the civil registry from this PostgreSQL database (URL or libpq string; the demo data are loaded into its schema civil) through 'jisr backend sql' instead of SQLite")
	natsFlags(cmd, &o.NATS)
	cmd.Flags().IntVar(&o.Cluster.Nodes, "cluster", 0, "run the hub instead: this many NATS nodes (3) as jisr nats-server processes routed to each other, streams and buckets with 3 replicas, and --gateways gateway replicas as jisr gateway processes (docs/deploy.md)")
	cmd.Flags().IntVar(&o.Cluster.Gateways, "gateways", 2, "gateway replicas with --cluster")
	cmd.Flags().BoolVar(&o.AnyPort, "any-port", false, "bind every listener to a free loopback port (tests and benchmarks); the ports are in var/demo.json")
	_ = cmd.Flags().MarkHidden("any-port")
	auditFlags(cmd, &g.Audit)
	tracesFromFlag(cmd, g)
	return cmd
}
