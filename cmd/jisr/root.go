package main

import (
	"os"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	g := &process.Env{}
	root := &cobra.Command{
		Use:   "jisr",
		Short: "jisr — the interoperability bus for public information systems",
		Long: `jisr lets public information systems answer each other's questions about a
citizen through one gateway that checks consent or another legal basis, applies
the access rules, releases only the agreed fields and audits every look.

Start here:
  jisr dev                 the whole federation on this machine, with demo data
  jisr certs init          a dev CA and an SVID for every identity of the federation
  jisr nats-config         the NATS server configuration derived from the federation file

Every part also runs on its own, as deployed:
  jisr nats-server | jisr gateway | jisr adapter --member M | jisr backend --member M`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			g.Command = cmd.Name()
			if err := applyContext(cmd, g); err != nil {
				return err
			}
			return g.Init()
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&g.FederationPath, "federation", process.EnvOr("JISR_FEDERATION", "deploy/federation.yaml"), "the federation file (env JISR_FEDERATION)")
	f.StringVar(&g.CertsDir, "certs", process.EnvOr("JISR_CERTS", "var/certs"), "directory of the dev CA, SVIDs and keys (env JISR_CERTS); ignored for SVIDs when SPIFFE_ENDPOINT_SOCKET is set")
	f.StringVar(&g.DataDir, "data", process.EnvOr("JISR_DATA", "var"), "directory for JetStream and backend stores (env JISR_DATA)")
	f.StringVar(&g.NATSURL, "nats", process.EnvOr("JISR_NATS", "tls://127.0.0.1:4222"), "NATS server URL, mTLS only (env JISR_NATS)")
	f.StringVar(&g.LogFormat, "log-format", process.EnvOr("JISR_LOG_FORMAT", "auto"), "log format: text, json, or auto (json for gateway, adapter, backend and nats-server; text for dev and the other commands) (env JISR_LOG_FORMAT)")
	f.StringVar(&g.LogLevel, "log-level", process.EnvOr("JISR_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env JISR_LOG_LEVEL)")
	f.StringVar(&g.OTLP, "otlp", os.Getenv("JISR_OTLP"), "export traces to this OTLP endpoint: host:port (gRPC; plaintext only on loopback, else TLS) or an http(s):// base URL (OTLP/HTTP, posts to <URL>/v1/traces) (default: the OTEL_EXPORTER_OTLP_* variables; none: no export) (env JISR_OTLP)")
	f.IntVar(&g.TraceMemory, "trace-memory", 10000, "spans the gateway keeps in memory for GET /v1/traces/{id} (0: none)")
	f.StringVar(&g.PprofAddr, "pprof-addr", "", "serve Go profiles (/debug/pprof/) on this loopback address (profiling only)")
	_ = f.MarkHidden("pprof-addr")

	for _, c := range subcommands(g) {
		root.AddCommand(c)
	}
	compactGlobalFlags(root)
	return root
}

// subcommands builds jisr's subcommands, each with the shared process.Env.
// A new subcommand is added here.
func subcommands(g *process.Env) []*cobra.Command {
	return []*cobra.Command{
		newDevCmd(g),
		newCertsCmd(g),
		newNATSConfigCmd(g),
		newNATSServerCmd(g),
		newNATSCmd(g),
		newGatewayCmd(g),
		newConsentCmd(g),
		newAdapterCmd(g),
		newBackendCmd(g),
		newAuditCmd(g),
		newBenchCmd(g),
		newContextCmd(g),
		newEventsCmd(g),
		newServicesCmd(g),
		newFederationCmd(g),
		newStatusCmd(g),
		newSpireCmd(g),
		newRawRelayCmd(),
	}
}
