package main

import (
	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/cmd/internal/process"
)

func newStatusCmd(g *process.Env) *cobra.Command {
	var monitors []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "The hub's health as the operator sees it: nodes, stream replicas and lag, gateway replicas, members, SVID expiry",
		Long: `Connect to --nats as the operator (spiffe://<td>/operator) and report the hub's
health:

  nodes            each node's routes, connections, version and uptime, from its
                   monitoring endpoint (--monitor, one per node: the operations
                   network only, never a ministry's)
  streams          every stream and bucket of the federation: replicas, leader,
                   each follower current or behind and its lag (JetStream API)
  gateway replicas the connections of spiffe://<td>/gateway, by instance and node
  members          the nodes each member's adapter is connected to, and when its
                   SVID expires: the SVID its connections presented, as each node
                   reports it (/jisr/svidz on the monitoring port; also under
                   SPIRE), else its file under --certs

It uses the JetStream API, which only the operator may call on every stream,
and the servers' monitoring endpoints; not the system account, which no jisr
identity holds. It exits non-zero when something is wrong, naming it.`,
		Example: `  jisr status --nats tls://n1:4222,tls://n2:4222,tls://n3:4222 --monitor http://n1:8222,http://n2:8222,http://n3:8222
  jisr status --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := process.HubStatus(cmd.Context(), g, monitors)
			if err != nil {
				return err
			}
			return process.PrintStatus(cmd.OutOrStdout(), st, asJSON)
		},
	}
	cmd.Flags().StringSliceVar(&monitors, "monitor", nil, "monitoring URL of every hub node (http://host:8222,…)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}
