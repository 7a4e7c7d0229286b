package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

func natsFlags(cmd *cobra.Command, o *process.NATSOptions) {
	cmd.Flags().StringVar(&o.Listen, "listen", "127.0.0.1:4222", "client listen address")
	cmd.Flags().IntVar(&o.HTTPPort, "monitor-port", 0, "NATS monitoring HTTP port (0: off)")
	cmd.Flags().StringVar(&o.Sync, "sync", "1s", `JetStream fsync interval, or "always" (see docs/audit.md)`)
	cmd.Flags().BoolVar(&o.AuditAccount, "audit-account", false, "keep the audit streams in their own account, AUDIT: only the gateway writes them, only auditors read them (see docs/audit.md)")
	cmd.Flags().StringVar(&o.ServerName, "server-name", "", "this node's name, unique in the hub (a hub node only)")
	cmd.Flags().StringVar(&o.ClusterListen, "cluster-listen", "", "route listen address of this hub node (host:port; empty: a single server)")
	cmd.Flags().StringSliceVar(&o.Routes, "routes", nil, "route URLs of every node of the hub (tls://host:port,…; a hub node only)")
	cmd.Flags().StringVar(&o.ClusterName, "cluster-name", natsconf.DefaultClusterName, "the hub's cluster name")
	cmd.Flags().StringVar(&o.Domain, "domain", natsconf.DefaultDomain, "the hub's JetStream domain")
	cmd.Flags().BoolVar(&o.Trace, "trace", false, "log the subject of every publish and delivery at debug level (payloads cut to one byte; needs --log-level debug)")
}

func newNATSConfigCmd(g *process.Env) *cobra.Command {
	var o process.NATSOptions
	var nodes []string
	var clusterPort int
	var outDir string
	cmd := &cobra.Command{
		Use:   "nats-config",
		Short: "Print the NATS server configuration derived from the federation file",
		Long: `Print the configuration of a standalone nats-server for this federation: mTLS
with verify_and_map on the SPIFFE URI SAN, one user per SPIFFE ID, and
allow-list permissions derived from the federation file (anything not listed is
denied). It is the exact text the embedded server of jisr dev runs.

With --cluster it renders every node of the hub instead (docs/deploy.md): each
node's client and route listeners, its routes to the other nodes (mutual TLS,
only the server identity spiffe://<td>/nats may route), JetStream in the hub's
domain, and the same users and accounts on every node. --out writes one file
per node (<name>.conf); without it they are printed one after another.

The embedded server (jisr dev, jisr nats-server) also closes each client's
connection when its SVID expires, and takes a rotated trust bundle at the next
handshake. A stock nats-server run with this file checks a certificate only when
the client connects: an SVID that expires later keeps its connection open.`,
		Example: `  jisr nats-config > nats.conf && nats-server -c nats.conf
  jisr nats-config --cluster hub-1=nats-1.hub.example,hub-2=nats-2.hub.example,hub-3=nats-3.hub.example \
    --data /var/lib/jisr --out deploy/nats`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(nodes) == 0 {
				cfg, err := g.NATSConfig(o)
				if err != nil {
					return err
				}
				text, err := natsconf.Render(cfg)
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(cmd.OutOrStdout(), text)
				return err
			}
			texts, err := process.HubConfigs(g, o, nodes, clusterPort)
			if err != nil {
				return err
			}
			for _, n := range texts {
				if outDir != "" {
					if err := os.MkdirAll(outDir, 0o755); err != nil {
						return err
					}
					p := filepath.Join(outDir, n.Name+".conf")
					if err := os.WriteFile(p, []byte(n.Text), 0o644); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), p)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "# ==== %s.conf ====\n%s\n", n.Name, n.Text)
			}
			return nil
		},
	}
	natsFlags(cmd, &o)
	cmd.Flags().StringSliceVar(&nodes, "cluster", nil, "render every node of a hub: name=host,… (host: the name or address the other nodes and the clients reach it by)")
	cmd.Flags().IntVar(&clusterPort, "cluster-port", 6222, "route port of every hub node (with --cluster)")
	cmd.Flags().StringVar(&outDir, "out", "", "write <name>.conf per hub node into this directory (with --cluster)")
	return cmd
}

func newNATSServerCmd(g *process.Env) *cobra.Command {
	var o process.NATSOptions
	var httpAddr string
	var fastFailover bool
	var governancePub string
	cmd := &cobra.Command{
		Use:   "nats-server",
		Short: "Run the federation's NATS server (embedded nats-server, JetStream under --data)",
		Long: `Run the federation's NATS server: an embedded nats-server with the
configuration jisr nats-config prints, JetStream under --data.

It follows the signed federation versions (jisr federation publish) without a
restart: with its own SVID it reads the federation bucket, and puts each newer
version whose signature verifies with the governance key in force — the new
users and permissions, for later connections and for those already open (a
connection whose identity left, or that holds a subscription the new
permissions no longer allow, is closed; its client reconnects under them).
Until jisr nats init has created the bucket it tries again every 2 s.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fastFailover {
				was := natsserver.FastFailover()
				g.Log.Info("Raft timers set for fast failover", "now", natsserver.RaftTimers(), "was", was)
			}
			s, err := process.StartNATS(cmd.Context(), g, o)
			if err != nil {
				return err
			}
			// New signed federation versions, without a restart.
			stopWatch := process.WatchFederation(cmd.Context(), g, s, governancePub)
			stopMetrics, err := g.ServeMetrics(httpAddr, "nats-server")
			if err != nil {
				stopWatch()
				s.Shutdown()
				return err
			}
			defer stopMetrics(context.WithoutCancel(cmd.Context()))
			<-cmd.Context().Done()
			g.Log.Info("shutting down NATS")
			stopWatch()
			s.Shutdown()
			return nil
		},
	}
	natsFlags(cmd, &o)
	cmd.Flags().StringVar(&httpAddr, "http", "", "HTTP listen address for /metrics (the server's own SVID expiry among them) and /healthz (default: none)")
	cmd.Flags().BoolVar(&fastFailover, "fast-failover", false, "hub node: Raft heartbeats every 0.5 s and elections after 1.5–3.5 s without one (nats-server: 1 s, 4–9 s), so a stream whose leader's node dies has a new leader within about 4 s (see docs/deploy.md)")
	cmd.Flags().StringVar(&governancePub, "governance-pub", "", "the governance public key that verifies the signed federation versions the server applies without a restart (default <certs>/governance/governance.pub; without it the federation file stays in force until a restart)")
	return cmd
}
